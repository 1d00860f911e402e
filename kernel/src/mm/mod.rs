//! Physical memory: which ranges are free (ranges), how each is mapped (layout), the frame
//! allocator with its counters (frames), the kernel heap (heap), the direct map (direct_map).
mod bitmap;
pub mod direct_map;
pub mod frames;
pub mod heap;
pub mod layout;
pub mod ranges;
