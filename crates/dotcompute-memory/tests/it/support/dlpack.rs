//! A DLPack producer for the import tests: a boxed managed tensor (versioned or legacy) over
//! memory of its own, every field settable, whose deleter counts its runs.

use dotcompute_memory::dlpack::{KDL_CPU, KDL_FLOAT};
use dotcompute_memory::*;
use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What the producer puts in its tensor.
#[derive(Clone, Debug)]
pub struct Spec {
    pub dtype: DLDataType,
    pub shape: Vec<i64>,
    /// `None`: a null strides pointer.
    pub strides: Option<Vec<i64>>,
    pub byte_offset: u64,
    pub device: DLDevice,
    pub flags: u64,
    pub version: DLPackVersion,
    /// A null `data` pointer instead of the producer's memory.
    pub null_data: bool,
    /// A null shape pointer (with the shape's length as `ndim`).
    pub null_shape: bool,
    /// `ndim` instead of the shape's length.
    pub ndim: Option<i32>,
}

impl Spec {
    /// A compact 1-D `f32` CPU tensor of `len` elements with strides `[1]`, version 1.1.
    pub fn f32(len: i64) -> Spec {
        Spec {
            dtype: DLDataType { code: KDL_FLOAT, bits: 32, lanes: 1 },
            shape: vec![len],
            strides: Some(vec![1]),
            byte_offset: 0,
            device: DLDevice { device_type: KDL_CPU, device_id: 0 },
            flags: 0,
            version: DLPackVersion { major: 1, minor: 1 },
            null_data: false,
            null_shape: false,
            ndim: None,
        }
    }
}

/// The producer's side of one tensor: what its deleter frees.
struct Owned {
    /// 8-byte aligned storage; the tensor starts `byte_offset` bytes in.
    words: Vec<u64>,
    shape: Vec<i64>,
    strides: Vec<i64>,
    deleted: Arc<AtomicUsize>,
}

/// A versioned tensor as a producer hands it out.
#[repr(C)]
struct Versioned {
    managed: DLManagedTensorVersioned,
    owned: Owned,
}

/// A legacy tensor as a producer hands it out.
#[repr(C)]
struct Legacy {
    managed: DLManagedTensor,
    owned: Owned,
}

unsafe extern "C" fn delete_versioned(managed: *mut DLManagedTensorVersioned) {
    // SAFETY: made by `produce`, whose box the context is; the deleter runs once.
    let tensor = unsafe { Box::from_raw((*managed).manager_ctx.cast::<Versioned>()) };
    tensor.owned.deleted.fetch_add(1, Ordering::SeqCst);
}

unsafe extern "C" fn delete_legacy(managed: *mut DLManagedTensor) {
    // SAFETY: made by `produce_legacy`, whose box the context is; the deleter runs once.
    let tensor = unsafe { Box::from_raw((*managed).manager_ctx.cast::<Legacy>()) };
    tensor.owned.deleted.fetch_add(1, Ordering::SeqCst);
}

/// A produced tensor: its pointer, and its deleter's run count.
pub struct Produced<M> {
    pub managed: *mut M,
    pub deleted: Arc<AtomicUsize>,
    /// Where the producer's memory starts (before `byte_offset`).
    pub base: *mut u8,
}

impl<M> Produced<M> {
    /// Times the deleter ran.
    pub fn deletions(&self) -> usize {
        self.deleted.load(Ordering::SeqCst)
    }
}

impl Produced<DLManagedTensorVersioned> {
    /// Runs the deleter of a tensor nothing consumed, as its owner must.
    pub fn give_back(&self) {
        // SAFETY: a live tensor from `produce` that no import took.
        unsafe { ((*self.managed).deleter.unwrap())(self.managed) }
    }
}

impl Produced<DLManagedTensor> {
    /// Runs the deleter of a tensor nothing consumed, as its owner must.
    pub fn give_back(&self) {
        // SAFETY: a live tensor from `produce_legacy` that no import took.
        unsafe { ((*self.managed).deleter.unwrap())(self.managed) }
    }
}

