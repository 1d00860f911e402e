//! The physical frame allocator: 4 KiB frames from the free ranges, with the counters the
//! figures and the "deassign allocates nothing" checks read.
//!
//! One [`FreeBitmap`] per added range, sized when the range is added at boot; after that
//! neither allocating nor freeing touches the heap, so the frees inside deassign and destroy
//! cannot fail or allocate (design.md §4). Single frames are found next-fit from where the
//! last one was taken (boot takes table pages one after another: each is found in the
//! word the previous one came from); contiguous blocks by a run search.
use alloc::vec::Vec;

use lazaret_types::{FrameAllocator, PhysAddr, PAGE_SIZE};

use super::bitmap::FreeBitmap;
use super::ranges::Range;

/// Zeroes one frame; identity-mapped RAM in the kernel, a recorder in tests.
pub type Zeroer = fn(PhysAddr);

/// The frames of one added range.
struct Region {
    first_frame: u64,
    free: FreeBitmap,
    free_count: usize,
}

impl Region {
    fn index_of(&self, frame_number: u64) -> Option<usize> {
        let i = usize::try_from(frame_number.checked_sub(self.first_frame)?).ok()?;
        (i < self.free.len()).then_some(i)
    }

    fn address(&self, i: usize) -> PhysAddr {
        PhysAddr((self.first_frame + i as u64) * PAGE_SIZE)
    }

    fn overlaps(&self, first_frame: u64, frames: u64) -> bool {
        first_frame < self.first_frame + self.free.len() as u64
            && self.first_frame < first_frame + frames
    }
}

pub struct Frames {
    regions: Vec<Region>,
    /// Next-fit cursor: region index and bit where the next search starts.
    cursor: (usize, usize),
    zero: Zeroer,
    total: usize,
    in_use: usize,
    allocations: u64,
    refused_frees: u64,
    refused_pages: u64,
}

impl Frames {
    pub fn new(zero: Zeroer) -> Frames {
        Frames {
            regions: Vec::new(),
            cursor: (0, 0),
            zero,
            total: 0,
            in_use: 0,
            allocations: 0,
            refused_frees: 0,
            refused_pages: 0,
        }
    }

    /// Adds the whole pages of `range` (boot only: this allocates the range's bitmap). A
    /// range overlapping one already added, or whose bitmap the heap cannot hold, is
    /// refused, logged and counted in [`Frames::refused_pages`]: counting a frame twice
    /// would hand it out twice.
    pub fn add(&mut self, range: Range) {
        let r = range.pages_inside();
        if r.is_empty() {
            return;
        }
        let (first_frame, frames) = (r.start / PAGE_SIZE, r.len() / PAGE_SIZE);
        let bitmap = match usize::try_from(frames).ok().and_then(FreeBitmap::all_free) {
            Some(b) if !self.regions.iter().any(|g| g.overlaps(first_frame, frames)) => b,
            found => {
                let why = if found.is_some() {
                    "it overlaps RAM already added"
                } else {
                    "the heap cannot hold its bitmap"
                };
                log::warn!("frames: {:#x}-{:#x} not used: {why}", r.start, r.end);
                self.refused_pages += frames;
                return;
            }
        };
        if self.regions.try_reserve(1).is_err() {
            log::warn!(
                "frames: {:#x}-{:#x} not used: no heap for its record",
                r.start,
                r.end
            );
            self.refused_pages += frames;
            return;
        }
        self.total += bitmap.len();
        self.regions.push(Region {
            first_frame,
            free_count: bitmap.len(),
            free: bitmap,
        });
    }

