//! A counting global allocator for host tests: proves that a path (deassign, destroy, a
//! frame free) makes no heap allocation, which design.md §4 promises ("deassign and domain
//! destruction never allocate and never fail").
//!
//! # Why a macro
//! This crate is `no_std` outside its own tests, even with the `sim` feature: dev-dependency
//! features unify with the freestanding binaries' dependencies in workspace-wide builds, and a
//! `std` here would give them a second panic handler. The allocator needs `std` (the system
//! allocator, thread-local counters), so [`counting_allocator!`] expands *in the test crate*,
//! where `std` is present; nothing `std` is compiled into this crate.
//!
//! # Use
//! Once per test binary (a crate's unit-test binary, or one file under `tests/`):
//! ```ignore
//! mod heap_count {
//!     lazaret_types::counting_allocator!();
//! }
//! #[global_allocator]
//! static A: heap_count::CountingAllocator = heap_count::CountingAllocator;
//! ```
//! then, in any test of that binary:
//! ```ignore
//! let ((), allocations) = heap_count::heap_allocations_during(|| passthrough::destroy(...));
//! assert_eq!(allocations, 0, "destroy allocated");
//! ```
//! The kernel's unit-test binary already installs it: `crate::mm::heap::counting`. Its
//! passthrough tests call `crate::mm::heap::counting::heap_allocations_during`; each file
//! under `kernel/tests/` is its own binary and installs its own as above (one
//! `#[global_allocator]` per binary).
//!
//! Counters are per thread (the test harness runs tests on several threads at once), so a
//! measurement sees only the allocations its own closure made on the calling thread: work the
//! closure hands to another thread is not counted. Allocations, zeroed allocations and
//! reallocations count; deallocations do not (giving memory back cannot fail).
//! [`heap_allocations_during`] first checks that the counter is live, so a binary that forgot
//! the `#[global_allocator]` line fails instead of passing every check with a count of zero.

