//! The vendor-neutral IOMMU seam (roughly Xen's `iommu_ops`). VT-d and AMD-Vi implement it;
//! the passthrough core never sees vendor bits.
//!
//! Every method that reads or changes which domain a device's DMA reaches takes a
//! [`LockHeld`], which only a [`super::DevicesGuard`] can lend: what Xen checks with
//! `ASSERT(pcidevs_locked())` at run time, the compiler checks here.
use alloc::boxed::Box;
use alloc::string::String;
use core::any::Any;
use core::fmt;

use lazaret_types::{Bdf, FrameAllocator, PhysAddr, Sbdf};

use super::LockHeld;
use crate::cmdline::QuarantineMode;

/// An RMRR (VT-d) or IVMD unity range (AMD-Vi): `[start, end]`, inclusive, identity-mapped
/// for the device whatever its owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReservedRange {
    pub start: u64,
    pub end: u64,
}

impl ReservedRange {
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

/// What the IOMMU needs to know about a device.
#[derive(Clone, Copy, Debug)]
pub struct DeviceSpec<'a> {
    pub sbdf: Sbdf,
    /// Every requester ID the device's DMA can carry: its own, phantom functions, bridge
    /// aliases. Each gets a context / device-table entry that moves with the device.
    pub requester_ids: &'a [Bdf],
    /// The requester IDs this operation points at the new owner: all of them, except IDs
    /// shared with another device (a bridge alias) that keeps its current owner — one context
    /// entry serves every device behind the alias, and it follows the group, not one member.
    pub moving: &'a [Bdf],
    pub reserved: &'a [ReservedRange],
}

/// What adding a device reserved for its quarantine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuarantineInfo {
    /// Table pages plus the scratch page (`levels + 1` in scratch mode without RMRR).
    pub pages: usize,
    /// The IOMMU's domain ID for this device while quarantined (0 when no context is present).
    pub hw_domain_id: u16,
}

/// The cost of one owner switch, for the figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwitchCost {
    pub descriptors: u64,
    pub waits: u64,
    pub mmio_writes: u64,
    /// The completion wait ran out of time: the entries are switched (state consistent),
    /// the caches may still hold the previous owner's translations. Logged by the caller.
    pub timed_out: bool,
}

impl core::ops::AddAssign for SwitchCost {
    fn add_assign(&mut self, o: SwitchCost) {
        self.descriptors += o.descriptors;
        self.waits += o.waits;
        self.mmio_writes += o.mmio_writes;
        self.timed_out |= o.timed_out;
    }
}

/// A guest's IOMMU page tables and hardware domain ID(s). Vendor state is opaque to the
/// core; the mapping lock around it lives in [`crate::domain::Domain`].
pub struct GuestTables {
    pub levels: u8,
    /// Mappings currently present, for the figures and the destroy path.
    pub mapped_pages: u64,
    pub vendor: Box<dyn Any + Send>,
}

/// One DMA fault, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmaFault {
    pub segment: u16,
    pub requester: Bdf,
    pub write: bool,
    pub address: u64,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IommuError {
    OutOfMemory,
    /// No IOMMU unit covers the device.
    NoUnit(Sbdf),
    /// The unit's domain IDs are all in use.
    OutOfDomainIds,
    /// A reserved range cannot be mapped (beyond the table width, say).
    BadReservedRange(ReservedRange),
    /// An entry changed under us (a bug: entries change only under the device lock).
    Inconsistent(String),
}

impl fmt::Display for IommuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IommuError::OutOfMemory => f.write_str("out of memory for IOMMU tables"),
            IommuError::NoUnit(s) => write!(f, "no IOMMU unit covers {s}"),
            IommuError::OutOfDomainIds => f.write_str("the IOMMU has no free domain ID"),
            IommuError::BadReservedRange(r) => write!(
                f,
                "reserved range {:#x}-{:#x} cannot be mapped",
                r.start, r.end
            ),
            IommuError::Inconsistent(s) => write!(f, "IOMMU state inconsistent: {s}"),
        }
    }
}

pub trait Iommu {
    fn name(&self) -> &'static str;

    /// Table depth used for every table this IOMMU builds and programs.
    fn levels(&self) -> u8;

    /// Reserves everything the device will ever need — context/device-table space, its
    /// quarantine tables and scratch page, its hardware domain ID — and puts every requester
    /// ID in quarantine. Fails cleanly (nothing left allocated).
    fn add_device(
        &mut self,
        held: &LockHeld,
        alloc: &mut dyn FrameAllocator,
        dev: &DeviceSpec,
        mode: QuarantineMode,
    ) -> Result<QuarantineInfo, IommuError>;

