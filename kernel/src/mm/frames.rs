//! The physical frame allocator: 4 KiB frames from the free ranges, with the counters the
//! figures and the "deassign allocates nothing" checks read.
use buddy_system_allocator::FrameAllocator as Buddy;
use lazaret_types::{FrameAllocator, PhysAddr, PAGE_SIZE};

use super::ranges::Range;

/// Zeroes one frame; identity-mapped RAM in the kernel, a recorder in tests.
pub type Zeroer = fn(PhysAddr);

pub struct Frames {
    buddy: Buddy<32>,
    zero: Zeroer,
    total: usize,
    in_use: usize,
    allocations: u64,
}

impl Frames {
    pub fn new(zero: Zeroer) -> Frames {
        Frames {
            buddy: Buddy::new(),
            zero,
            total: 0,
            in_use: 0,
            allocations: 0,
        }
    }

    /// Adds the whole pages of `range`.
    pub fn add(&mut self, range: Range) {
        let r = range.pages_inside();
        if !r.is_empty() {
            self.buddy
                .add_frame((r.start / PAGE_SIZE) as usize, (r.end / PAGE_SIZE) as usize);
            self.total += (r.len() / PAGE_SIZE) as usize;
        }
    }

    /// `pages` physically contiguous zeroed frames, aligned to the next power of two (AMD-Vi's
    /// device table is one contiguous block).
    pub fn alloc_contiguous(&mut self, pages: usize) -> Option<PhysAddr> {
        let first = self.buddy.alloc(pages)?;
        for i in 0..pages {
            (self.zero)(PhysAddr((first + i) as u64 * PAGE_SIZE));
        }
        self.in_use += pages;
        self.allocations += pages as u64;
        Some(PhysAddr(first as u64 * PAGE_SIZE))
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Allocations made since boot: "frames allocated during X" is a difference of two reads.
    pub fn allocations(&self) -> u64 {
        self.allocations
    }
}

impl FrameAllocator for Frames {
    fn alloc_frame(&mut self) -> Option<PhysAddr> {
        let frame = PhysAddr(self.buddy.alloc(1)? as u64 * PAGE_SIZE);
        (self.zero)(frame);
        self.in_use += 1;
        self.allocations += 1;
        Some(frame)
    }

    fn free_frame(&mut self, frame: PhysAddr) {
        self.buddy.dealloc((frame.as_u64() / PAGE_SIZE) as usize, 1);
        self.in_use -= 1;
    }

    fn frames_in_use(&self) -> usize {
        self.in_use
    }
}

/// Zeroes a frame through the identity map.
pub fn zero_identity_mapped(frame: PhysAddr) {
    // SAFETY: the allocator only hands out free RAM frames, identity-mapped and owned by
    // nobody else until returned.
    unsafe { core::ptr::write_bytes(frame.as_u64() as *mut u8, 0, PAGE_SIZE as usize) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_zero(_: PhysAddr) {}

    #[test]
    fn hands_out_distinct_aligned_frames_and_counts_them() {
        let mut f = Frames::new(no_zero);
        f.add(Range::new(0x10_0800, 0x10_5000)); // 4 whole pages: 0x101000..0x105000
        assert_eq!(f.total(), 4);
        let mut got: Vec<u64> = (0..4)
            .map(|_| f.alloc_frame().expect("frame").as_u64())
            .collect();
        assert_eq!(f.alloc_frame(), None, "exhausted");
        got.sort();
        assert_eq!(got, vec![0x10_1000, 0x10_2000, 0x10_3000, 0x10_4000]);
        assert_eq!((f.frames_in_use(), f.allocations()), (4, 4));
        f.free_frame(PhysAddr(0x10_2000));
        assert_eq!(f.frames_in_use(), 3);
        assert_eq!(f.alloc_frame(), Some(PhysAddr(0x10_2000)));
    }

    #[test]
    fn contiguous_blocks_are_aligned_and_counted() {
        let mut f = Frames::new(no_zero);
        f.add(Range::new(0x10_0000, 0x20_0000));
        let block = f.alloc_contiguous(4).expect("block");
        assert_eq!(block.as_u64() % (4 * PAGE_SIZE), 0);
        assert_eq!(f.frames_in_use(), 4);
        let single = f.alloc_frame().expect("frame").as_u64();
        assert!(single < block.as_u64() || single >= block.as_u64() + 4 * PAGE_SIZE);
    }
}
