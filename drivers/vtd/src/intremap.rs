//! Interrupt remapping (§5): the interrupt remapping table one unit points at (IRTA), its
//! 128-bit remappable-format IRTEs (§9.10) with source-ID verification, and the remappable MSI
//! message a device is programmed with (§5.1.5.2).
//!
//! One table per unit, shared by all devices behind it: each device owns the indices the
//! kernel hands it, and source-ID verification (SVT/SQ/SID) stops any other requester from
//! using them. Every entry starts blocked (P = 0, FPD = 0: a use is blocked *and* recorded as
//! fault 0x22). Entries change by one 16-byte `cmpxchg16b`, so hardware never fetches a torn
//! IRTE; the change is then owed an interrupt entry cache invalidation
//! ([`crate::VtdUnit::invalidate_interrupt_entries`]).
//!
//! Each device owns an aligned range of indices ([`InterruptTable::reserve`]), reserved at
//! add, so blocking all of them later needs one invalidation and no allocation.
//!
//! The table is one 4 KiB frame (256 entries): the frame allocator hands out single frames, and
//! 256 vectors per unit is far beyond what Lazaret assigns.

use core::fmt;

use lazaret_types::{Bdf, FrameAllocator, PhysAddr, PAGE_SIZE};

use crate::table_memory::{CacheFlush, TableMemory};

mod ranges;
pub use ranges::IndexRange;

/// Entries one table frame holds (16 bytes each).
pub const MAX_INTERRUPT_ENTRIES: u32 = (PAGE_SIZE / 16) as u32;

const IRTE_P: u128 = 1 << 0;
/// DLM (7:5) = 000b fixed, DM (2) = 0 physical, TM (4) = 0 edge, RH (3) = 0, IM (15) = 0.
const IRTE_VECTOR_SHIFT: u32 = 16;
const IRTE_DST_SHIFT: u32 = 32;
const IRTE_SID_SHIFT: u32 = 64;
const IRTE_SVT_SHIFT: u32 = 82;
/// SVT = 01b: compare the requester ID with SID (SQ = 00b, bits 81:80: all 16 bits).
const SVT_REQUESTER_ID: u128 = 0b01;
/// SVT = 10b: the requester's bus must lie in SID[15:8] ..= SID[7:0].
const SVT_BUS_RANGE: u128 = 0b10;

/// IRTA.EIME (bit 11): destinations are 32-bit x2APIC IDs.
const IRTA_EIME: u64 = 1 << 11;
/// Physical destination IDs that mean "every CPU" (Intel SDM Vol. 3A, physical destination
/// mode): 0xFF in xAPIC format (an xAPIC-mode IRTE's DST[15:8]), all ones in x2APIC format.
const XAPIC_BROADCAST: u32 = 0xff;
const X2APIC_BROADCAST: u32 = u32::MAX;

/// Whom an interrupt may come from (§9.10 SVT / SQ / SID).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceCheck {
    /// Exactly this requester ID (SVT = 01b, SQ = 00b).
    RequesterId(Bdf),
    /// Any requester on buses `first ..= last` (SVT = 10b): a conventional PCI device behind a
    /// PCIe-to-PCI bridge, whose MSIs may carry the bridge's secondary-bus alias.
    BusRange { first: u8, last: u8 },
}

/// Where the interrupt goes: a physical-mode local APIC ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// xAPIC: an 8-bit APIC ID, which the IRTE holds in DST[15:8].
    Xapic(u8),
    /// x2APIC: a 32-bit APIC ID (needs a table in extended interrupt mode).
    X2apic(u32),
}

/// One remapped interrupt: fixed delivery, edge, physical destination mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Irte {
    pub vector: u8,
    pub destination: Destination,
    pub source: SourceCheck,
}

