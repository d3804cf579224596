//! The CPU backend: host memory is device memory.
//!
//! Unified and zero-copy: buffers on this backend keep one allocation, every host/device
//! synchronisation is a no-op, and "device" copies are plain `memcpy`s. It is the embedded
//! default (`MemoryManager::cpu()`).

use super::{Backend, BackendId, DeviceMemory, MemoryInfo};
use crate::error::{Error, Result};
use crate::host::{AddressReservation, HostBlock};
use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::Mutex;

/// Host memory presented as a unified device.
///
/// ```
/// use dotcompute_memory::{BufferState, CpuBackend, ManagerOptions, MemoryManager};
///
/// # fn main() -> dotcompute_memory::Result<()> {
/// let mm = MemoryManager::with_backend(CpuBackend::new(), ManagerOptions::default())?;
/// let mut buf = mm.allocate_from(&[1u32, 2, 3])?;
/// buf.ensure_on_device()?; // unified memory: nothing is copied
/// assert_eq!(buf.state(), BufferState::Synchronized);
/// assert_eq!(mm.statistics().host_to_device.count, 0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct CpuBackend {
    id: BackendId,
    /// Live allocations by address; only `allocate` and `free` touch it.
    blocks: Mutex<HashMap<u64, HostBlock>>,
    /// Reserved address ranges by address (`reserve_address_space`), committed piece by piece.
    reservations: Mutex<HashMap<u64, AddressReservation>>,
}

impl Default for CpuBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuBackend {
    /// A new CPU backend.
    pub fn new() -> Self {
        CpuBackend {
            id: BackendId::next(),
            blocks: Mutex::new(HashMap::new()),
            reservations: Mutex::new(HashMap::new()),
        }
    }

    fn ptr(&self, memory: &DeviceMemory, offset: usize, len: usize) -> Result<*mut u8> {
        memory.check(self, offset, len)?;
        // The handle is the block's address; the range was checked against its size.
        Ok(std::ptr::with_exposed_provenance_mut::<u8>(memory.handle() as usize + offset))
    }
}

/// Bytes committed at a time in reserved address space.
const VM_GRANULARITY: usize = 2 << 20;

fn not_reserved(memory: &DeviceMemory) -> Error {
    Error::InvalidHandle { backend: "cpu", reason: format!("{:#x} is not a reserved address range", memory.handle()) }
}

/// A `/proc/meminfo` field in bytes; `u64::MAX` ("unknown") where there is no such file.
fn meminfo(field: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with(field))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(u64::MAX)
}

fn system_memory() -> u64 {
    meminfo("MemTotal:")
}

fn available_memory() -> u64 {
    meminfo("MemAvailable:")
}

