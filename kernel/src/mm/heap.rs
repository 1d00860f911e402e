//! The kernel heap: `buddy_system_allocator` over one contiguous range taken from free RAM
//! at boot.
use core::alloc::{GlobalAlloc, Layout};

use buddy_system_allocator::LockedHeap;

use super::ranges::Range;

pub struct KernelHeap(LockedHeap<32>);

impl KernelHeap {
    pub const fn new() -> KernelHeap {
        KernelHeap(LockedHeap::new())
    }

    /// Hands `range` to the heap.
    ///
    /// # Safety
    /// `range` must be identity-mapped RAM used by nothing else, now or later.
    pub unsafe fn init(&self, range: Range) {
        // SAFETY: per the function contract.
        unsafe {
            self.0
                .lock()
                .init(range.start as usize, range.len() as usize)
        };
    }

    /// Bytes currently allocated.
    pub fn used(&self) -> usize {
        self.0.lock().stats_alloc_actual()
    }
}

impl Default for KernelHeap {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: forwards to LockedHeap, which is a correct GlobalAlloc.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        unsafe { self.0.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { self.0.dealloc(ptr, layout) }
    }
}

/// The host tests' global allocator: counts each thread's heap allocations, so tests can
/// prove deassign, destroy and frame frees allocate nothing (design.md §4). Installed for
/// the kernel's unit-test binary only; the kernel itself uses [`KernelHeap`].
///
/// ```ignore
/// let (result, allocations) = crate::mm::heap::counting::heap_allocations_during(|| ...);
/// assert_eq!(allocations, 0);
/// ```
#[cfg(test)]
pub mod counting {
    lazaret_types::counting_allocator!();

    #[global_allocator]
    static COUNTING: CountingAllocator = CountingAllocator;

    #[test]
    fn the_counter_counts_in_this_binary() {
        let (_v, n) = heap_allocations_during(|| alloc::vec![1u8]);
        assert_eq!(n, 1, "a one-element Vec is one allocation");
    }
}
