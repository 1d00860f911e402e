//! Intel VT-d hardware layer: capability decoding, root/context tables, second-level page
//! tables, per-device quarantine tables, a reference walker, invalidation and fault recording.
//!
//! Everything is written against the [`lazaret_types`] seams ([`PhysMem`], [`FrameAllocator`],
//! [`Mmio`]) so that it runs against simulated memory and registers in host tests and against
//! the direct map and real MMIO in the kernel. Section numbers cite the Intel Virtualization
//! Technology for Directed I/O Architecture Specification, rev 4.x.
//!
//! Bring-up and use, in the order the kernel follows:
//!
//! 1. [`VtdUnit::new`] reads CAP/ECAP; pick [`Capabilities::preferred_levels`] once and build
//!    every table and context entry from that one [`Levels`] value.
//! 2. [`RootTable::new`], [`VtdUnit::set_root_table`], [`VtdUnit::enable_queued_invalidation`]
//!    (if ECAP.QI), [`VtdUnit::invalidate_all`], then [`VtdUnit::enable_translation`].
//! 3. Device add (may allocate and fail): [`RootTable::ensure_bus`] (+
//!    [`VtdUnit::after_root_entry_present`]), [`QuarantineTables::build`], then
//!    [`RootTable::switch_context`] to [`QuarantineContext::context_entry`] (+
//!    [`VtdUnit::after_context_present`]).
//! 4. Assign / deassign (never allocates): [`QuarantineTables::zero_scratch`] when entering
//!    quarantine, [`RootTable::switch_context`] for each requester ID, recording each change
//!    (and every domain ID to be reused) in a [`SwitchBatch`], then one [`VtdUnit::flush`]:
//!    context-cache invalidations, a fence, IOTLB invalidations, one wait.
//! 5. Interrupt remapping (after QI): [`InterruptTable::new`] once per unit,
//!    [`VtdUnit::enable_interrupt_remapping`]; per device [`InterruptTable::program`] /
//!    [`InterruptTable::block`] then [`VtdUnit::invalidate_interrupt_entries`]; the device's
//!    MSI capability gets [`MsiMessage::remappable`].
//! 6. Faults: [`VtdUnit::drain_faults`] (IR faults: [`FaultRecord::interrupt_index`]); isolation proofs: [`walker::translate_programmed`]
//!    (from RTADDR under the unit's CAP/ECAP) or, with caches, `sim_device::SimVtd::dma`.
//!
//! Construct with [`VtdUnit::checked`] when the DRHD gives the register window's size.
//!
//! Table writes go through [`TableMemory`], which calls the caller's [`CacheFlush`] after
//! each write (use [`Coherent`] when ECAP.C = 1).
//!
//! [`PhysMem`]: lazaret_types::PhysMem
//! [`FrameAllocator`]: lazaret_types::FrameAllocator
//! [`Mmio`]: lazaret_types::Mmio
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod context;
pub mod fault;
pub mod intremap;
pub mod invalidation;
pub mod levels;
pub mod pagetable;
pub mod poll;
pub mod pte;
pub mod quarantine;
pub mod regs;
pub mod table_memory;
pub mod unit;
pub mod walker;

/// A simulated unit for host tests, here and in the kernel's passthrough tests.
#[cfg(any(test, feature = "sim"))]
pub mod sim_device;

pub use context::{ContextEntry, ContextError, RootTable, TranslationType};
pub use fault::{fault_reason_text, is_interrupt_fault, DrainSummary, FaultRecord};
pub use intremap::{
    Destination, IndexRange, IntRemapError, InterruptTable, Irte, MsiMessage, SourceCheck,
    MAX_INTERRUPT_ENTRIES,
};
pub use invalidation::{
    ContextScope, InterruptScope, Invalidation, InvalidationError, InvalidationStats, Invalidator,
    IotlbScope, SwitchBatch,
};
pub use levels::{Depth, Levels};
pub use pagetable::{MapError, PageSize, PageTable, Perms, SecondLevel};
pub use poll::{Clock, TimedOut};
pub use quarantine::{QuarantineContext, QuarantineError, QuarantineTables};
pub use regs::{required_register_bytes, Capabilities, ExtCapabilities};
pub use table_memory::{CacheFlush, Coherent, TableMemory};
pub use unit::{UnitError, VtdUnit};
pub use walker::{translate, Fault, WalkerConfig};
