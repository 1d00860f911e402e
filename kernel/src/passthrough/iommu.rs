//! The vendor seam: what VT-d and AMD-Vi do differently, and nothing more. The flow that both
//! share — add, assign, deassign, destroy, the owner switch, its invalidation and what happens
//! when the hardware times out — is written once, in the core (`super::switch`,
//! `super::ops`); a vendor implements only the steps below.
//!
//! Every method that writes what a device's DMA reaches takes a [`LockHeld`], which only the
//! core can borrow from the held device lock: what Xen checks with
//! `ASSERT(pcidevs_locked())` at run time, the compiler checks here.
use alloc::string::String;
use core::fmt;
use core::ops::Range;

use lazaret_types::{Bdf, FrameAllocator, PhysAddr, Sbdf};

use super::LockHeld;

/// An RMRR (VT-d) or IVMD unity / exclusion range (AMD-Vi): `[start, end]`, inclusive,
/// identity-mapped for the device whatever its owner, with the access firmware allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReservedRange {
    pub start: u64,
    pub end: u64,
    pub read: bool,
    pub write: bool,
}

impl ReservedRange {
    /// A range the device may read and write (every RMRR: VT-d §8.4 gives no permissions).
    pub const fn read_write(start: u64, end: u64) -> ReservedRange {
        ReservedRange {
            start,
            end,
            read: true,
            write: true,
        }
    }

    pub fn overlaps(&self, other: &ReservedRange) -> bool {
        self.start <= other.end && other.start <= self.end
    }
}

/// Most requester IDs one device's DMA may carry: its own, up to 7 phantom functions, and
/// bridge or firmware aliases. Devices with more are refused when added.
pub const MAX_REQUESTER_IDS: usize = 16;

/// A set of requester IDs on the stack: owner switches run inside deassign and destroy,
/// which must not allocate.
pub type RequesterIds = heapless::Vec<Bdf, MAX_REQUESTER_IDS>;

/// What one flush cost, for the figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushCost {
    pub descriptors: u64,
    pub waits: u64,
    pub mmio_writes: u64,
}

impl core::ops::AddAssign for FlushCost {
    fn add_assign(&mut self, o: FlushCost) {
        self.descriptors += o.descriptors;
        self.waits += o.waits;
        self.mmio_writes += o.mmio_writes;
    }
}

impl FlushCost {
    /// Prints the cost of one owner switch as FIGURE lines (`<what>-invalidation-descriptors`, …).
    pub fn report(&self, what: &str) {
        crate::console::figure(
            &alloc::format!("{what}-invalidation-descriptors"),
            self.descriptors,
            "descriptors",
        );
        crate::console::figure(
            &alloc::format!("{what}-invalidation-waits"),
            self.waits,
            "waits",
        );
        crate::console::figure(
            &alloc::format!("{what}-mmio-writes"),
            self.mmio_writes,
            "writes",
        );
    }
}

/// What a fault record was about: a DMA the translation refused, or an interrupt request
/// the remapping hardware blocked (VT-d reasons 0x20–0x27; AMD IO_PAGE_FAULT with I = 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    Dma,
    /// `index`: the interrupt table index the request named, when the unit reports it.
    Interrupt {
        index: Option<u16>,
    },
}

/// One DMA or interrupt-remapping fault, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmaFault {
    pub segment: u16,
    pub requester: Bdf,
    pub write: bool,
    pub address: u64,
    pub reason: String,
    pub kind: FaultKind,
}

/// Interrupt entries reserved for each device when it is added (edu has one MSI vector;
/// the guest-delivery step may raise this).
pub const INTERRUPTS_PER_DEVICE: u16 = 1;

/// Where one remapped interrupt goes on the host: a vector on a physical-mode local APIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterruptTarget {
    pub vector: u8,
    pub apic_id: u32,
}

/// What a device must write to raise one of its remapped interrupts: the MSI address and
/// data to program into its MSI capability (vendor-defined: a VT-d handle or an AMD offset).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiAddress {
    pub address: u64,
    pub data: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IommuError {
    OutOfMemory,
    /// No IOMMU unit covers the device.
    NoUnit(Sbdf),
    /// A requester ID the unit cannot hold (beyond the AMD device table, say).
    RequesterOutOfRange(Bdf),
    /// The unit's domain IDs are all in use.
    OutOfDomainIds,
    /// A reserved range cannot be mapped (beyond the table width, say).
    BadReservedRange(ReservedRange),
    /// An entry changed under us (a bug: entries change only under the device lock).
    Inconsistent(String),
    /// The invalidation did not complete in time; the caches may still hold what was
    /// invalidated.
    TimedOut(String),
    /// The unit reported an error for the invalidation (VT-d IQE/ICE/ITE, AMD ILLEGAL_COMMAND).
    Hardware(String),
}

