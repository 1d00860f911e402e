//! A guest's memory map: runs of guest-physical pages, each backed by host-contiguous frames.
//! The one source of truth for everything that translates the guest's addresses — its IOMMU
//! tables (IOVA = gpa), its nested page tables and its own page tables (design.md §10).
//!
//! RAM comes in 2 MiB-aligned 2 MiB blocks where the frame allocator has them, so both the
//! IOMMU and nested paging can use 2 MiB pages; the rest in 4 KiB frames. Neighbouring frames
//! are merged into one run, whichever way they came.
use alloc::vec::Vec;

use lazaret_types::{FrameAllocator, PhysAddr, PhysMem, PAGE_SIZE};

use crate::passthrough::iommu::PageSize;

/// Pages in one 2 MiB block.
pub const LARGE_PAGES: usize = 512;

/// `pages` guest pages from `gpa`, backed by the host frames from `hpa` on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub gpa: u64,
    pub hpa: PhysAddr,
    pub pages: u64,
}

impl Run {
    pub const fn len(&self) -> u64 {
        self.pages * PAGE_SIZE
    }

    pub const fn is_empty(&self) -> bool {
        self.pages == 0
    }

    pub const fn gpa_end(&self) -> u64 {
        self.gpa + self.len()
    }

    /// The host frames of the run, in gpa order.
    pub fn frames(&self) -> impl Iterator<Item = PhysAddr> {
        let hpa = self.hpa.0;
        (0..self.pages).map(move |i| PhysAddr(hpa + i * PAGE_SIZE))
    }

    /// The run cut into the largest pages alignment allows: (gpa, hpa, size).
    pub fn pages_by_size(&self) -> impl Iterator<Item = (u64, PhysAddr, PageSize)> {
        let (gpa, hpa, len) = (self.gpa, self.hpa.0, self.len());
        let mut offset = 0;
        core::iter::from_fn(move || {
            if offset >= len {
                return None;
            }
            let size = PageSize::largest(gpa + offset, hpa + offset, len - offset);
            let page = (gpa + offset, PhysAddr(hpa + offset), size);
            offset += size.bytes();
            Some(page)
        })
    }
}

/// Guest-physical memory from gpa 0 up, in runs sorted by gpa and without holes.
#[derive(Debug, Default)]
pub struct GuestMemory {
    runs: Vec<Run>,
}

impl GuestMemory {
    /// `pages` pages of RAM: 2 MiB blocks while at least 512 pages remain and `alloc` has
    /// them, then 4 KiB frames. On failure every frame taken is given back.
    pub fn allocate(alloc: &mut dyn FrameAllocator, pages: usize) -> Option<GuestMemory> {
        let mut memory = GuestMemory::default();
        let mut left = pages;
        let mut large = true;
        while left > 0 {
            let block = if large && left >= LARGE_PAGES {
                let b = alloc.alloc_contiguous(LARGE_PAGES);
                large = b.is_some();
                b.map(|hpa| (hpa, LARGE_PAGES))
            } else {
                None
            };
            let block = block.or_else(|| alloc.alloc_frame().map(|hpa| (hpa, 1)));
            let pushed = block.filter(|(hpa, n)| memory.push(*hpa, *n as u64));
            let Some((_, n)) = pushed else {
                if let Some((hpa, n)) = block {
                    // Allocated, but no heap to record it.
                    Run {
                        gpa: 0,
                        hpa,
                        pages: n as u64,
                    }
                    .frames()
                    .for_each(|f| alloc.free_frame(f));
                }
                memory.free(alloc);
                return None;
            };
            left -= n;
        }
        Some(memory)
    }

    /// A map from runs that follow each other from gpa 0 without holes (tests and figures;
    /// [`GuestMemory::allocate`] is how a guest gets memory). `None` if they do not.
    pub fn from_runs(runs: Vec<Run>) -> Option<GuestMemory> {
        let mut gpa = 0;
        for r in &runs {
            if r.gpa != gpa || r.is_empty() || !r.hpa.is_page_aligned() {
                return None;
            }
            gpa = r.gpa.checked_add(r.len())?;
        }
        Some(GuestMemory { runs })
    }

