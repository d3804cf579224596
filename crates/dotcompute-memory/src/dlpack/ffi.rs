//! The DLPack ABI: the `#[repr(C)]` structs of `dlpack.h` (version 1.x), its constants, and the
//! element types' data types.
//!
//! The layouts are those of the C header, field for field; the tests at the bottom pin their
//! sizes and offsets on 64-bit targets.

use crate::element::{Element, TypeTag};
use std::ffi::c_void;

/// The DLPack version these tensors carry: 1.1. Its layout is the one of every 1.x release;
/// the minor version only adds enumeration values, none of which our tensors use.
pub const DLPACK_VERSION: DLPackVersion = DLPackVersion { major: 1, minor: 1 };

/// `DLPACK_FLAG_BITMASK_READ_ONLY`: the consumer must not write the memory.
pub const DLPACK_FLAG_BITMASK_READ_ONLY: u64 = 1 << 0;
/// `DLPACK_FLAG_BITMASK_IS_COPIED`: the tensor is a copy the consumer owns alone.
pub const DLPACK_FLAG_BITMASK_IS_COPIED: u64 = 1 << 1;

/// `kDLCPU`: host memory.
pub const KDL_CPU: i32 = 1;
/// `kDLCUDA`: CUDA device memory; `data` is a `CUdeviceptr`.
pub const KDL_CUDA: i32 = 2;
/// `kDLCUDAHost`: page-locked host memory from `cudaMallocHost`.
pub const KDL_CUDA_HOST: i32 = 3;
/// `kDLOpenCL`: OpenCL memory; `data` is the `cl_mem` and `byte_offset` the place in it.
pub const KDL_OPENCL: i32 = 4;
/// `kDLVulkan`.
pub const KDL_VULKAN: i32 = 7;
/// `kDLMetal`.
pub const KDL_METAL: i32 = 8;
/// `kDLROCM`: ROCm device memory.
pub const KDL_ROCM: i32 = 10;
/// `kDLROCMHost`: page-locked host memory from `hipMallocHost`.
pub const KDL_ROCM_HOST: i32 = 11;
/// `kDLCUDAManaged`: CUDA managed memory.
pub const KDL_CUDA_MANAGED: i32 = 13;

/// `kDLInt`: signed integer.
pub const KDL_INT: u8 = 0;
/// `kDLUInt`: unsigned integer.
pub const KDL_UINT: u8 = 1;
/// `kDLFloat`: IEEE floating point.
pub const KDL_FLOAT: u8 = 2;
/// `kDLBfloat`: bfloat16.
pub const KDL_BFLOAT: u8 = 4;
/// `kDLComplex`: complex number (two floats).
pub const KDL_COMPLEX: u8 = 5;
/// `kDLBool`: boolean (8 bits per element).
pub const KDL_BOOL: u8 = 6;

/// `DLPackVersion`: a tensor's ABI version. A consumer may read a tensor whose major version
/// it knows; within a major version the layout does not change.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DLPackVersion {
    /// Major version: the layout of [`DLManagedTensorVersioned`].
    pub major: u32,
    /// Minor version: enumeration values added.
    pub minor: u32,
}

/// `DLDevice`: where a tensor's memory is.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DLDevice {
    /// `DLDeviceType` ([`KDL_CPU`], [`KDL_CUDA`], [`KDL_OPENCL`], ...).
    pub device_type: i32,
    /// The device's index (0 for host memory).
    pub device_id: i32,
}

/// `DLDataType`: an element's type.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DLDataType {
    /// `DLDataTypeCode` ([`KDL_INT`], [`KDL_UINT`], [`KDL_FLOAT`], ...).
    pub code: u8,
    /// Bits per lane.
    pub bits: u8,
    /// Lanes (1 for scalars).
    pub lanes: u16,
}

/// `DLTensor`: the memory, shape, strides and type of a tensor; owns nothing.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct DLTensor {
    /// Host pointer, `CUdeviceptr` or `cl_mem`, per the device type.
    pub data: *mut c_void,
    /// Where the memory is.
    pub device: DLDevice,
    /// Number of dimensions.
    pub ndim: i32,
    /// The element type.
    pub dtype: DLDataType,
    /// `ndim` extents.
    pub shape: *mut i64,
    /// `ndim` strides, in elements (required since DLPack 1.2; null meant compact row-major).
    pub strides: *mut i64,
    /// Bytes from `data` to the first element.
    pub byte_offset: u64,
}

/// `DLManagedTensor`: the legacy (pre-1.0) managed tensor, without version or flags.
#[repr(C)]
#[derive(Debug)]
pub struct DLManagedTensor {
    /// The tensor.
    pub dl_tensor: DLTensor,
    /// The producer's context for the deleter.
    pub manager_ctx: *mut c_void,
    /// Called once by the consumer when it is done; frees the struct too. May be null.
    pub deleter: Option<unsafe extern "C" fn(*mut DLManagedTensor)>,
}

/// `DLManagedTensorVersioned`: the DLPack 1.x managed tensor.
#[repr(C)]
#[derive(Debug)]
pub struct DLManagedTensorVersioned {
    /// The ABI version.
    pub version: DLPackVersion,
    /// The producer's context for the deleter.
    pub manager_ctx: *mut c_void,
    /// Called once by the consumer when it is done; frees the struct too. May be null.
    pub deleter: Option<unsafe extern "C" fn(*mut DLManagedTensorVersioned)>,
    /// [`DLPACK_FLAG_BITMASK_READ_ONLY`], [`DLPACK_FLAG_BITMASK_IS_COPIED`].
    pub flags: u64,
    /// The tensor.
    pub dl_tensor: DLTensor,
}