/// Defines, in the invoking module, `CountingAllocator` (a `GlobalAlloc` over
/// `std::alloc::System` that counts this thread's allocations) and
/// `heap_allocations_during(f) -> (R, u64)`. Installation: the `lazaret_types::counting` docs.
#[macro_export]
macro_rules! counting_allocator {
    () => {
        /// `std::alloc::System`, counting each thread's allocations.
        #[allow(dead_code)]
        pub struct CountingAllocator;

        ::std::thread_local! {
            // `const` and `Cell<u64>`: no lazy initialisation and no destructor, so reading it
            // from inside the allocator never allocates or registers anything.
            static LAZARET_HEAP_ALLOCATIONS: ::core::cell::Cell<u64> =
                const { ::core::cell::Cell::new(0) };
        }

        #[allow(dead_code)]
        fn lazaret_count_allocation() {
            // A thread being torn down has no counter left: its last allocations go uncounted.
            let _ = LAZARET_HEAP_ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        }

        /// This thread's allocations so far.
        #[allow(dead_code)]
        pub fn heap_allocations() -> u64 {
            LAZARET_HEAP_ALLOCATIONS.with(|c| c.get())
        }

        // SAFETY: every method forwards to `System` with the caller's arguments unchanged;
        // counting touches only a thread-local `Cell`.
        unsafe impl ::core::alloc::GlobalAlloc for CountingAllocator {
            unsafe fn alloc(&self, layout: ::core::alloc::Layout) -> *mut u8 {
                lazaret_count_allocation();
                // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which we pass on.
                unsafe { ::std::alloc::GlobalAlloc::alloc(&::std::alloc::System, layout) }
            }

            unsafe fn alloc_zeroed(&self, layout: ::core::alloc::Layout) -> *mut u8 {
                lazaret_count_allocation();
                // SAFETY: as for `alloc`.
                unsafe { ::std::alloc::GlobalAlloc::alloc_zeroed(&::std::alloc::System, layout) }
            }

            unsafe fn realloc(
                &self,
                ptr: *mut u8,
                layout: ::core::alloc::Layout,
                new_size: usize,
            ) -> *mut u8 {
                lazaret_count_allocation();
                // SAFETY: `ptr` came from `System` through us, with this `layout`.
                unsafe {
                    ::std::alloc::GlobalAlloc::realloc(&::std::alloc::System, ptr, layout, new_size)
                }
            }

            unsafe fn dealloc(&self, ptr: *mut u8, layout: ::core::alloc::Layout) {
                // SAFETY: `ptr` came from `System` through us, with this `layout`.
                unsafe { ::std::alloc::GlobalAlloc::dealloc(&::std::alloc::System, ptr, layout) }
            }
        }

        /// Runs `f` without counting what it allocates: for a simulated device's own
        /// bookkeeping (its reaction to a register write), which is not the code under test.
        #[allow(dead_code)]
        pub fn uncounted<R>(f: impl FnOnce() -> R) -> R {
            let before = heap_allocations();
            let result = f();
            let made = heap_allocations() - before;
            LAZARET_HEAP_ALLOCATIONS.with(|c| c.set(c.get() - made));
            result
        }

        /// Runs `f` and returns its result with the heap allocations it made on this thread.
        ///
        /// # Panics
        /// If `CountingAllocator` is not the binary's `#[global_allocator]`: every count would
        /// then be zero and every "allocates nothing" check would pass without checking.
        #[allow(dead_code)]
        pub fn heap_allocations_during<R>(f: impl FnOnce() -> R) -> (R, u64) {
            let probe_before = heap_allocations();
            ::core::hint::black_box(::std::boxed::Box::new(0u8));
            let before = heap_allocations();
            assert!(
                before > probe_before,
                "CountingAllocator is not this binary's #[global_allocator]: nothing is counted"
            );
            let result = f();
            (result, heap_allocations() - before)
        }
    };
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use std::vec::Vec;

    use crate::sim::{SimFrameAllocator, SimMemory};
    use crate::{FrameAllocator, PhysAddr};

    mod heap_count {
        crate::counting_allocator!();
    }
    #[global_allocator]
    static A: heap_count::CountingAllocator = heap_count::CountingAllocator;

    use heap_count::heap_allocations_during;

    #[test]
    fn the_counter_counts_allocations_and_reallocations() {
        let (v, n) = heap_allocations_during(|| {
            let mut v: Vec<u64> = Vec::new();
            v.push(1); // allocates
            v.extend(0..1000); // grows: reallocates
            v
        });
        assert!(n >= 2, "a push and a growth counted {n}");
        let ((), n) = heap_allocations_during(|| drop(v));
        assert_eq!(n, 0, "a deallocation is not an allocation");
        let ((), n) = heap_allocations_during(|| ());
        assert_eq!(n, 0);
    }

    #[test]
    fn another_threads_allocations_are_not_counted() {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let worker = {
            let (stop, done) = (stop.clone(), done.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::black_box(Vec::<u8>::with_capacity(64));
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let ((), n) = heap_allocations_during(|| {
            let start = done.load(Ordering::Relaxed);
            // Bounded: the worker allocates thousands of times a millisecond.
            for _ in 0..10_000_000 {
                if done.load(Ordering::Relaxed) > start + 1000 {
                    break;
                }
                std::hint::spin_loop();
            }
        });
        stop.store(true, Ordering::Relaxed);
        worker.join().expect("worker");
        assert!(done.load(Ordering::Relaxed) > 1000, "the worker ran");
        assert_eq!(
            n, 0,
            "the worker's allocations leaked into this thread's count"
        );
    }

    #[test]
    fn sim_frame_allocator_frees_without_allocating() {
        let m = SimMemory::new();
        let mut a = SimFrameAllocator::new(&m, PhysAddr(0x10_0000), 4096);
        let frames: Vec<PhysAddr> = (0..3000).map(|_| a.alloc_frame().expect("frame")).collect();
        let ((), n) = heap_allocations_during(|| {
            // Out of order, so no free happens to land where a stack would have room anyway.
            for f in frames
                .iter()
                .rev()
                .step_by(2)
                .chain(frames.iter().step_by(2))
            {
                a.free_frame(*f);
            }
        });
        assert_eq!(a.frames_in_use(), 0);
        assert_eq!(n, 0, "freeing frames allocated");
    }
}