    /// `pages` physically contiguous zeroed frames, aligned to the next power of two (AMD-Vi's
    /// device table is one contiguous block; natural alignment is what a buddy allocator
    /// gave it, and what Linux's page allocator gives it too).
    pub fn alloc_contiguous(&mut self, pages: usize) -> Option<PhysAddr> {
        if pages == 0 {
            return None;
        }
        let align = pages.checked_next_power_of_two()? as u64;
        let (r, start) = self
            .regions
            .iter()
            .enumerate()
            .filter(|(_, g)| g.free_count >= pages)
            .find_map(|(r, g)| Some((r, aligned_run(g, pages, align)?)))?;
        let region = &mut self.regions[r];
        for i in start..start + pages {
            region.free.take(i);
            (self.zero)(region.address(i));
        }
        region.free_count -= pages;
        self.in_use += pages;
        self.allocations += pages as u64;
        Some(region.address(start))
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Allocations made since boot: "frames allocated during X" is a difference of two reads.
    pub fn allocations(&self) -> u64 {
        self.allocations
    }

    /// Frees refused since boot: double frees and frames this allocator never held. Each is
    /// a bug elsewhere, logged when it happens; the frame's state is left as it was.
    pub fn refused_frees(&self) -> u64 {
        self.refused_frees
    }

    /// Pages of RAM left unused because [`Frames::add`] refused their range.
    pub fn refused_pages(&self) -> u64 {
        self.refused_pages
    }

    /// Whether `frame` is one of ours and currently handed out.
    pub fn is_allocated(&self, frame: PhysAddr) -> bool {
        self.find(frame)
            .is_some_and(|(r, i)| !self.regions[r].free.is_free(i))
    }

    /// The region and bit of a page-aligned frame this allocator holds.
    fn find(&self, frame: PhysAddr) -> Option<(usize, usize)> {
        if !frame.as_u64().is_multiple_of(PAGE_SIZE) {
            return None;
        }
        let number = frame.as_u64() / PAGE_SIZE;
        self.regions
            .iter()
            .enumerate()
            .find_map(|(r, g)| Some((r, g.index_of(number)?)))
    }

    /// Next-fit: from the cursor to the end of its region, the other regions in order, then
    /// the start of the cursor's region.
    fn next_free(&self) -> Option<(usize, usize)> {
        let n = self.regions.len();
        if n == 0 {
            return None;
        }
        let (cr, ci) = self.cursor;
        (0..=n).find_map(|k| {
            let r = (cr + k) % n;
            let region = &self.regions[r];
            let from = if k == 0 { ci } else { 0 };
            if region.free_count == 0 {
                return None;
            }
            Some((r, region.free.first_free_from(from)?))
        })
    }
}

/// The first `pages`-long free run in `region` starting on a physical frame number that is
/// a multiple of `align` frames.
fn aligned_run(region: &Region, pages: usize, align: u64) -> Option<usize> {
    let len = region.free.len();
    // Bit of the first frame number at or above the region's start that is aligned.
    let first = region.first_frame.checked_next_multiple_of(align)? - region.first_frame;
    let mut start = usize::try_from(first).ok()?;
    let align = usize::try_from(align).ok()?;
    while start.checked_add(pages)? <= len {
        match region.free.first_used_in(start, start + pages) {
            None => return Some(start),
            // No run can start at or below a used frame and cover it: skip past it.
            Some(used) => start += (used - start) / align * align + align,
        }
    }
    None
}

impl FrameAllocator for Frames {
    fn alloc_contiguous(&mut self, pages: usize) -> Option<PhysAddr> {
        Frames::alloc_contiguous(self, pages)
    }

    fn alloc_frame(&mut self) -> Option<PhysAddr> {
        let (r, i) = self.next_free()?;
        let region = &mut self.regions[r];
        region.free.take(i);
        region.free_count -= 1;
        let frame = region.address(i);
        self.cursor = (r, i + 1);
        (self.zero)(frame);
        self.in_use += 1;
        self.allocations += 1;
        Some(frame)
    }

    /// Never allocates: one bit set. A double free, or a frame that is not ours, is refused
    /// (logged and counted), never recorded as free: handing it out again would give two
    /// owners one frame.
    fn free_frame(&mut self, frame: PhysAddr) {
        let Some((r, i)) = self.find(frame) else {
            log::warn!("frames: refused to free {frame}: not a frame of this allocator");
            self.refused_frees += 1;
            return;
        };
        let region = &mut self.regions[r];
        if !region.free.give(i) {
            log::warn!("frames: refused to free {frame}: it is already free (double free)");
            self.refused_frees += 1;
            return;
        }
        region.free_count += 1;
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
    use std::cell::RefCell;
    use std::collections::BTreeSet;

    fn no_zero(_: PhysAddr) {}

    std::thread_local! {
        static ZEROED: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
    }

    fn record_zero(frame: PhysAddr) {
        ZEROED.with(|z| z.borrow_mut().push(frame.as_u64()));
    }

    const MIB: u64 = 1 << 20;

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
        assert_eq!(f.refused_frees(), 0);
    }

    #[test]
    fn an_allocator_with_no_ram_hands_out_nothing() {
        let mut f = Frames::new(no_zero);
        assert_eq!(f.alloc_frame(), None);
        assert_eq!(f.alloc_contiguous(1), None);
        f.add(Range::new(0x1001, 0x1fff)); // no whole page
        assert_eq!((f.total(), f.alloc_frame()), (0, None));
    }

    #[test]
    fn next_fit_moves_on_and_wraps_across_regions_to_reuse_freed_frames() {
        let mut f = Frames::new(no_zero);
        f.add(Range::new(0x10_0000, 0x10_2000));
        f.add(Range::new(0x20_0000, 0x20_2000));
        let a = f.alloc_frame().expect("frame");
        f.free_frame(a);
        let order: Vec<u64> = (0..4)
            .map(|_| f.alloc_frame().expect("frame").as_u64())
            .collect();
        assert_eq!(
            order,
            vec![0x10_1000, 0x20_0000, 0x20_1000, 0x10_0000],
            "the freed frame comes back only after the cursor wraps"
        );
        assert_eq!(f.alloc_frame(), None);
        f.free_frame(PhysAddr(0x20_0000));
        assert_eq!(f.alloc_frame(), Some(PhysAddr(0x20_0000)));
    }

