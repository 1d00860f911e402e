//! Root table (§9.1) and context tables (§9.3), legacy translation mode.
//!
//! Allocation happens only in [`RootTable::new`] and [`RootTable::ensure_bus`] (device-add
//! time); [`RootTable::switch_context`] takes `&self` and no allocator, so a deassign that
//! only switches context entries provably cannot allocate.

use core::fmt;

use lazaret_types::{Bdf, FrameAllocator, PhysAddr, PhysMem};

use crate::levels::Levels;
use crate::table_memory::{CacheFlush, TableMemory};

const ENTRY_SIZE: u64 = 16;
const ADDR_MASK: u64 = 0xffff_ffff_ffff_f000;

/// Root entry, legacy mode (§9.1): P = bit 0, context-table pointer = bits 63:12, bits 127:64
/// and 11:1 reserved.
pub mod root_entry {
    pub const PRESENT: u64 = 1;
    pub const RESERVED_LO: u64 = 0xffe;
}

/// Context entry TT field (bits 3:2, §9.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TranslationType {
    /// 00b: untranslated requests go through the second-level tables; ATS requests blocked.
    UntranslatedOnly,
    /// 01b: as above, and device-TLB (ATS) requests allowed. Lazaret never programs it.
    DeviceTlb,
    /// 10b: untranslated requests pass through (IOVA = host physical); needs ECAP.PT.
    PassThrough,
    /// 11b: reserved; hardware reports fault 3h.
    Reserved,
}

impl TranslationType {
    const fn bits(self) -> u64 {
        match self {
            TranslationType::UntranslatedOnly => 0,
            TranslationType::DeviceTlb => 1,
            TranslationType::PassThrough => 2,
            TranslationType::Reserved => 3,
        }
    }

    const fn from_bits(b: u64) -> TranslationType {
        match b & 3 {
            0 => TranslationType::UntranslatedOnly,
            1 => TranslationType::DeviceTlb,
            2 => TranslationType::PassThrough,
            _ => TranslationType::Reserved,
        }
    }
}

/// A legacy-mode context entry (§9.3). Bit layout of the 128-bit value:
/// 0 P, 1 FPD, 3:2 TT, 11:4 reserved, 63:12 SLPTPTR, 66:64 AW, 70:67 ignored, 71 reserved,
/// 87:72 DID, 127:88 reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContextEntry {
    pub present: bool,
    pub fault_processing_disable: bool,
    pub translation_type: TranslationType,
    pub slpt_root: PhysAddr,
    /// Raw AW field (1 = 39-bit 3-level, 2 = 48-bit 4-level, 3 = 57-bit 5-level). Build it
    /// with [`ContextEntry::translated`] so that it comes from the same [`Levels`] as the tables.
    pub address_width: u8,
    pub domain_id: u16,
}

/// Bits of the raw entry that must be zero (§9.3); the walker faults with 0Bh on them.
pub const CONTEXT_RESERVED: u128 = 0xff0 | (1 << 71) | (!0u128 << 88);

impl ContextEntry {
    /// The all-zero, not-present entry: DMA from the function is blocked (fault 2h).
    pub const NOT_PRESENT: ContextEntry = ContextEntry {
        present: false,
        fault_processing_disable: false,
        translation_type: TranslationType::UntranslatedOnly,
        slpt_root: PhysAddr(0),
        address_width: 0,
        domain_id: 0,
    };

    /// A present entry translating through `slpt_root`, a `levels`-deep table tree.
    pub const fn translated(slpt_root: PhysAddr, levels: Levels, domain_id: u16) -> ContextEntry {
        ContextEntry {
            present: true,
            fault_processing_disable: false,
            translation_type: TranslationType::UntranslatedOnly,
            slpt_root,
            address_width: levels.aw_field(),
            domain_id,
        }
    }

    /// The depth encoded in AW, if it is a valid encoding.
    pub const fn levels(&self) -> Option<Levels> {
        Levels::from_aw_field(self.address_width)
    }

    pub const fn encode(&self) -> u128 {
        let lo = (self.present as u64)
            | ((self.fault_processing_disable as u64) << 1)
            | (self.translation_type.bits() << 2)
            | (self.slpt_root.0 & ADDR_MASK);
        let hi = (self.address_width as u64 & 7) | ((self.domain_id as u64) << 8);
        (lo as u128) | ((hi as u128) << 64)
    }