/// The DLPack data type of a built-in element type (by its [`TypeTag`] and size; `usize` is an
/// unsigned integer of its width). `None` for user element types, which DLPack cannot name.
pub fn dtype_of<T: Element>() -> Option<DLDataType> {
    let bits = u8::try_from(std::mem::size_of::<T>() * 8).ok()?;
    let TypeTag { id, .. } = T::TYPE_TAG;
    let code = match id {
        1 | 3 | 5 | 7 | 11 | 13 => KDL_UINT,
        2 | 4 | 6 | 8 | 12 => KDL_INT,
        9 | 10 => KDL_FLOAT,
        _ => return None,
    };
    Some(DLDataType { code, bits, lanes: 1 })
}

/// A device type's name for messages, with its number: `kDLCUDA (2)`.
pub(crate) fn device_type_name(device_type: i32) -> String {
    let name = match device_type {
        KDL_CPU => "kDLCPU",
        KDL_CUDA => "kDLCUDA",
        KDL_CUDA_HOST => "kDLCUDAHost",
        KDL_OPENCL => "kDLOpenCL",
        KDL_VULKAN => "kDLVulkan",
        KDL_METAL => "kDLMetal",
        9 => "kDLVPI",
        KDL_ROCM => "kDLROCM",
        KDL_ROCM_HOST => "kDLROCMHost",
        12 => "kDLExtDev",
        KDL_CUDA_MANAGED => "kDLCUDAManaged",
        14 => "kDLOneAPI",
        15 => "kDLWebGPU",
        16 => "kDLHexagon",
        17 => "kDLMAIA",
        _ => "an unknown device type",
    };
    format!("{name} ({device_type})")
}

/// A data type for messages: `kDLFloat 64` (with `xN` for vector lanes).
pub(crate) fn dtype_name(dtype: DLDataType) -> String {
    let code = match dtype.code {
        KDL_INT => "kDLInt",
        KDL_UINT => "kDLUInt",
        KDL_FLOAT => "kDLFloat",
        3 => "kDLOpaqueHandle",
        KDL_BFLOAT => "kDLBfloat",
        KDL_COMPLEX => "kDLComplex",
        KDL_BOOL => "kDLBool",
        other => return format!("type code {other}, {} bits, {} lanes", dtype.bits, dtype.lanes),
    };
    if dtype.lanes == 1 {
        format!("{code} {}", dtype.bits)
    } else {
        format!("{code} {}x{}", dtype.bits, dtype.lanes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// The offsets of `dlpack.h` on a 64-bit target.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn layouts_match_the_c_header() {
        assert_eq!((size_of::<DLDevice>(), size_of::<DLDataType>()), (8, 4));
        assert_eq!(size_of::<DLTensor>(), 48);
        assert_eq!(
            [
                offset_of!(DLTensor, device),
                offset_of!(DLTensor, ndim),
                offset_of!(DLTensor, dtype),
                offset_of!(DLTensor, shape),
                offset_of!(DLTensor, strides),
                offset_of!(DLTensor, byte_offset)
            ],
            [8, 16, 20, 24, 32, 40]
        );
        assert_eq!(size_of::<DLManagedTensor>(), 64);
        assert_eq!((offset_of!(DLManagedTensor, manager_ctx), offset_of!(DLManagedTensor, deleter)), (48, 56));
        assert_eq!(size_of::<DLManagedTensorVersioned>(), 80);
        assert_eq!(
            [
                offset_of!(DLManagedTensorVersioned, manager_ctx),
                offset_of!(DLManagedTensorVersioned, deleter),
                offset_of!(DLManagedTensorVersioned, flags),
                offset_of!(DLManagedTensorVersioned, dl_tensor)
            ],
            [8, 16, 24, 32]
        );
    }

    #[test]
    fn built_in_element_types_have_their_dlpack_types() {
        let dt = |code, bits| Some(DLDataType { code, bits, lanes: 1 });
        assert_eq!(dtype_of::<f32>(), dt(KDL_FLOAT, 32));
        assert_eq!(dtype_of::<f64>(), dt(KDL_FLOAT, 64));
        assert_eq!(dtype_of::<i32>(), dt(KDL_INT, 32));
        assert_eq!(dtype_of::<u8>(), dt(KDL_UINT, 8));
        assert_eq!(dtype_of::<i8>(), dt(KDL_INT, 8));
        assert_eq!(dtype_of::<u16>(), dt(KDL_UINT, 16));
        assert_eq!(dtype_of::<i64>(), dt(KDL_INT, 64));
        assert_eq!(dtype_of::<u128>(), dt(KDL_UINT, 128));
        assert_eq!(dtype_of::<usize>(), dt(KDL_UINT, usize::BITS as u8));
    }

    #[test]
    fn user_element_types_have_none() {
        #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
        #[repr(C)]
        struct Pair(f32, f32);
        impl Element for Pair {
            const TYPE_TAG: TypeTag = TypeTag { id: 1024, name: "Pair" };
        }
        assert_eq!(dtype_of::<Pair>(), None);
    }

    #[test]
    fn names_carry_the_numbers() {
        assert_eq!(device_type_name(KDL_CUDA), "kDLCUDA (2)");
        assert_eq!(device_type_name(99), "an unknown device type (99)");
        assert_eq!(dtype_name(DLDataType { code: KDL_FLOAT, bits: 64, lanes: 1 }), "kDLFloat 64");
        assert_eq!(dtype_name(DLDataType { code: KDL_FLOAT, bits: 32, lanes: 4 }), "kDLFloat 32x4");
    }
}
