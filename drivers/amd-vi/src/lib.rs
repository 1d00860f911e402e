//! AMD-Vi (AMD IOMMU) hardware layer: register decoding, the device table, I/O page tables,
//! per-device quarantine tables, a reference walker, the command buffer and the event log.
//!
//! Everything is written against the [`lazaret_types`] seams ([`PhysMem`], [`FrameAllocator`],
//! [`Mmio`]) so it runs against simulated memory and registers in host tests and against the
//! direct map and real MMIO in the kernel. Section numbers cite the AMD I/O Virtualization
//! Technology (IOMMU) Specification, rev 3.x (document 48882).
//!
//! Bring-up and use, in the order the kernel follows:
//!
//! 1. [`DeviceTable::new`] over [`DeviceTable::bytes_for`] contiguous bytes (every entry
//!    starts blocking), then [`AmdViUnit::bring_up`]: disables a unit firmware left running,
//!    programs device table, command buffer and event log, sets Control.Coherent, enables,
//!    and invalidates everything cached (INVALIDATE_IOMMU_ALL, or every DTE and DomainID
//!    without EFR.IASup). Pick one [`Levels`] (≤ [`ExtendedFeatures::max_levels`]) and build
//!    every table from it.
//! 2. Device add (may allocate and fail): check every DeviceID with
//!    [`DeviceTable::covers_all`] before the first write, [`QuarantineTables::build`] (IVMD
//!    ranges with their read/write flags), then switch as in 3.
//! 3. Assign / deassign / destroy (never allocates): [`QuarantineTables::zero_scratch`] when
//!    entering quarantine, [`DeviceTable::switch_owner`] (one `cmpxchg16b`) per DeviceID,
//!    [`SwitchBatch::entry_changed`] with old and new entry, [`SwitchBatch::domain_retired`]
//!    for a DomainID about to be reused, then ONE [`AmdViUnit::flush`]: DTE invalidations,
//!    a COMPLETION_WAIT fence (the IOMMU may complete unfenced commands in any order, §2.4),
//!    page invalidations, one polled wait. See [`switch`] for why the fence is needed.
//! 4. Interrupt remapping, per device at add (may allocate): [`InterruptTable::new`] in
//!    [`AmdViUnit::irte_format`], [`DeviceTable::set_interrupt_table`] for every DeviceID, then
//!    [`AmdViUnit::after_interrupt_dte_change`]; later (never allocates)
//!    [`InterruptTable::program`] / [`InterruptTable::block`] then
//!    [`AmdViUnit::invalidate_interrupt_tables`]. The device's MSI gets
//!    [`MsiMessage::remapped`].
//! 5. Faults: [`AmdViUnit::drain_events`] (refused interrupts: IO_PAGE_FAULT with I = 1); isolation proofs: [`walker::translate_programmed`]
//!    (independent of the builders), and in host tests `sim_device::SimAmdVi::dma`, which
//!    caches like hardware.
//!
//! [`PhysMem`]: lazaret_types::PhysMem
//! [`FrameAllocator`]: lazaret_types::FrameAllocator
//! [`Mmio`]: lazaret_types::Mmio
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod command;
pub mod device_table;
pub mod event_log;
pub mod intremap;
pub mod levels;
pub mod pagetable;
pub mod poll;
pub mod pte;
pub mod quarantine;
pub mod regs;
pub mod switch;
pub mod unit;
pub mod walker;

/// A simulated unit for host tests, here and in the kernel's passthrough tests.
#[cfg(any(test, feature = "sim"))]
pub mod sim_device;

#[cfg(test)]
mod isolation_tests;

pub use command::{Command, CommandError, CommandQueue, CommandStats, PageScope};
pub use device_table::{DeviceTable, DeviceTableEntry, DeviceTableError};
pub use event_log::{DrainSummary, Event, EventFlags, EventLog, EventLogError};
pub use intremap::{
    IntRemapError, InterruptTable, Irte, IrteFormat, MsiMessage, MAX_INTERRUPT_ENTRIES,
};
pub use levels::{Depth, Levels};
pub use pagetable::{
    IoPageTable, MapError, PageSize, PageTable, Perms, Translated, TranslationRoot,
};
pub use poll::{Clock, TimedOut};
pub use quarantine::{QuarantineDte, QuarantineError, QuarantineTables, UnityRange};
pub use regs::{ExtendedFeatures, RingLength};
pub use switch::SwitchBatch;
pub use unit::{AmdViUnit, BringUpError, BringUpStep, UnitError};
pub use walker::{translate, translate_programmed, walk_tables, Fault};