    /// Decodes every defined field; reserved bits are ignored here (see [`CONTEXT_RESERVED`]).
    pub const fn decode(raw: u128) -> ContextEntry {
        let lo = raw as u64;
        let hi = (raw >> 64) as u64;
        ContextEntry {
            present: lo & 1 == 1,
            fault_processing_disable: lo & 2 != 0,
            translation_type: TranslationType::from_bits(lo >> 2),
            slpt_root: PhysAddr(lo & ADDR_MASK),
            address_width: (hi & 7) as u8,
            domain_id: (hi >> 8) as u16,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextError {
    OutOfFrames,
    /// No context table for this bus yet: call [`RootTable::ensure_bus`] at device-add time.
    NoContextTable {
        bus: u8,
    },
    /// The entry no longer holds the expected value; nothing was written.
    Changed {
        bdf: Bdf,
        found: ContextEntry,
    },
}

impl fmt::Display for ContextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContextError::OutOfFrames => write!(f, "out of frames for VT-d context tables"),
            ContextError::NoContextTable { bus } => {
                write!(f, "no context table for bus {bus:02x}")
            }
            ContextError::Changed { bdf, found } => {
                write!(
                    f,
                    "context entry of {bdf} changed under us (found {found:?})"
                )
            }
        }
    }
}

/// The root table and its per-bus context tables. The table addresses are kept here too, so
/// the driver never trusts what it reads back from RAM about its own structure.
pub struct RootTable {
    root: PhysAddr,
    context_tables: [Option<PhysAddr>; 256],
}

