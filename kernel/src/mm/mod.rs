//! Physical memory: which ranges are free (ranges), the frame allocator with its counters
//! (frames), and the kernel heap (heap).
pub mod direct_map;
pub mod frames;
pub mod heap;
pub mod ranges;
