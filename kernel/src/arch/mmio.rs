//! Real MMIO behind the `Mmio` seam that drivers are written against: volatile accesses to a
//! register block the kernel mapped uncached (paging::map_mmio). Out-of-range offsets read
//! all ones and drop writes instead of touching memory past the block.
use lazaret_types::{FrameAllocator, Mmio, PhysAddr};

use super::paging::{self, PagingError};

#[derive(Debug)]
pub struct MmioRegion {
    base: usize,
    len: usize,
}

impl MmioRegion {
    /// Maps `len` bytes at `phys` uncached.
    pub fn map(
        phys: PhysAddr,
        len: u64,
        alloc: &mut dyn FrameAllocator,
    ) -> Result<MmioRegion, PagingError> {
        let ptr = paging::map_mmio(phys, len, alloc)?;
        Ok(MmioRegion {
            base: ptr as usize,
            len: len as usize,
        })
    }

    fn in_range(&self, offset: usize, width: usize) -> bool {
        offset.is_multiple_of(width) && offset.checked_add(width).is_some_and(|end| end <= self.len)
    }
}

impl Mmio for MmioRegion {
    fn read32(&self, offset: usize) -> u32 {
        if !self.in_range(offset, 4) {
            return u32::MAX;
        }
        // SAFETY: the block is mapped uncached for `len` bytes (MmioRegion::map) and the
        // access is aligned and inside it.
        unsafe { ((self.base + offset) as *const u32).read_volatile() }
    }

    fn write32(&self, offset: usize, value: u32) {
        if self.in_range(offset, 4) {
            // SAFETY: as for read32.
            unsafe { ((self.base + offset) as *mut u32).write_volatile(value) }
        }
    }

    fn read64(&self, offset: usize) -> u64 {
        if !self.in_range(offset, 8) {
            return u64::MAX;
        }
        // SAFETY: as for read32.
        unsafe { ((self.base + offset) as *const u64).read_volatile() }
    }

    fn write64(&self, offset: usize, value: u64) {
        if self.in_range(offset, 8) {
            // SAFETY: as for read32.
            unsafe { ((self.base + offset) as *mut u64).write_volatile(value) }
        }
    }
}