    /// A guest's empty page tables and its hardware domain ID(s).
    fn create_domain(
        &mut self,
        held: &LockHeld,
        alloc: &mut dyn FrameAllocator,
    ) -> Result<GuestTables, IommuError>;

    /// Frees a guest's tables and domain ID(s); no device may still point at them.
    fn destroy_domain(
        &mut self,
        held: &LockHeld,
        alloc: &mut dyn FrameAllocator,
        tables: GuestTables,
    );

    /// Maps one 4 KiB page of a guest (caller holds the guest's mapping lock: `&mut`).
    fn map(
        &mut self,
        tables: &mut GuestTables,
        alloc: &mut dyn FrameAllocator,
        iova: u64,
        pa: PhysAddr,
        writable: bool,
    ) -> Result<(), IommuError>;

    /// Unmaps one page and invalidates it; never allocates.
    fn unmap(&mut self, tables: &mut GuestTables, iova: u64) -> Option<PhysAddr>;

    /// Moves every requester ID of `dev` from wherever it is to `tables` (one atomic entry
    /// write each), then invalidates for the previous domain ID(s) with one wait.
    fn attach(
        &mut self,
        held: &LockHeld,
        dev: &DeviceSpec,
        tables: &GuestTables,
    ) -> Result<SwitchCost, IommuError>;

    /// Moves every requester ID of `dev` back to its quarantine entry. The scratch page is
    /// zeroed first. Never allocates, never fails.
    fn quarantine(&mut self, held: &LockHeld, dev: &DeviceSpec) -> SwitchCost;

    /// Where the device's DMA to `iova` lands now, read from the tables as the hardware walks
    /// them (the reference walker): what scenarios and tests check isolation with.
    fn translate(&self, rid: Sbdf, iova: u64, write: bool) -> Result<PhysAddr, String>;

    /// The device's private scratch page (scratch mode).
    fn scratch_page(&self, sbdf: Sbdf) -> Option<PhysAddr>;

    /// Hands every recorded DMA fault to `sink`; returns how many overflowed unrecorded.
    fn drain_faults(&mut self, sink: &mut dyn FnMut(DmaFault)) -> usize;
}

/// The kernel holds whichever IOMMU the platform has as a `Box<dyn Iommu>`.
impl<T: Iommu + ?Sized> Iommu for Box<T> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn levels(&self) -> u8 {
        (**self).levels()
    }
    fn add_device(
        &mut self,
        held: &LockHeld,
        alloc: &mut dyn FrameAllocator,
        dev: &DeviceSpec,
        mode: QuarantineMode,
    ) -> Result<QuarantineInfo, IommuError> {
        (**self).add_device(held, alloc, dev, mode)
    }
    fn create_domain(
        &mut self,
        held: &LockHeld,
        alloc: &mut dyn FrameAllocator,
    ) -> Result<GuestTables, IommuError> {
        (**self).create_domain(held, alloc)
    }
    fn destroy_domain(
        &mut self,
        held: &LockHeld,
        alloc: &mut dyn FrameAllocator,
        tables: GuestTables,
    ) {
        (**self).destroy_domain(held, alloc, tables)
    }
    fn map(
        &mut self,
        tables: &mut GuestTables,
        alloc: &mut dyn FrameAllocator,
        iova: u64,
        pa: PhysAddr,
        writable: bool,
    ) -> Result<(), IommuError> {
        (**self).map(tables, alloc, iova, pa, writable)
    }
    fn unmap(&mut self, tables: &mut GuestTables, iova: u64) -> Option<PhysAddr> {
        (**self).unmap(tables, iova)
    }
    fn attach(
        &mut self,
        held: &LockHeld,
        dev: &DeviceSpec,
        tables: &GuestTables,
    ) -> Result<SwitchCost, IommuError> {
        (**self).attach(held, dev, tables)
    }
    fn quarantine(&mut self, held: &LockHeld, dev: &DeviceSpec) -> SwitchCost {
        (**self).quarantine(held, dev)
    }
    fn translate(&self, rid: Sbdf, iova: u64, write: bool) -> Result<PhysAddr, String> {
        (**self).translate(rid, iova, write)
    }
    fn scratch_page(&self, sbdf: Sbdf) -> Option<PhysAddr> {
        (**self).scratch_page(sbdf)
    }
    fn drain_faults(&mut self, sink: &mut dyn FnMut(DmaFault)) -> usize {
        (**self).drain_faults(sink)
    }
}

impl SwitchCost {
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