impl RootTable {
    /// Allocates the (zeroed: every bus not present) root table.
    pub fn new<M, F, A>(tm: TableMemory<'_, M, F>, alloc: &mut A) -> Result<RootTable, ContextError>
    where
        M: PhysMem + ?Sized,
        F: CacheFlush + ?Sized,
        A: FrameAllocator + ?Sized,
    {
        let root = alloc.alloc_frame().ok_or(ContextError::OutOfFrames)?;
        tm.fill_table(root, 0);
        Ok(RootTable {
            root,
            context_tables: [None; 256],
        })
    }

    /// The value for RTADDR.
    pub fn address(&self) -> PhysAddr {
        self.root
    }

    pub fn context_table(&self, bus: u8) -> Option<PhysAddr> {
        self.context_tables[usize::from(bus)]
    }

    /// Makes sure `bus` has a context table, allocating and linking it if needed. Linking a
    /// new context table makes a not-present root entry present: with CAP.CM = 1 the caller
    /// owes a global context-cache invalidation, otherwise only a write-buffer flush (§6.1).
    /// Returns whether a table was created.
    pub fn ensure_bus<M, F, A>(
        &mut self,
        tm: TableMemory<'_, M, F>,
        alloc: &mut A,
        bus: u8,
    ) -> Result<bool, ContextError>
    where
        M: PhysMem + ?Sized,
        F: CacheFlush + ?Sized,
        A: FrameAllocator + ?Sized,
    {
        let slot = &mut self.context_tables[usize::from(bus)];
        if slot.is_some() {
            return Ok(false);
        }
        let table = alloc.alloc_frame().ok_or(ContextError::OutOfFrames)?;
        tm.fill_table(table, 0);
        // Upper half of the root entry is reserved and already zero.
        let entry = PhysAddr(self.root.0 + u64::from(bus) * ENTRY_SIZE);
        tm.write_entry(entry, (table.0 & ADDR_MASK) | root_entry::PRESENT);
        *slot = Some(table);
        Ok(true)
    }

    /// Address of the context entry of `bdf`, if its bus has a table.
    pub fn entry_addr(&self, bdf: Bdf) -> Option<PhysAddr> {
        self.context_table(bdf.bus())
            .map(|t| PhysAddr(t.0 + u64::from(bdf.devfn()) * ENTRY_SIZE))
    }

    pub fn read_context<M: PhysMem + ?Sized>(&self, mem: &M, bdf: Bdf) -> Option<ContextEntry> {
        self.entry_addr(bdf)
            .map(|a| ContextEntry::decode(mem.read_u128(a)))
    }

    /// Replaces `expected_old` by `new` with ONE atomic 16-byte compare-exchange, so hardware
    /// sees either the old or the new entry, never a mix and never a not-present gap (§9.3 says
    /// software must not rely on any other ordering of 64-bit halves). Never allocates.
    /// The caller owes the invalidations for the old domain (context-cache device-selective +
    /// IOTLB domain-selective, see [`crate::invalidation::owner_switch`]).
    pub fn switch_context<M, F>(
        &self,
        tm: TableMemory<'_, M, F>,
        bdf: Bdf,
        expected_old: ContextEntry,
        new: ContextEntry,
    ) -> Result<(), ContextError>
    where
        M: PhysMem + ?Sized,
        F: CacheFlush + ?Sized,
    {
        let at = self
            .entry_addr(bdf)
            .ok_or(ContextError::NoContextTable { bus: bdf.bus() })?;
        tm.exchange_entry(at, expected_old.encode(), new.encode())
            .map_err(|found| ContextError::Changed {
                bdf,
                found: ContextEntry::decode(found),
            })
    }

    /// Frees the root and all context tables (not the page tables they point to). Only after
    /// translation is disabled or RTADDR points elsewhere.
    pub fn free<A: FrameAllocator + ?Sized>(self, alloc: &mut A) {
        self.context_tables
            .iter()
            .flatten()
            .for_each(|t| alloc.free_frame(*t));
        alloc.free_frame(self.root);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table_memory::test_flush::RecordingFlush;
    use lazaret_types::sim::{SimFrameAllocator, SimMemory};

    #[test]
    fn context_entry_layout_matches_section_9_3() {
        let e = ContextEntry {
            present: true,
            fault_processing_disable: true,
            translation_type: TranslationType::PassThrough,
            slpt_root: PhysAddr(0x12_3456_7000),
            address_width: 2,
            domain_id: 0xbeef,
        };
        let raw = e.encode();
        assert_eq!(raw as u64, 0x12_3456_7000 | 0b1011);
        assert_eq!((raw >> 64) as u64, (0xbeef << 8) | 2);
        assert_eq!(raw & CONTEXT_RESERVED, 0);
        assert_eq!(ContextEntry::decode(raw), e);
        assert_eq!(ContextEntry::NOT_PRESENT.encode(), 0);
        let t = ContextEntry::translated(PhysAddr(0x5000), Levels::Five, 7);
        assert_eq!(t.levels(), Some(Levels::Five));
        assert_eq!(t.address_width, 3);
    }

    #[test]
    fn ensure_bus_allocates_once_and_links_the_root_entry() {
        let mem = SimMemory::new();
        let flush = RecordingFlush::default();
        let tm = TableMemory::new(&mem, &flush);
        let mut alloc = SimFrameAllocator::new(&mem, PhysAddr(0x10_0000), 8);
        let mut rt = RootTable::new(tm, &mut alloc).unwrap();
        assert_eq!(rt.ensure_bus(tm, &mut alloc, 3), Ok(true));
        assert_eq!(rt.ensure_bus(tm, &mut alloc, 3), Ok(false));
        assert_eq!(alloc.frames_in_use(), 2);
        let ct = rt.context_table(3).unwrap();
        let root_entry = PhysAddr(rt.address().0 + 3 * 16);
        assert_eq!(mem.read_u64(root_entry), ct.0 | 1);
        assert!(flush.covers(root_entry, 8));
        alloc.fail_allocation(0);
        assert_eq!(
            rt.ensure_bus(tm, &mut alloc, 4),
            Err(ContextError::OutOfFrames)
        );
        assert_eq!(mem.read_u64(PhysAddr(rt.address().0 + 4 * 16)), 0);
        rt.free(&mut alloc);
        assert_eq!(alloc.frames_in_use(), 0);
    }

    #[test]
    fn switch_context_is_one_compare_exchange() {
        let mem = SimMemory::new();
        let flush = RecordingFlush::default();
        let tm = TableMemory::new(&mem, &flush);
        let mut alloc = SimFrameAllocator::new(&mem, PhysAddr(0x10_0000), 8);
        let mut rt = RootTable::new(tm, &mut alloc).unwrap();
        let bdf = Bdf::new(3, 2, 1).unwrap();
        assert_eq!(
            rt.switch_context(
                tm,
                bdf,
                ContextEntry::NOT_PRESENT,
                ContextEntry::NOT_PRESENT
            ),
            Err(ContextError::NoContextTable { bus: 3 })
        );
        rt.ensure_bus(tm, &mut alloc, 3).unwrap();
        let a = ContextEntry::translated(PhysAddr(0x20_0000), Levels::Four, 1);
        let b = ContextEntry::translated(PhysAddr(0x30_0000), Levels::Four, 2);
        rt.switch_context(tm, bdf, ContextEntry::NOT_PRESENT, a)
            .unwrap();
        assert_eq!(rt.read_context(&mem, bdf), Some(a));
        assert!(flush.covers(rt.entry_addr(bdf).unwrap(), 16));
        // A stale expectation changes nothing.
        assert_eq!(
            rt.switch_context(tm, bdf, b, ContextEntry::NOT_PRESENT),
            Err(ContextError::Changed { bdf, found: a })
        );
        rt.switch_context(tm, bdf, a, b).unwrap();
        assert_eq!(rt.read_context(&mem, bdf), Some(b));
        let entry = rt.entry_addr(bdf).unwrap();
        assert_eq!(entry.0 - rt.context_table(3).unwrap().0, 0x11 * 16);
        assert_eq!(alloc.frames_in_use(), 2, "switching allocated nothing");
    }
}
