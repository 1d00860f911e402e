//! What the DMA scenarios look at in RAM to judge what the device really did: fresh patterns
//! (so a DMA that silently did nothing cannot pass on bytes left by an earlier one), sentinel
//! frames, and frames whose own physical address is used as an IOVA (an identity or bypass
//! mapping lands there, a working IOMMU never does).
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

use lazaret_types::{FrameAllocator, PhysAddr, PhysMem, PAGE_SIZE};

use crate::hypervisor::Hypervisor;
use crate::mm::direct_map::DIRECT_MAP;
use crate::passthrough::iommu::Inspect;

pub const PAGE: usize = PAGE_SIZE as usize;

/// The edu's DMA mask is 28 bits: an IOVA it can emit is below 256 MiB.
const EDU_IOVA_LIMIT: u64 = 1 << 28;

/// A page of bytes no earlier call returned (a new seed each call; xorshift, so no two
/// patterns share a byte position pattern and none is all zeros).
pub fn fresh_pattern() -> Vec<u8> {
    static NEXT: AtomicU32 = AtomicU32::new(0x9e37_79b9);
    let mut x = NEXT.fetch_add(0x6d2b_79f5, Ordering::Relaxed) | 1;
    (0..PAGE)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

pub fn read_page(addr: PhysAddr) -> Vec<u8> {
    let mut buf = vec![0u8; PAGE];
    DIRECT_MAP.read_bytes(addr, &mut buf);
    buf
}

/// Frames holding known contents, checked after every DMA: a DMA that escaped changes them.
/// With `below_edu_limit`, every frame's own physical address is also an IOVA the edu can
/// emit, so a scenario can aim a DMA at it.
pub struct Watched {
    frames: Vec<(PhysAddr, Vec<u8>)>,
}

impl Watched {
    /// Up to `count` frames (fewer when memory is short: the caller checks `len`).
    pub fn new<V: Inspect>(hv: &mut Hypervisor<V>, count: usize, below_edu_limit: bool) -> Watched {
        let mut frames = Vec::new();
        let mut rejected = Vec::new();
        // The allocator hands out frames from anywhere; a bounded number of tries finds low ones.
        for _ in 0..count * 64 {
            if frames.len() == count {
                break;
            }
            let Some(f) = hv.frames.alloc_frame() else {
                break;
            };
            if below_edu_limit && f.0 + PAGE_SIZE > EDU_IOVA_LIMIT {
                rejected.push(f);
                continue;
            }
            let content = fresh_pattern();
            DIRECT_MAP.write_bytes(f, &content);
            frames.push((f, content));
        }
        rejected.into_iter().for_each(|f| hv.frames.free_frame(f));
        Watched { frames }
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn address(&self, i: usize) -> Option<PhysAddr> {
        self.frames.get(i).map(|(f, _)| *f)
    }

    /// Gives frame `i` new contents (e.g. before a read-direction DMA from it).
    pub fn refresh(&mut self, i: usize) {
        if let Some((f, content)) = self.frames.get_mut(i) {
            *content = fresh_pattern();
            DIRECT_MAP.write_bytes(*f, content);
        }
    }

    pub fn intact(&self) -> bool {
        self.frames.iter().all(|(f, c)| read_page(*f) == *c)
    }

    pub fn frame_intact(&self, i: usize) -> bool {
        self.frames.get(i).is_some_and(|(f, c)| read_page(*f) == *c)
    }

    pub fn release<V: Inspect>(self, hv: &mut Hypervisor<V>) {
        self.frames
            .into_iter()
            .for_each(|(f, _)| hv.frames.free_frame(f));
    }
}