// SAFETY: allocations are tracked per instance and checked on every call; `host_ptr` and
// events follow the trait's contract (see the module docs and each method).
unsafe impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn id(&self) -> BackendId {
        self.id
    }

    fn device_label(&self) -> String {
        "cpu".to_string()
    }

    fn description(&self) -> String {
        format!("host memory ({:.1} GiB), unified, zero-copy", system_memory() as f64 / (1u64 << 30) as f64)
    }

    fn is_unified(&self) -> bool {
        true
    }

    fn memory_info(&self) -> MemoryInfo {
        MemoryInfo { total: system_memory(), free: available_memory(), max_allocation: isize::MAX as u64 }
    }

    fn allocate(&self, size: usize, align: usize) -> Result<DeviceMemory> {
        let block = HostBlock::allocate_zeroed(size.max(1), align).map_err(|e| match e {
            Error::OutOfMemory { requested, .. } => {
                Error::allocator_out_of_memory("cpu", requested, available_memory())
            }
            other => other,
        })?;
        let handle = block.as_ptr().expose_provenance() as u64;
        self.blocks.lock().unwrap_or_else(|p| p.into_inner()).insert(handle, block);
        // SAFETY: `handle` is the address of the live block just stored, of `size` or more
        // bytes; it is returned once, so this DeviceMemory is its only owner.
        Ok(unsafe { DeviceMemory::from_raw(self.id, handle, size) })
    }

    fn free(&self, memory: DeviceMemory) -> Result<()> {
        memory.check(self, 0, 0)?;
        let removed = self.blocks.lock().unwrap_or_else(|p| p.into_inner()).remove(&memory.handle());
        let reservation = || self.reservations.lock().unwrap_or_else(|p| p.into_inner()).remove(&memory.handle());
        match removed {
            Some(_block) => Ok(()),
            None if reservation().is_some() => Ok(()),
            None => Err(Error::InvalidHandle {
                backend: "cpu",
                reason: format!("no live allocation at {:#x}", memory.handle()),
            }),
        }
    }

    /// Pages are committed 2 MiB at a time (a huge page's worth).
    fn virtual_memory_granularity(&self) -> Option<usize> {
        Some(VM_GRANULARITY)
    }

    fn reserve_address_space(&self, size: usize) -> Result<DeviceMemory> {
        let size = size.checked_next_multiple_of(VM_GRANULARITY).ok_or(Error::LengthOverflow {
            len: size,
            element_size: 1,
            type_name: "u8 (rounded to the 2 MiB granularity)",
        })?;
        let reservation = AddressReservation::new(size)?;
        let handle = reservation.base().as_ptr().expose_provenance() as u64;
        self.reservations.lock().unwrap_or_else(|p| p.into_inner()).insert(handle, reservation);
        // SAFETY: `handle` is the address of the reservation just stored, of `size` bytes; it is
        // returned once, so this DeviceMemory is its only owner.
        Ok(unsafe { DeviceMemory::from_raw(self.id, handle, size) })
    }

    fn map_memory(&self, reservation: &DeviceMemory, offset: usize, len: usize) -> Result<()> {
        reservation.check(self, offset, len)?;
        let reservations = self.reservations.lock().unwrap_or_else(|p| p.into_inner());
        let r = reservations.get(&reservation.handle()).ok_or_else(|| not_reserved(reservation))?;
        r.commit(offset, len)
    }

    fn unmap_memory(&self, reservation: &DeviceMemory, offset: usize, len: usize) -> Result<()> {
        reservation.check(self, offset, len)?;
        let reservations = self.reservations.lock().unwrap_or_else(|p| p.into_inner());
        let r = reservations.get(&reservation.handle()).ok_or_else(|| not_reserved(reservation))?;
        r.decommit(offset, len)
    }

    fn allocate_pinned(&self, size: usize) -> Result<Box<dyn super::PinnedHost>> {
        // Page-locked with mlock; over RLIMIT_MEMLOCK this is Error::MemoryLockLimit.
        Ok(Box::new(crate::host::pinned::PinnedBuffer::<u8>::new(size)?))
    }

    fn host_ptr(&self, memory: &DeviceMemory) -> Option<NonNull<u8>> {
        if memory.owner() != self.id {
            return None;
        }
        NonNull::new(std::ptr::with_exposed_provenance_mut::<u8>(memory.handle() as usize))
    }

    fn write(&self, dst: &DeviceMemory, dst_offset: usize, src: &[u8]) -> Result<()> {
        let p = self.ptr(dst, dst_offset, src.len())?;
        // SAFETY: `p..p+len` lies inside a live allocation of this backend (checked; the
        // borrowed handle keeps it from being freed). `src` is a Rust slice, so it cannot
        // alias memory we hand out mutably elsewhere while borrowed.
        unsafe { std::ptr::copy(src.as_ptr(), p, src.len()) };
        Ok(())
    }

    fn read(&self, src: &DeviceMemory, src_offset: usize, dst: &mut [u8]) -> Result<()> {
        let p = self.ptr(src, src_offset, dst.len())?;
        // SAFETY: as in `write`, with roles reversed.
        unsafe { std::ptr::copy(p, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    fn copy(
        &self,
        src: &DeviceMemory,
        src_offset: usize,
        dst: &DeviceMemory,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        let s = self.ptr(src, src_offset, len)?;
        let d = self.ptr(dst, dst_offset, len)?;
        // SAFETY: both ranges lie inside live allocations (checked); `copy` allows overlap.
        unsafe { std::ptr::copy(s, d, len) };
        Ok(())
    }

    fn fill(&self, dst: &DeviceMemory, offset: usize, len: usize, value: u8) -> Result<()> {
        let d = self.ptr(dst, offset, len)?;
        // SAFETY: the range lies inside a live allocation (checked).
        unsafe { std::ptr::write_bytes(d, value, len) };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_handle_checks() {
        let cpu = CpuBackend::new();
        let a = cpu.allocate(64, 64).unwrap();
        let b = cpu.allocate(64, 64).unwrap();
        cpu.write(&a, 8, &[1, 2, 3]).unwrap();
        cpu.copy(&a, 8, &b, 0, 3).unwrap();
        let mut out = [0u8; 3];
        cpu.read(&b, 0, &mut out).unwrap();
        assert_eq!(out, [1, 2, 3]);
        assert!(matches!(cpu.write(&a, 62, &[1, 2, 3]), Err(Error::OutOfRange { start: 62, end: 65, len: 64 })));
        let other = CpuBackend::new();
        assert!(matches!(other.read(&a, 0, &mut out), Err(Error::InvalidHandle { .. })));
        assert!(other.host_ptr(&a).is_none());
        cpu.free(a).unwrap();
        cpu.free(b).unwrap();
        assert!(cpu.blocks.lock().unwrap().is_empty());
    }
}