fn owned(bytes: &[u8], spec: &Spec) -> (Owned, Arc<AtomicUsize>) {
    let deleted = Arc::new(AtomicUsize::new(0));
    let mut words = vec![0u64; (spec.byte_offset as usize + bytes.len()).div_ceil(8).max(1)];
    let storage: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
    storage[spec.byte_offset as usize..][..bytes.len()].copy_from_slice(bytes);
    let owned = Owned {
        words,
        shape: spec.shape.clone(),
        strides: spec.strides.clone().unwrap_or_default(),
        deleted: deleted.clone(),
    };
    (owned, deleted)
}

fn tensor(spec: &Spec) -> DLTensor {
    DLTensor {
        data: std::ptr::null_mut(),
        device: spec.device,
        ndim: spec.ndim.unwrap_or(spec.shape.len() as i32),
        dtype: spec.dtype,
        shape: std::ptr::null_mut(),
        strides: std::ptr::null_mut(),
        byte_offset: spec.byte_offset,
    }
}

/// Points the tensor's fields at the producer's memory.
///
/// # Safety
///
/// `tensor` and `owned` are fields of one live box, reached through raw pointers only.
unsafe fn wire(tensor: *mut DLTensor, owned: *mut Owned, spec: &Spec) -> *mut u8 {
    // SAFETY: the contract.
    unsafe {
        let base = (*owned).words.as_mut_ptr().cast::<u8>();
        if !spec.null_data {
            (*tensor).data = base.cast::<c_void>();
        }
        if !spec.null_shape {
            (*tensor).shape = (*owned).shape.as_mut_ptr();
        }
        if spec.strides.is_some() {
            (*tensor).strides = (*owned).strides.as_mut_ptr();
        }
        base
    }
}

/// A versioned tensor over a copy of `bytes`, laid out as `spec` says.
pub fn produce(bytes: &[u8], spec: &Spec) -> Produced<DLManagedTensorVersioned> {
    let (owned, deleted) = owned(bytes, spec);
    let managed = DLManagedTensorVersioned {
        version: spec.version,
        manager_ctx: std::ptr::null_mut(),
        deleter: Some(delete_versioned),
        flags: spec.flags,
        dl_tensor: tensor(spec),
    };
    let p = Box::into_raw(Box::new(Versioned { managed, owned }));
    // SAFETY: `p` is live and only reached through raw pointers from here on.
    let base = unsafe {
        (*p).managed.manager_ctx = p.cast();
        wire(&raw mut (*p).managed.dl_tensor, &raw mut (*p).owned, spec)
    };
    // SAFETY: as above; the managed struct is the box's first field.
    Produced { managed: unsafe { &raw mut (*p).managed }, deleted, base }
}

/// A legacy tensor over a copy of `bytes`, laid out as `spec` says (version and flags unused).
pub fn produce_legacy(bytes: &[u8], spec: &Spec) -> Produced<DLManagedTensor> {
    let (owned, deleted) = owned(bytes, spec);
    let managed =
        DLManagedTensor { dl_tensor: tensor(spec), manager_ctx: std::ptr::null_mut(), deleter: Some(delete_legacy) };
    let p = Box::into_raw(Box::new(Legacy { managed, owned }));
    // SAFETY: `p` is live and only reached through raw pointers from here on.
    let base = unsafe {
        (*p).managed.manager_ctx = p.cast();
        wire(&raw mut (*p).managed.dl_tensor, &raw mut (*p).owned, spec)
    };
    // SAFETY: as above.
    Produced { managed: unsafe { &raw mut (*p).managed }, deleted, base }
}

/// The little-endian bytes of `values`.
pub fn bytes_of<T: Element>(values: &[T]) -> Vec<u8> {
    bytemuck::cast_slice(values).to_vec()
}
