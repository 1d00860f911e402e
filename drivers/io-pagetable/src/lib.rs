//! The IOMMU table logic that Intel VT-d second-level tables and AMD-Vi I/O page tables
//! share, written once and generic over each vendor's entry encoding ([`EntryFormat`]):
//!
//! * [`PageTable`]: a guest domain's mutable tree of 4 KiB and 2 MiB leaves. Every table a
//!   map needs is allocated before anything is linked and the new branch is linked with one
//!   final entry write, so an allocation failure changes nothing and hardware never sees a
//!   half-built path.
//! * [`QuarantineTables`]: a device's frozen quarantine chain (design §4): `levels + 1`
//!   pages, every entry → the next level's single table, leaves → the device's own scratch
//!   page; RMRR / unity ranges identity-mapped on private copies of the tables along their
//!   path.
//! * [`Depth`] and [`index`]: the 9-bits-per-level arithmetic both specs share (VT-d §3.6,
//!   AMD IOMMU spec §2.2.3).
//!
//! What stays with the vendor, because the specs differ: the entry bits (VT-d §9.8 R/W/PS vs
//! AMD §2.2.3 PR/NextLevel/IR/IW), which depths are legal and how the context entry / DTE
//! encodes them (VT-d AW + CAP.SAGAW, 3..5 levels; AMD DTE Mode, 1..6 levels), how table
//! writes reach a walker ([`TableWriter`]: VT-d flushes caches when ECAP.C = 0), and the
//! context entry / DTE that points at the tables.
//!
//! A separate crate rather than part of `lazaret-types`: this is table-building logic (it
//! needs `alloc`), and keeping it apart lets a reviewer check that no reference walker or
//! simulated unit depends on it — a checker shares no code with what it checks.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

mod depth;
mod format;
mod pagetable;
mod quarantine;

pub use depth::{entry_span, index, Depth};
pub use format::{EntryFormat, EntryKind, SnoopedWalks, TableWriter};
pub use pagetable::{pages, MapError, PageSize, PageTable};
pub use quarantine::{IdentityRange, QuarantineError, QuarantineTables};
