//! CUDA virtual memory management for expandable segments: `cuMemAddressReserve` reserves a
//! range, `cuMemCreate` + `cuMemMap` + `cuMemSetAccess` back a part of it with device memory,
//! `cuMemUnmap` + `cuMemRelease` give that memory back, `cuMemAddressFree` ends the range.

use super::{driver, CudaBackend};
use crate::backend::DeviceMemory;
use crate::error::{Error, Result};
use cudarc::driver::sys;
use std::collections::BTreeMap;

/// One reserved range: its size, and the physical allocation mapped at each offset.
#[derive(Debug, Default)]
pub(super) struct Reservation {
    size: usize,
    chunks: BTreeMap<usize, (usize, sys::CUmemGenericAllocationHandle)>,
}

impl CudaBackend {
    /// Pinned device memory on this backend's device, as `cuMemCreate` and the granularity
    /// query take it.
    fn allocation_prop(&self) -> sys::CUmemAllocationProp {
        // SAFETY: a plain C struct of integers, enums whose 0 is a valid value, and a null
        // pointer; every field read by the driver is set below.
        let mut prop: sys::CUmemAllocationProp = unsafe { std::mem::zeroed() };
        prop.type_ = sys::CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED;
        prop.location.type_ = sys::CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE;
        prop.location.id = self.context.device;
        prop
    }

    /// The minimum mapping granularity the driver reports, or `None` where it has no virtual
    /// memory management (or the query fails).
    pub(super) fn mapping_granularity(&self) -> Option<usize> {
        let prop = self.allocation_prop();
        let mut granularity = 0usize;
        let _bound = self.context.bind().ok()?;
        // SAFETY: `prop` describes this device; `granularity` is a valid place for the answer.
        let r = unsafe {
            sys::cuMemGetAllocationGranularity(
                &mut granularity,
                &prop,
                sys::CUmemAllocationGranularity_flags::CU_MEM_ALLOC_GRANULARITY_MINIMUM,
            )
        };
        (r == sys::CUresult::CUDA_SUCCESS && granularity > 0).then_some(granularity)
    }

    pub(super) fn reserve_range(&self, size: usize) -> Result<DeviceMemory> {
        let granularity = self.mapping_granularity().ok_or(Error::Unsupported {
            operation: "CudaBackend::reserve_address_space",
            reason: "the driver reports no virtual memory management for this device",
        })?;
        let size = size.checked_next_multiple_of(granularity).ok_or(Error::LengthOverflow {
            len: size,
            element_size: 1,
            type_name: "u8 (rounded to the mapping granularity)",
        })?;
        let _bound = self.context.bind()?;
        let mut base: sys::CUdeviceptr = 0;
        // SAFETY: `base` is a valid place for the address; no fixed address is asked for.
        unsafe { sys::cuMemAddressReserve(&mut base, size, granularity, 0, 0) }
            .result()
            .map_err(|e| driver("cuMemAddressReserve", e))?;
        self.reservations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(base, Reservation { size, chunks: BTreeMap::new() });
        // SAFETY: `base` names the range just reserved, of `size` bytes, returned once.
        Ok(unsafe { DeviceMemory::from_raw(self.id, base, size) })
    }

    pub(super) fn map_range(&self, reservation: &DeviceMemory, offset: usize, len: usize) -> Result<()> {
        let at = self.device_ptr(reservation, offset, len)?;
        let mut reservations = self.reservations.lock().unwrap_or_else(|p| p.into_inner());
        let r = reservations.get_mut(&reservation.handle()).ok_or_else(|| not_reserved(reservation))?;
        let _bound = self.context.bind()?;
        let prop = self.allocation_prop();
        let mut handle: sys::CUmemGenericAllocationHandle = 0;
        // SAFETY: `prop` describes this device; `handle` is a valid place for the result.
        unsafe { sys::cuMemCreate(&mut handle, len, &prop, 0) }.result().map_err(|e| match e.0 {
            sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY => Error::allocator_out_of_memory("cuda", len as u64, 0),
            _ => driver("cuMemCreate", e),
        })?;
        // SAFETY: `at..at + len` lies inside our reservation (checked) and is not mapped (the
        // pool maps each granule once); `handle` is the allocation just made, of `len` bytes.
        let mapped = unsafe { sys::cuMemMap(at, len, 0, handle, 0) }.result().map_err(|e| driver("cuMemMap", e));
        let access = sys::CUmemAccessDesc {
            location: prop.location,
            flags: sys::CUmemAccess_flags::CU_MEM_ACCESS_FLAGS_PROT_READWRITE,
        };
        let r2 = mapped.and_then(|()| {
            // SAFETY: the range was just mapped; one access descriptor for this device.
            unsafe { sys::cuMemSetAccess(at, len, &access, 1) }.result().map_err(|e| driver("cuMemSetAccess", e))
        });
        if let Err(e) = r2 {
            // SAFETY: undoing what succeeded above on our own range and handle.
            unsafe {
                let _ = sys::cuMemUnmap(at, len);
                let _ = sys::cuMemRelease(handle);
            }
            return Err(e);
        }
        r.chunks.insert(offset, (len, handle));
        Ok(())
    }

    pub(super) fn unmap_range(&self, reservation: &DeviceMemory, offset: usize, len: usize) -> Result<()> {
        let at = self.device_ptr(reservation, offset, len)?;
        let mut reservations = self.reservations.lock().unwrap_or_else(|p| p.into_inner());
        let r = reservations.get_mut(&reservation.handle()).ok_or_else(|| not_reserved(reservation))?;
        match r.chunks.get(&offset) {
            Some(&(size, _)) if size == len => {}
            _ => {
                return Err(Error::InvalidArgument {
                    option: "mapping range",
                    value: format!("{offset}..{}", offset + len),
                    reason: "must be exactly a range mapped by one map_memory call",
                })
            }
        }
        let _bound = self.context.bind()?;
        self.synchronize_streams()?;
        let (_, handle) = r.chunks.remove(&offset).ok_or_else(|| not_reserved(reservation))?;
        // SAFETY: the range was mapped with `handle` and nothing queued uses it any more.
        unsafe { sys::cuMemUnmap(at, len) }.result().map_err(|e| driver("cuMemUnmap", e))?;
        // SAFETY: the handle's one mapping is gone; it is released once.
        unsafe { sys::cuMemRelease(handle) }.result().map_err(|e| driver("cuMemRelease", e))
    }

    /// For `free`: `Some` when `memory` is a reservation, which is then unmapped, released and
    /// freed.
    pub(super) fn free_reservation(&self, memory: &DeviceMemory) -> Option<Result<()>> {
        let r = self.reservations.lock().unwrap_or_else(|p| p.into_inner()).remove(&memory.handle())?;
        Some((|| {
            let _bound = self.context.bind()?;
            self.synchronize_streams()?;
            for (offset, (len, handle)) in r.chunks {
                // SAFETY: our mapping at `offset`, unused once the streams are idle.
                unsafe {
                    let _ = sys::cuMemUnmap(memory.handle() + offset as u64, len);
                    let _ = sys::cuMemRelease(handle);
                }
            }
            // SAFETY: the range we reserved, with nothing mapped in it any more.
            unsafe { sys::cuMemAddressFree(memory.handle(), r.size) }
                .result()
                .map_err(|e| driver("cuMemAddressFree", e))
        })())
    }
}

fn not_reserved(memory: &DeviceMemory) -> Error {
    Error::InvalidHandle { backend: "cuda", reason: format!("{:#x} is not a reserved address range", memory.handle()) }
}
