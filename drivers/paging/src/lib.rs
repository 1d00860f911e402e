//! x86-64 4-level page tables built from a list of mappings (AMD APM vol. 2 §5.3 "Long-Mode
//! Page Translation", §5.4 "Page-Translation-Table Entry Fields", §15.25 "Nested Paging").
//!
//! One builder, two formats: the **nested** page tables a guest's physical addresses go
//! through (hCR3 in the VMCB), and the guest's **own** long-mode tables, which Lazaret writes
//! into the guest's memory before its first instruction (the guest contract starts it in long
//! mode). Both come from the same list of [`Mapping`]s — for a guest, the domain's memory map —
//! with 2 MiB leaves wherever the guest-physical address, the host-physical address and the
//! remaining length allow, and 4 KiB leaves elsewhere.
//!
//! Table pages come through the [`lazaret_types::FrameAllocator`] seam and are written through
//! [`lazaret_types::PhysMem`]: host frames for nested tables; for the guest's own tables a
//! [`TableArea`], which hands out *guest-physical* pages from a fixed region of the guest's
//! RAM, with [`AreaMem`] translating those addresses to the host frames behind them.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

mod area;
mod build;
mod entry;
mod mapping;

pub use area::{AreaMem, TableArea, MAX_AREA_PAGES};
pub use build::{build, Counts, PageTables};
pub use mapping::{Cache, Config, Format, Mapping, PagingError, LARGE_PAGE_SIZE};

#[cfg(test)]
mod reference;
#[cfg(test)]
mod tests;