impl fmt::Display for IommuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IommuError::OutOfMemory => f.write_str("out of memory for IOMMU tables"),
            IommuError::NoUnit(s) => write!(f, "no IOMMU unit covers {s}"),
            IommuError::RequesterOutOfRange(b) => {
                write!(f, "requester ID {b} lies beyond what the IOMMU can hold")
            }
            IommuError::OutOfDomainIds => f.write_str("the IOMMU has no free domain ID"),
            IommuError::BadReservedRange(r) => write!(
                f,
                "reserved range {:#x}-{:#x} cannot be mapped",
                r.start, r.end
            ),
            IommuError::Inconsistent(s) => write!(f, "IOMMU state inconsistent: {s}"),
            IommuError::TimedOut(s) => write!(f, "IOMMU invalidation timed out: {s}"),
            IommuError::Hardware(s) => write!(f, "IOMMU reported an error: {s}"),
        }
    }
}

/// What a vendor does differently. Units are numbered `0..unit_count()`; every device sits
/// behind exactly one.
pub trait Vendor {
    /// One context entry (VT-d) or device-table entry (AMD-Vi), as the hardware reads it.
    type Entry: Copy + Eq + fmt::Debug;
    /// A device's frozen quarantine tables and scratch page: built once, never changed.
    type Quarantine;
    /// A guest's I/O page tables (changed under the guest's own mapping lock).
    type Tables;
    /// The invalidations a set of entry changes owes, on the stack.
    type Batch;
    /// A device's interrupt remapping entries (VT-d: an index range in its unit's table with
    /// a source-ID check; AMD-Vi: its own table, referenced from its DTEs). Built when the
    /// device is added, all blocked; the core never sees their bits.
    type Interrupts;

    fn name(&self) -> &'static str;
    /// Table depth of every table this IOMMU builds and programs.
    fn levels(&self) -> u8;
    fn unit_count(&self) -> usize;
    fn unit_of(&self, sbdf: Sbdf) -> Option<usize>;
    /// The hardware domain IDs `unit` may hand out.
    fn domain_ids(&self, unit: usize) -> Range<u32>;

    /// Checks that every requester ID can be programmed on `unit` and reserves what they need
    /// (VT-d: a context table per bus). Called before any entry is written; may allocate.
    fn prepare(
        &mut self,
        held: &LockHeld,
        alloc: &mut dyn FrameAllocator,
        unit: usize,
        rids: &[Bdf],
    ) -> Result<(), IommuError>;

    /// A device's quarantine tables: the reserved ranges identity-mapped, and everything else
    /// on its own scratch page (`scratch`) or absent (basic mode).
    fn build_quarantine(
        &mut self,
        held: &LockHeld,
        alloc: &mut dyn FrameAllocator,
        reserved: &[ReservedRange],
        scratch: bool,
    ) -> Result<Self::Quarantine, IommuError>;
    /// Gives back quarantine tables no entry ever pointed at.
    fn free_quarantine(&mut self, alloc: &mut dyn FrameAllocator, q: Self::Quarantine);
    fn quarantine_pages(&self, q: &Self::Quarantine) -> usize;
    /// Zeroes the scratch page (before the device enters quarantine).
    fn zero_scratch(&self, q: &Self::Quarantine);

    /// The entry that blocks every DMA (quarantine mode none, a device whose switch failed).
    fn blocked_entry(&self, did: u16) -> Self::Entry;
    fn quarantine_entry(&self, q: &Self::Quarantine, did: u16) -> Self::Entry;
    fn guest_entry(&self, tables: &Self::Tables, did: u16) -> Self::Entry;

    fn read_entry(&self, unit: usize, rid: Bdf) -> Result<Self::Entry, IommuError>;
    /// Writes `new` in one atomic 16-byte store if the entry still holds `expected`.
    fn exchange(
        &mut self,
        held: &LockHeld,
        unit: usize,
        rid: Bdf,
        expected: Self::Entry,
        new: Self::Entry,
    ) -> Result<(), IommuError>;

    fn new_batch(&self) -> Self::Batch;
    /// Queues what the hardware may cache of `old` now that `rid` holds `new`.
    fn entry_changed(
        &self,
        unit: usize,
        batch: &mut Self::Batch,
        rid: Bdf,
        old: Self::Entry,
        new: Self::Entry,
    );
    /// Queues everything tagged with `did`, which will be handed out again.
    fn domain_retired(&self, batch: &mut Self::Batch, did: u16);
    /// Submits the batch, ordered so no stale entry can be refilled, with one bounded wait.
    fn flush(
        &mut self,
        held: &LockHeld,
        unit: usize,
        batch: &Self::Batch,
    ) -> Result<FlushCost, IommuError>;