impl Irte {
    /// The 128-bit IRTE (§9.10, remappable format), present.
    pub const fn encode(&self) -> u128 {
        let dst: u128 = match self.destination {
            Destination::Xapic(id) => (id as u128) << 8,
            Destination::X2apic(id) => id as u128,
        };
        let (svt, sid) = match self.source {
            SourceCheck::RequesterId(bdf) => (SVT_REQUESTER_ID, bdf.requester_id() as u128),
            SourceCheck::BusRange { first, last } => {
                (SVT_BUS_RANGE, ((first as u128) << 8) | last as u128)
            }
        };
        IRTE_P
            | ((self.vector as u128) << IRTE_VECTOR_SHIFT)
            | (dst << IRTE_DST_SHIFT)
            | (sid << IRTE_SID_SHIFT)
            | (svt << IRTE_SVT_SHIFT)
    }
}

/// The MSI address / data a device is programmed with to raise entry `index` (§5.1.5.2
/// remappable format: address 19:5 = handle[14:0], 4 = 1, 3 = SHV = 0, 2 = handle[15]; data 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiMessage {
    pub address: u64,
    pub data: u32,
}

impl MsiMessage {
    pub const fn remappable(index: u16) -> MsiMessage {
        let handle = index as u64;
        MsiMessage {
            address: 0xFEE0_0000
                | ((handle & 0x7fff) << 5)
                | (1 << 4)
                | (((handle >> 15) & 1) << 2),
            data: 0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntRemapError {
    OutOfFrames,
    /// More entries asked for than one table frame holds.
    TooManyEntries {
        requested: u32,
    },
    /// An index at or beyond the table's size.
    IndexOutOfRange {
        index: u16,
        entries: u32,
    },
    /// An x2APIC destination above 255 in a table not in extended interrupt mode.
    DestinationNeedsX2apic {
        apic_id: u32,
    },
    /// The entry changed under the atomic update (something else writes this table).
    ConcurrentUpdate {
        index: u16,
    },
    /// The broadcast ID of the table's destination format: it would interrupt every CPU.
    BroadcastDestination {
        apic_id: u32,
    },
}

impl fmt::Display for IntRemapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntRemapError::OutOfFrames => write!(f, "out of frames for the interrupt table"),
            IntRemapError::TooManyEntries { requested } => write!(
                f,
                "{requested} interrupt entries exceed the {MAX_INTERRUPT_ENTRIES} of one table frame"
            ),
            IntRemapError::IndexOutOfRange { index, entries } => {
                write!(f, "interrupt index {index} beyond a table of {entries}")
            }
            IntRemapError::DestinationNeedsX2apic { apic_id } => {
                write!(f, "APIC ID {apic_id} needs x2APIC (extended interrupt mode)")
            }
            IntRemapError::ConcurrentUpdate { index } => {
                write!(f, "interrupt entry {index} changed during its atomic update")
            }
            IntRemapError::BroadcastDestination { apic_id } => {
                write!(f, "APIC ID {apic_id:#x} is the broadcast destination")
            }
        }
    }
}

/// A unit's interrupt remapping table: 2^(S+1) entries, all blocked when built.
#[derive(Debug, PartialEq, Eq)]
pub struct InterruptTable {
    base: PhysAddr,
    /// IRTA.S: the table holds 2^(size_field + 1) entries.
    size_field: u8,
    extended: bool,
    /// Indices reserved by devices ([`InterruptTable::reserve`]).
    used: [u64; ranges::USED_WORDS],
}

impl InterruptTable {
    /// A zeroed (every entry blocked) table of at least `count` entries (rounded up to a power
    /// of two, at least 2). `extended`: x2APIC destinations (IRTA.EIME, needs ECAP.EIM).
    pub fn new<A, M, F>(
        tm: TableMemory<'_, M, F>,
        alloc: &mut A,
        count: u32,
        extended: bool,
    ) -> Result<InterruptTable, IntRemapError>
    where
        A: FrameAllocator + ?Sized,
        M: lazaret_types::PhysMem + ?Sized,
        F: CacheFlush + ?Sized,
    {
        if count > MAX_INTERRUPT_ENTRIES {
            return Err(IntRemapError::TooManyEntries { requested: count });
        }
        let entries = count.max(2).next_power_of_two();
        let base = alloc.alloc_frame().ok_or(IntRemapError::OutOfFrames)?;
        // Frames come zeroed; zero again so a P = 1 leftover can never be live, and flush.
        tm.fill_table(base, 0);
        Ok(InterruptTable {
            base,
            size_field: (entries.trailing_zeros() - 1) as u8,
            extended,
            used: [0; ranges::USED_WORDS],
        })
    }

