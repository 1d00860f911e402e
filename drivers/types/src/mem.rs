use crate::PhysAddr;

/// Host physical memory as table builders see it.
///
/// IOMMU tables live in ordinary RAM that hardware walks on its own, so every access is a
/// plain load or store at a physical address. In the kernel this is the direct map; in host
/// tests it is [`crate::sim::SimMemory`]. Methods take `&self`: like RAM shared with DMA
/// engines, the memory is shared state, and callers serialise through their own locks.
pub trait PhysMem {
    fn read_u64(&self, addr: PhysAddr) -> u64;
    fn write_u64(&self, addr: PhysAddr, value: u64);

    /// One atomic 16-byte store (`cmpxchg16b` on hardware): replaces the 128-bit value at
    /// `addr` (16-byte aligned) with `new` only if it still equals `current`. Returns the
    /// value found. IOMMU context entries and device-table entries change owner through this
    /// so that hardware never observes a half-written entry.
    fn compare_exchange_u128(&self, addr: PhysAddr, current: u128, new: u128)
        -> Result<u128, u128>;

    /// Fills `len` bytes from `addr` with zeros.
    fn zero(&self, addr: PhysAddr, len: u64);

    fn read_bytes(&self, addr: PhysAddr, buf: &mut [u8]);
    fn write_bytes(&self, addr: PhysAddr, data: &[u8]);

    fn read_u128(&self, addr: PhysAddr) -> u128 {
        let lo = self.read_u64(addr) as u128;
        let hi = self.read_u64(PhysAddr(addr.0 + 8)) as u128;
        lo | (hi << 64)
    }
}

/// Source of zeroed 4 KiB frames for IOMMU tables, scratch pages and guest memory.
pub trait FrameAllocator {
    /// A zeroed, page-aligned frame, or `None` when memory is exhausted.
    fn alloc_frame(&mut self) -> Option<PhysAddr>;
    /// Gives back a frame from [`FrameAllocator::alloc_frame`].
    fn free_frame(&mut self, frame: PhysAddr);
    /// Frames currently handed out: lets tests prove "deassign allocated nothing".
    fn frames_in_use(&self) -> usize;

    /// `pages` physically contiguous zeroed frames aligned to the next power of two, or
    /// `None` (always, for allocators that have no such blocks). Each frame of the block is
    /// given back on its own with [`FrameAllocator::free_frame`]. Guest RAM comes in 2 MiB
    /// blocks this way, so nested paging and the IOMMU can map it with 2 MiB pages.
    fn alloc_contiguous(&mut self, pages: usize) -> Option<PhysAddr> {
        let _ = pages;
        None
    }
}

/// A block of memory-mapped device registers (an IOMMU unit, a PCI BAR).
///
/// Offsets are relative to the block's base. Drivers are written against this trait so that
/// their logic runs against [`crate::sim::SimRegisters`] in host tests.
pub trait Mmio {
    fn read32(&self, offset: usize) -> u32;
    fn write32(&self, offset: usize, value: u32);
    fn read64(&self, offset: usize) -> u64;
    fn write64(&self, offset: usize, value: u64);
}