    fn create_tables(&mut self, alloc: &mut dyn FrameAllocator)
        -> Result<Self::Tables, IommuError>;
    /// Frees tables no entry points at and no cache holds.
    fn free_tables(&mut self, alloc: &mut dyn FrameAllocator, tables: Self::Tables);
    /// Maps one page of `size` at `iova` → `pa`, both aligned to it (the caller holds the
    /// guest's mapping lock); `dids[unit]` is the guest's domain ID on each unit, for what the
    /// unit's caches need. A unit that cannot walk 2 MiB leaves (VT-d without CAP.SLLPS
    /// bit 0) gets 512 4 KiB leaves instead: the caller sees no difference.
    #[allow(clippy::too_many_arguments)]
    fn map_sized(
        &mut self,
        tables: &mut Self::Tables,
        alloc: &mut dyn FrameAllocator,
        dids: &[u16],
        iova: u64,
        pa: PhysAddr,
        size: PageSize,
        writable: bool,
    ) -> Result<(), IommuError>;
    /// Unmaps the page of `size` at `iova` and invalidates it; never allocates. `Err` when the
    /// invalidation did not complete (the page may still be reachable through a cache), or
    /// when `size` is 4 KiB and `iova` lies inside a 2 MiB leaf.
    fn unmap_sized(
        &mut self,
        tables: &mut Self::Tables,
        dids: &[u16],
        iova: u64,
        size: PageSize,
    ) -> Result<Option<PhysAddr>, IommuError>;

    /// [`Vendor::map_sized`] of one 4 KiB page.
    fn map(
        &mut self,
        tables: &mut Self::Tables,
        alloc: &mut dyn FrameAllocator,
        dids: &[u16],
        iova: u64,
        pa: PhysAddr,
        writable: bool,
    ) -> Result<(), IommuError> {
        self.map_sized(tables, alloc, dids, iova, pa, PageSize::Size4K, writable)
    }
    /// [`Vendor::unmap_sized`] of one 4 KiB page.
    fn unmap(
        &mut self,
        tables: &mut Self::Tables,
        dids: &[u16],
        iova: u64,
    ) -> Result<Option<PhysAddr>, IommuError> {
        self.unmap_sized(tables, dids, iova, PageSize::Size4K)
    }

    /// Hands every recorded DMA fault to `sink`; returns how many were lost unrecorded.
    fn drain_faults(&mut self, sink: &mut dyn FnMut(DmaFault)) -> usize;

    /// Whether `unit` remaps interrupts with compatibility-format ones blocked.
    fn interrupt_remapping(&self, unit: usize) -> bool;
    /// A device's `count` interrupt entries behind `unit`, every one blocked, usable only by
    /// `rids` (its own requester ID first, then its aliases); invalidated. `Ok(None)` when
    /// the unit does not remap interrupts, or has no entries left: its interrupts stay
    /// blocked (VT-d: compatibility format off, every other index fails its source check),
    /// it just cannot be given any. May allocate: called only when the device is added.
    fn build_interrupts(
        &mut self,
        held: &LockHeld,
        alloc: &mut dyn FrameAllocator,
        unit: usize,
        rids: &[Bdf],
        count: u16,
    ) -> Result<Option<Self::Interrupts>, IommuError>;
    /// Entries `irq` holds.
    fn interrupt_count(&self, irq: &Self::Interrupts) -> u16;
    /// Entry `entry` → `target`, atomically, then invalidated (bounded); returns the MSI the
    /// device must send to raise it.
    fn program_interrupt(
        &mut self,
        held: &LockHeld,
        unit: usize,
        irq: &Self::Interrupts,
        entry: u16,
        target: InterruptTarget,
    ) -> Result<MsiAddress, IommuError>;
    /// Entry `entry` → blocked, then invalidated (bounded). Never allocates.
    fn block_interrupt(
        &mut self,
        held: &LockHeld,
        unit: usize,
        irq: &Self::Interrupts,
        entry: u16,
    ) -> Result<(), IommuError>;
    /// Every entry → blocked in memory (atomic stores, no allocation, no wait), and what the
    /// interrupt caches may still hold of them queued in `batch` — the owner switch that takes
    /// the device from its guest submits it with its one bounded wait, so a deassign costs one
    /// doorbell and one wait however many entries it blocks. Queued even when a store failed;
    /// `Err` only when an entry could not be blocked in memory.
    fn block_interrupts(
        &mut self,
        held: &LockHeld,
        unit: usize,
        batch: &mut Self::Batch,
        irq: &Self::Interrupts,
    ) -> Result<(), IommuError>;
    /// Blocks and gives back entries of a device that was never added after all.
    fn free_interrupts(
        &mut self,
        held: &LockHeld,
        alloc: &mut dyn FrameAllocator,
        unit: usize,
        irq: Self::Interrupts,
    );
}

/// The size of one IOMMU mapping: guest RAM is mapped in 2 MiB pages wherever its memory
/// map allows (VT-d §3.7 / §9.8 PS; AMD IOMMU §2.2.3, a level-2 entry with NextLevel 0). The
/// one type both vendors' table code uses.
pub use lazaret_io_pagetable::PageSize;

/// What tests and scenarios check isolation with: the tables read back as the hardware walks
/// them, from what is programmed in the unit — not from the core's own records.
pub trait Inspect: Vendor {
    /// Where `rid`'s DMA to `iova` lands now, by the reference walker.
    fn translate(&self, rid: Sbdf, iova: u64, write: bool) -> Result<PhysAddr, String>;
    fn scratch_page(&self, q: &Self::Quarantine) -> Option<PhysAddr>;
}