    pub fn base(&self) -> PhysAddr {
        self.base
    }

    pub fn entries(&self) -> u32 {
        1 << (self.size_field + 1)
    }

    /// The IRTA register value (§10.4.29).
    pub fn irta(&self) -> u64 {
        self.base.0 | if self.extended { IRTA_EIME } else { 0 } | u64::from(self.size_field)
    }

    fn slot(&self, index: u16) -> Result<PhysAddr, IntRemapError> {
        if u32::from(index) >= self.entries() {
            return Err(IntRemapError::IndexOutOfRange {
                index,
                entries: self.entries(),
            });
        }
        Ok(PhysAddr(self.base.0 + u64::from(index) * 16))
    }

    /// The raw IRTE at `index` (for logging and tests).
    pub fn read<M, F>(&self, tm: TableMemory<'_, M, F>, index: u16) -> Result<u128, IntRemapError>
    where
        M: lazaret_types::PhysMem + ?Sized,
        F: CacheFlush + ?Sized,
    {
        Ok(tm.read_u128(self.slot(index)?))
    }

    /// Entry `index` → `irte`, atomically. The caller then invalidates the entry. A broadcast
    /// destination is refused: the entry is one CPU's.
    pub fn program<M, F>(
        &self,
        tm: TableMemory<'_, M, F>,
        index: u16,
        irte: Irte,
    ) -> Result<(), IntRemapError>
    where
        M: lazaret_types::PhysMem + ?Sized,
        F: CacheFlush + ?Sized,
    {
        if let Destination::X2apic(id) = irte.destination {
            if !self.extended && id > 0xff {
                return Err(IntRemapError::DestinationNeedsX2apic { apic_id: id });
            }
        }
        let (apic_id, broadcast) = match irte.destination {
            Destination::Xapic(id) => (u32::from(id), XAPIC_BROADCAST),
            Destination::X2apic(id) if self.extended => (id, X2APIC_BROADCAST),
            Destination::X2apic(id) => (id, XAPIC_BROADCAST),
        };
        if apic_id == broadcast {
            return Err(IntRemapError::BroadcastDestination { apic_id });
        }
        // The table's format decides the field (§9.10): an xAPIC ID in an extended table is the
        // same CPU's x2APIC ID in DST[31:0], never id << 8 (x2APIC ID id·256, another CPU).
        let irte = match irte.destination {
            Destination::X2apic(id) if !self.extended => Irte {
                destination: Destination::Xapic(id as u8),
                ..irte
            },
            Destination::Xapic(id) if self.extended => Irte {
                destination: Destination::X2apic(u32::from(id)),
                ..irte
            },
            _ => irte,
        };
        self.replace(tm, index, irte.encode())
    }

    /// Entry `index` → blocked (P = 0; FPD = 0, so its use is recorded as a fault), atomically.
    /// Never allocates. The caller then invalidates the entry.
    pub fn block<M, F>(&self, tm: TableMemory<'_, M, F>, index: u16) -> Result<(), IntRemapError>
    where
        M: lazaret_types::PhysMem + ?Sized,
        F: CacheFlush + ?Sized,
    {
        self.replace(tm, index, 0)
    }

    fn replace<M, F>(
        &self,
        tm: TableMemory<'_, M, F>,
        index: u16,
        new: u128,
    ) -> Result<(), IntRemapError>
    where
        M: lazaret_types::PhysMem + ?Sized,
        F: CacheFlush + ?Sized,
    {
        let slot = self.slot(index)?;
        let current = tm.read_u128(slot);
        tm.exchange_entry(slot, current, new)
            .map_err(|_| IntRemapError::ConcurrentUpdate { index })
    }

    /// Gives the frame back; only after IRE is off or IRTA points elsewhere (and the interrupt
    /// entry cache was invalidated).
    pub fn free<A: FrameAllocator + ?Sized>(self, alloc: &mut A) {
        alloc.free_frame(self.base);
    }
}

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;