    #[test]
    fn contiguous_blocks_are_aligned_zeroed_and_counted() {
        let mut f = Frames::new(record_zero);
        f.add(Range::new(0x10_0000, 0x20_0000));
        ZEROED.with(|z| z.borrow_mut().clear());
        let block = f.alloc_contiguous(4).expect("block");
        assert_eq!(block.as_u64() % (4 * PAGE_SIZE), 0);
        assert_eq!(f.frames_in_use(), 4);
        let expected: Vec<u64> = (0..4).map(|i| block.as_u64() + i * PAGE_SIZE).collect();
        assert_eq!(ZEROED.with(|z| z.borrow().clone()), expected);
        let single = f.alloc_frame().expect("frame").as_u64();
        assert!(single < block.as_u64() || single >= block.as_u64() + 4 * PAGE_SIZE);
    }

    #[test]
    fn contiguous_runs_skip_used_frames_and_keep_physical_alignment() {
        let mut f = Frames::new(no_zero);
        // Starts one page past a 4-page boundary: the first aligned start is 0x104000.
        f.add(Range::new(0x10_1000, 0x11_0000));
        f.free_frame(PhysAddr(0x10_5000)); // refused: not allocated
        let mut held = BTreeSet::new();
        while let Some(frame) = f.alloc_frame() {
            held.insert(frame.as_u64());
        }
        // Free everything but 0x106000: the 4-runs at 0x104000 is broken, 0x108000 is whole.
        for frame in held.iter().filter(|a| **a != 0x10_6000) {
            f.free_frame(PhysAddr(*frame));
        }
        assert_eq!(f.alloc_contiguous(4), Some(PhysAddr(0x10_8000)));
        assert_eq!(
            f.alloc_contiguous(3),
            Some(PhysAddr(0x10_c000)),
            "3 pages align to 4"
        );
        assert_eq!(f.alloc_contiguous(2), Some(PhysAddr(0x10_2000)));
        assert_eq!(f.alloc_contiguous(2), Some(PhysAddr(0x10_4000)));
        assert_eq!(f.alloc_contiguous(8), None, "no aligned 8-run left");
        assert_eq!(f.alloc_contiguous(0), None);
    }

    #[test]
    fn contiguous_fails_when_fragmented_though_enough_frames_are_free() {
        let mut f = Frames::new(no_zero);
        f.add(Range::new(0x10_0000, 0x10_8000));
        let all: Vec<PhysAddr> = (0..8).map(|_| f.alloc_frame().expect("frame")).collect();
        for frame in all.iter().step_by(2) {
            f.free_frame(*frame);
        }
        assert_eq!(f.frames_in_use(), 4);
        assert_eq!(f.alloc_contiguous(2), None);
        assert_eq!(f.frames_in_use(), 4, "a failed allocation takes nothing");
    }

    #[test]
    fn double_frees_and_foreign_frames_are_refused_and_change_nothing() {
        let mut f = Frames::new(no_zero);
        f.add(Range::new(0x10_0000, 0x10_2000));
        let a = f.alloc_frame().expect("frame");
        f.free_frame(a);
        f.free_frame(a); // double free
        f.free_frame(PhysAddr(0x30_0000)); // outside the map
        f.free_frame(PhysAddr(0x10_1000)); // ours, never allocated
        f.free_frame(PhysAddr(0x10_0010)); // not page-aligned
        assert_eq!(f.refused_frees(), 4);
        assert_eq!(f.frames_in_use(), 0);
        let b = f.alloc_frame().expect("frame");
        let c = f.alloc_frame().expect("frame");
        assert_ne!(b, c);
        assert_eq!(
            f.alloc_frame(),
            None,
            "the double free did not make a third frame"
        );
    }

    #[test]
    fn overlapping_ranges_are_refused() {
        let mut f = Frames::new(no_zero);
        f.add(Range::new(MIB, 2 * MIB));
        f.add(Range::new(2 * MIB - 0x1000, 3 * MIB));
        assert_eq!(f.total(), 256);
        assert_eq!(f.refused_pages(), 257);
        f.add(Range::new(2 * MIB, 3 * MIB));
        assert_eq!(f.total(), 512, "a neighbour is not an overlap");
    }