    /// Every page the IOMMU maps for this memory, the largest alignment allows: (gpa, hpa, size).
    pub fn iommu_pages(&self) -> impl Iterator<Item = (u64, PhysAddr, PageSize)> + '_ {
        self.runs.iter().flat_map(Run::pages_by_size)
    }

    /// Appends `pages` frames from `hpa` at the end of the map, merged into the last run when
    /// they continue it. `false` when the heap has no room for a new run.
    fn push(&mut self, hpa: PhysAddr, pages: u64) -> bool {
        let gpa = self.size();
        if let Some(last) = self.runs.last_mut() {
            if last.hpa.0 + last.len() == hpa.0 {
                last.pages += pages;
                return true;
            }
        }
        if self.runs.try_reserve(1).is_err() {
            return false;
        }
        self.runs.push(Run { gpa, hpa, pages });
        true
    }

    pub fn runs(&self) -> &[Run] {
        &self.runs
    }

    pub fn size(&self) -> u64 {
        self.runs.last().map_or(0, Run::gpa_end)
    }

    /// The host address backing guest-physical `gpa`.
    pub fn host_address(&self, gpa: u64) -> Option<PhysAddr> {
        let i = self.runs.partition_point(|r| r.gpa_end() <= gpa);
        let run = self.runs.get(i).filter(|r| r.gpa <= gpa)?;
        Some(PhysAddr(run.hpa.0 + (gpa - run.gpa)))
    }

    /// Every host frame, in gpa order (allocates: for tests and reports, not destroy).
    pub fn frames(&self) -> Vec<PhysAddr> {
        self.runs.iter().flat_map(Run::frames).collect()
    }

    /// Zeroes every byte (before the frames go back: the next owner must not read them).
    pub fn scrub(&self, mem: &(impl PhysMem + ?Sized)) {
        for r in &self.runs {
            mem.zero(r.hpa, r.len());
        }
    }

    /// Gives every frame back and leaves the map empty. Never allocates.
    pub fn free(&mut self, alloc: &mut (impl FrameAllocator + ?Sized)) {
        for r in core::mem::take(&mut self.runs) {
            r.frames().for_each(|f| alloc.free_frame(f));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lazaret_types::sim::{SimFrameAllocator, SimMemory};

    /// A simulated allocator that also has 2 MiB blocks (from its own aligned window).
    struct Blocks<'m> {
        small: SimFrameAllocator<'m>,
        next_block: u64,
        blocks_left: usize,
        freed: Vec<PhysAddr>,
    }

    impl FrameAllocator for Blocks<'_> {
        fn alloc_frame(&mut self) -> Option<PhysAddr> {
            self.small.alloc_frame()
        }
        fn free_frame(&mut self, frame: PhysAddr) {
            if frame.0 >= 0x1_0000_0000 {
                self.freed.push(frame);
            } else {
                self.small.free_frame(frame);
            }
        }
        fn frames_in_use(&self) -> usize {
            self.small.frames_in_use()
        }
        fn alloc_contiguous(&mut self, pages: usize) -> Option<PhysAddr> {
            assert_eq!(pages, LARGE_PAGES);
            self.blocks_left = self.blocks_left.checked_sub(1)?;
            self.next_block += 2 << 20;
            Some(PhysAddr(self.next_block))
        }
    }

    fn blocks(mem: &SimMemory, blocks: usize) -> Blocks<'_> {
        Blocks {
            small: SimFrameAllocator::new(mem, PhysAddr(0x100_0000), 2048),
            next_block: 0x1_0000_0000 + (4 << 20),
            blocks_left: blocks,
            freed: Vec::new(),
        }
    }

    #[test]
    fn blocks_first_then_frames_merged_into_runs() {
        let mem = SimMemory::new();
        let mut a = blocks(&mem, 2);
        // 2 blocks (contiguous with each other: one run), then 5 MiB of single frames.
        let m = GuestMemory::allocate(&mut a, 3 * LARGE_PAGES + 256).unwrap();
        assert_eq!(m.size(), (3 * 512 + 256) * PAGE_SIZE);
        let runs = m.runs();
        assert_eq!(runs.len(), 2, "{runs:x?}");
        assert_eq!((runs[0].gpa, runs[0].pages), (0, 1024));
        assert_eq!((runs[1].gpa, runs[1].pages), (4 << 20, 768));
        assert_eq!(m.host_address(0x1234), Some(PhysAddr(0x1_0060_1234)));
        assert_eq!(m.host_address((4 << 20) + 8), Some(PhysAddr(0x100_0008)));
        assert_eq!(m.host_address(m.size()), None);
        assert_eq!(m.frames().len(), 3 * 512 + 256);
        let sizes: Vec<PageSize> = runs
            .iter()
            .flat_map(|r| r.pages_by_size())
            .map(|p| p.2)
            .collect();
        assert_eq!(sizes.iter().filter(|s| **s == PageSize::Size2M).count(), 3);
        assert_eq!(sizes.len(), 3 + 256, "the frames run is 16 MiB aligned too");
    }

    #[test]
    fn a_failure_gives_everything_back_and_free_empties() {
        let mem = SimMemory::new();
        let mut a = blocks(&mem, 1);
        a.small.fail_allocation(10);
        assert!(GuestMemory::allocate(&mut a, 600).is_none());
        assert_eq!(a.frames_in_use(), 0);
        assert_eq!(a.freed.len(), 512, "the block's every frame");
        let mut m = GuestMemory::allocate(&mut a, 4).unwrap();
        mem.write_u64(m.host_address(0x2008).unwrap(), 7);
        m.scrub(&mem);
        assert_eq!(mem.read_u64(m.host_address(0x2008).unwrap()), 0);
        m.free(&mut a);
        assert_eq!((a.frames_in_use(), m.size(), m.runs().len()), (0, 0, 0));
    }

    #[test]
    fn from_runs_wants_runs_from_0_without_holes() {
        let run = |gpa, pages| Run {
            gpa,
            hpa: PhysAddr(0x10_0000),
            pages,
        };
        assert!(GuestMemory::from_runs(alloc::vec![run(0, 2), run(0x2000, 1)]).is_some());
        assert!(GuestMemory::from_runs(alloc::vec![run(0x1000, 2)]).is_none());
        assert!(GuestMemory::from_runs(alloc::vec![run(0, 2), run(0x3000, 1)]).is_none());
        assert!(GuestMemory::from_runs(alloc::vec![run(0, 0)]).is_none());
    }

    #[test]
    fn host_address_finds_the_run_at_every_boundary() {
        let mut m = GuestMemory::default();
        assert!(m.push(PhysAddr(0x10_0000), 2));
        assert!(m.push(PhysAddr(0x50_0000), 1));
        assert!(m.push(PhysAddr(0x50_1000), 1));
        assert!(m.push(PhysAddr(0x9000), 1));
        assert_eq!(m.runs().len(), 3);
        let want = [
            (0x0, Some(0x10_0000)),
            (0x1fff, Some(0x10_1fff)),
            (0x2000, Some(0x50_0000)),
            (0x3fff, Some(0x50_1fff)),
            (0x4000, Some(0x9000)),
            (0x4fff, Some(0x9fff)),
            (0x5000, None),
        ];
        for (gpa, hpa) in want {
            assert_eq!(m.host_address(gpa), hpa.map(PhysAddr), "{gpa:#x}");
        }
    }
}