    #[test]
    fn a_large_map_is_cheap() {
        // 64 GiB above 4 GiB, as a big machine's map would give: 2 MiB of bitmap.
        let mut f = Frames::new(no_zero);
        f.add(Range::new(1 << 32, (1 << 32) + (64 << 30)));
        assert_eq!(f.total(), 16 << 20);
        for _ in 0..10_000 {
            f.alloc_frame().expect("frame");
        }
        assert_eq!(
            f.alloc_contiguous(512).map(|a| a.as_u64() % (2 * MIB)),
            Some(0)
        );
    }

    #[test]
    fn freeing_frames_makes_no_heap_allocation() {
        let mut f = Frames::new(no_zero);
        f.add(Range::new(MIB, 64 * MIB));
        f.add(Range::new(1 << 32, (1 << 32) + 64 * MIB));
        let held: Vec<PhysAddr> = (0..20_000)
            .map(|_| f.alloc_frame().expect("frame"))
            .collect();
        let block = f.alloc_contiguous(16).expect("block");
        let ((), n) = crate::mm::heap::counting::heap_allocations_during(|| {
            for frame in held.iter().rev().step_by(3).chain(held.iter().step_by(3)) {
                f.free_frame(*frame);
            }
            for i in 0..16 {
                f.free_frame(PhysAddr(block.as_u64() + i * PAGE_SIZE));
            }
            f.free_frame(block); // refused (double free): refusing does not allocate either
            f.free_frame(PhysAddr(0x10)); // refused (not ours)
        });
        assert_eq!(n, 0, "freeing frames allocated");
        assert_eq!(f.refused_frees(), 2);
        let ((), n) = crate::mm::heap::counting::heap_allocations_during(|| {
            f.alloc_frame().expect("frame");
            f.alloc_contiguous(8).expect("block");
        });
        assert_eq!(
            n, 0,
            "after boot, allocating frames does not touch the heap either"
        );
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        enum Op {
            Alloc,
            Contiguous(usize),
            /// Frees the n-th held frame (modulo), or a frame never handed out.
            Free(usize),
            FreeForeign(u64),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => Just(Op::Alloc),
                1 => (1usize..9).prop_map(Op::Contiguous),
                4 => any::<usize>().prop_map(Op::Free),
                1 => (0u64..0x40).prop_map(Op::FreeForeign),
            ]
        }

        const RANGES: [(u64, u64); 3] = [
            (0x10_3000, 0x10_9000),
            (0x20_0000, 0x20_5000),
            (0x40_0000, 0x40_0800),
        ];

        fn in_map(a: u64) -> bool {
            RANGES.iter().any(|(s, e)| (*s..*e).contains(&a))
        }

        proptest! {
            /// Against a set of held frames: every frame handed out is in the map, page-aligned
            /// and not already held; contiguous blocks are aligned runs; counters match.
            #[test]
            fn agrees_with_a_set_of_held_frames(ops in proptest::collection::vec(op(), 1..200)) {
                let mut f = Frames::new(no_zero);
                for (s, e) in RANGES {
                    f.add(Range::new(s, e));
                }
                prop_assert_eq!(f.total(), 6 + 5);
                let mut held: BTreeSet<u64> = BTreeSet::new();
                let mut refused = 0;
                for op in ops {
                    match op {
                        Op::Alloc => match f.alloc_frame() {
                            Some(a) => {
                                prop_assert!(in_map(a.as_u64()) && a.as_u64() % PAGE_SIZE == 0);
                                prop_assert!(held.insert(a.as_u64()), "{a} handed out twice");
                            }
                            None => prop_assert_eq!(held.len(), f.total(), "None while frames were free"),
                        },
                        Op::Contiguous(n) => {
                            if let Some(a) = f.alloc_contiguous(n) {
                                let align = n.next_power_of_two() as u64 * PAGE_SIZE;
                                prop_assert_eq!(a.as_u64() % align, 0);
                                for i in 0..n as u64 {
                                    let p = a.as_u64() + i * PAGE_SIZE;
                                    prop_assert!(in_map(p));
                                    prop_assert!(held.insert(p), "{:#x} handed out twice", p);
                                }
                            }
                        }
                        Op::Free(k) if !held.is_empty() => {
                            let a = *held.iter().nth(k % held.len()).expect("held");
                            held.remove(&a);
                            f.free_frame(PhysAddr(a));
                        }
                        Op::Free(_) => {}
                        Op::FreeForeign(page) => {
                            let a = 0x10_0000 + page * PAGE_SIZE;
                            if !held.contains(&a) {
                                f.free_frame(PhysAddr(a));
                                refused += 1;
                            }
                        }
                    }
                    prop_assert_eq!(f.frames_in_use(), held.len());
                    prop_assert_eq!(f.refused_frees(), refused);
                }
                for a in &held {
                    prop_assert!(f.is_allocated(PhysAddr(*a)));
                }
            }
        }
    }
}
