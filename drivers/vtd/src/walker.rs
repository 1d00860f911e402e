//! Reference walker: interprets root table → context entry → second-level tables from memory
//! the way §3.4–§3.7 and §9 say hardware does, and names the fault a request would raise
//! (§7.1.3 reason codes). Tests and the kernel's property tests use it to prove isolation: what
//! this walker cannot reach, the device cannot reach.

use core::fmt;

use lazaret_types::{Bdf, PhysAddr, PhysMem};

use crate::context::{root_entry, ContextEntry, TranslationType, CONTEXT_RESERVED};
use crate::fault::fault_reason_text;
use crate::levels::Levels;
use crate::pte::{entry_addr, Pte};
use crate::regs::{Capabilities, ExtCapabilities};

/// The unit properties that change how a walk ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkerConfig {
    /// CAP.SAGAW: AW encodings the unit accepts.
    pub sagaw: u8,
    /// CAP.MGAW in bits.
    pub mgaw: u32,
    /// Host address width (DMAR table): address bits at and above it are reserved.
    pub haw: u32,
    /// CAP.SLLPS: bit 0 = 2 MiB, bit 1 = 1 GiB pages.
    pub sllps: u8,
    /// ECAP.PT: pass-through translation type allowed.
    pub pass_through: bool,
}

impl WalkerConfig {
    /// Accepts everything the architecture allows (3/4/5 levels, 57-bit MGAW, 52-bit HAW).
    pub const PERMISSIVE: WalkerConfig = WalkerConfig {
        sagaw: 0b1110,
        mgaw: 57,
        haw: 52,
        sllps: 0b11,
        pass_through: true,
    };

    pub const fn from_unit(cap: Capabilities, ecap: ExtCapabilities, haw: u32) -> WalkerConfig {
        WalkerConfig {
            sagaw: cap.sagaw(),
            mgaw: cap.mgaw(),
            haw,
            sllps: cap.sllps(),
            pass_through: ecap.pass_through(),
        }
    }

    /// Mask of the reserved address bits 51:HAW of an entry.
    const fn reserved_address_bits(&self) -> u64 {
        if self.haw >= 52 {
            0
        } else {
            ((1u64 << 52) - 1) & !((1u64 << self.haw) - 1)
        }
    }
}

/// Why a request was blocked, with the §7.1.3 reason code from [`Fault::reason_code`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 1h: the root entry of the bus is not present.
    RootNotPresent,
    /// 2h: the context entry of the function is not present.
    ContextNotPresent,
    /// 3h: the AW field names a depth the unit does not support.
    UnsupportedAddressWidth { aw: u8 },
    /// 3h: TT is reserved, or pass-through without ECAP.PT.
    UnsupportedTranslationType { tt: TranslationType },
    /// 4h: IOVA above 2^min(AGAW, MGAW) - 1.
    AddressBeyondWidth { iova: u64, width: u32 },
    /// 5h / 6h: an entry on the path has R = W = 0.
    PteNotPresent { level: u32, write: bool },
    /// 5h: write, and W is clear at `level`.
    WriteToReadOnly { level: u32 },
    /// 6h: read, and R is clear at `level`.
    ReadWithoutPermission { level: u32 },
    /// Ah: reserved bits set in the root entry.
    RootReserved,
    /// Bh: reserved bits set in the context entry.
    ContextReserved,
    /// Ch: reserved bits set in a second-level entry.
    PteReserved { level: u32 },
}

impl Fault {
    /// The fault reason the hardware would record (FR field, §7.1.3).
    pub const fn reason_code(&self) -> u8 {
        match self {
            Fault::RootNotPresent => 0x1,
            Fault::ContextNotPresent => 0x2,
            Fault::UnsupportedAddressWidth { .. } | Fault::UnsupportedTranslationType { .. } => 0x3,
            Fault::AddressBeyondWidth { .. } => 0x4,
            Fault::PteNotPresent { write: true, .. } | Fault::WriteToReadOnly { .. } => 0x5,
            Fault::PteNotPresent { write: false, .. } | Fault::ReadWithoutPermission { .. } => 0x6,
            Fault::RootReserved => 0xA,
            Fault::ContextReserved => 0xB,
            Fault::PteReserved { .. } => 0xC,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fault {:#x} ({}): {:?}",
            self.reason_code(),
            fault_reason_text(self.reason_code()),
            self
        )
    }
}

/// [`translate_with`] under [`WalkerConfig::PERMISSIVE`].
pub fn translate<M: PhysMem + ?Sized>(
    mem: &M,
    root_table_addr: PhysAddr,
    bdf: Bdf,
    iova: u64,
    write: bool,
) -> Result<PhysAddr, Fault> {
    translate_with(
        &WalkerConfig::PERMISSIVE,
        mem,
        root_table_addr,
        bdf,
        iova,
        write,
    )
}

/// Translates an untranslated DMA request from `bdf` for `iova` (read or write).
pub fn translate_with<M: PhysMem + ?Sized>(
    cfg: &WalkerConfig,
    mem: &M,
    root_table_addr: PhysAddr,
    bdf: Bdf,
    iova: u64,
    write: bool,
) -> Result<PhysAddr, Fault> {
    let ctx = context_of(cfg, mem, root_table_addr, bdf)?;
    match ctx.translation_type {
        TranslationType::UntranslatedOnly | TranslationType::DeviceTlb => {}
        TranslationType::PassThrough if cfg.pass_through => return Ok(PhysAddr(iova)),
        tt => return Err(Fault::UnsupportedTranslationType { tt }),
    }
    let levels = ctx
        .levels()
        .filter(|l| cfg.sagaw & (1 << l.aw_field()) != 0)
        .ok_or(Fault::UnsupportedAddressWidth {
            aw: ctx.address_width,
        })?;
    let width = levels.address_bits().min(cfg.mgaw);
    if width < 64 && iova >> width != 0 {
        return Err(Fault::AddressBeyondWidth { iova, width });
    }
    walk(cfg, mem, ctx.slpt_root, levels, iova, write)
}

/// Root entry → context entry, with the present and reserved-bit checks of §9.1 and §9.3.
fn context_of<M: PhysMem + ?Sized>(
    cfg: &WalkerConfig,
    mem: &M,
    root_table_addr: PhysAddr,
    bdf: Bdf,
) -> Result<ContextEntry, Fault> {
    let root = mem.read_u128(PhysAddr(root_table_addr.0 + u64::from(bdf.bus()) * 16));
    let lo = root as u64;
    if lo & root_entry::PRESENT == 0 {
        return Err(Fault::RootNotPresent);
    }
    if lo & (root_entry::RESERVED_LO | cfg.reserved_address_bits()) != 0 || root >> 64 != 0 {
        return Err(Fault::RootReserved);
    }
    let table = lo & !0xfff;
    let raw = mem.read_u128(PhysAddr(table + u64::from(bdf.devfn()) * 16));
    let ctx = ContextEntry::decode(raw);
    if !ctx.present {
        return Err(Fault::ContextNotPresent);
    }
    if raw & CONTEXT_RESERVED != 0 || ctx.slpt_root.0 & cfg.reserved_address_bits() != 0 {
        return Err(Fault::ContextReserved);
    }
    Ok(ctx)
}

/// Second-level walk (§3.7, §9.8): access needs R (read) or W (write) at every level.
fn walk<M: PhysMem + ?Sized>(
    cfg: &WalkerConfig,
    mem: &M,
    root: PhysAddr,
    levels: Levels,
    iova: u64,
    write: bool,
) -> Result<PhysAddr, Fault> {
    let mut table = root;
    for level in (1..=levels.count()).rev() {
        let e = Pte(mem.read_u64(entry_addr(table, iova, level)));
        if !e.present() {
            return Err(Fault::PteNotPresent { level, write });
        }
        if e.0 & cfg.reserved_address_bits() != 0 {
            return Err(Fault::PteReserved { level });
        }
        let page_shift = 12 + 9 * (level - 1);
        let large = level > 1 && e.large();
        if large {
            // PS is reserved at PML4E/PML5E and for sizes SLLPS does not list; a large page's
            // address bits below its size are reserved (§9.8).
            let supported = level <= 3 && cfg.sllps & (1 << (level - 2)) != 0;
            let misaligned = e.addr().0 & ((1u64 << page_shift) - 1) != 0;
            if !supported || misaligned {
                return Err(Fault::PteReserved { level });
            }
        }
        if write && !e.writable() {
            return Err(Fault::WriteToReadOnly { level });
        }
        if !write && !e.readable() {
            return Err(Fault::ReadWithoutPermission { level });
        }
        if level == 1 || large {
            return Ok(PhysAddr(e.addr().0 | (iova & ((1u64 << page_shift) - 1))));
        }
        table = e.addr();
    }
    // The loop returns at level 1 at the latest.
    Err(Fault::PteNotPresent { level: 1, write })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::RootTable;
    use crate::pagetable::{PageTable, Perms};
    use crate::pte;
    use crate::table_memory::TableMemory;
    use lazaret_types::sim::{SimFrameAllocator, SimMemory};

    const DEV: Bdf = Bdf::from_requester_id(0x0310);

    /// A root table with bus 3's context table, device 03:02.0 on a 4-level domain that maps
    /// 0x1000 → 0x8000 read-only and 0x2000 → 0x9000 read-write.
    fn setup(mem: &SimMemory) -> (RootTable, PageTable) {
        let tm = TableMemory::coherent(mem);
        let mut alloc = SimFrameAllocator::new(mem, PhysAddr(0x100_0000), 64);
        let mut rt = RootTable::new(tm, &mut alloc).unwrap();
        rt.ensure_bus(tm, &mut alloc, 3).unwrap();
        let mut pt = PageTable::new(tm, &mut alloc, Levels::Four).unwrap();
        pt.map(tm, &mut alloc, 0x1000, PhysAddr(0x8000), Perms::READ)
            .unwrap();
        pt.map(tm, &mut alloc, 0x2000, PhysAddr(0x9000), Perms::READ_WRITE)
            .unwrap();
        let ctx = ContextEntry::translated(pt.root(), Levels::Four, 5);
        rt.switch_context(tm, DEV, ContextEntry::NOT_PRESENT, ctx)
            .unwrap();
        (rt, pt)
    }

    #[test]
    fn translates_with_offsets_and_permissions() {
        let mem = SimMemory::new();
        let (rt, _) = setup(&mem);
        let root = rt.address();
        assert_eq!(
            translate(&mem, root, DEV, 0x1234, false),
            Ok(PhysAddr(0x8234))
        );
        assert_eq!(
            translate(&mem, root, DEV, 0x1234, true),
            Err(Fault::WriteToReadOnly { level: 1 })
        );
        assert_eq!(
            translate(&mem, root, DEV, 0x2ff8, true),
            Ok(PhysAddr(0x9ff8))
        );
        assert_eq!(
            translate(&mem, root, DEV, 0x3000, false),
            Err(Fault::PteNotPresent {
                level: 1,
                write: false
            })
        );
        assert_eq!(
            translate(&mem, root, DEV, 1 << 40, true).map_err(|e| e.reason_code()),
            Err(5)
        );
        assert_eq!(
            translate(&mem, root, DEV, 1 << 48, false),
            Err(Fault::AddressBeyondWidth {
                iova: 1 << 48,
                width: 48
            })
        );
    }

    #[test]
    fn missing_root_and_context_entries_fault() {
        let mem = SimMemory::new();
        let (rt, _) = setup(&mem);
        let other_bus = Bdf::new(4, 2, 0).unwrap();
        let other_fn = Bdf::new(3, 2, 1).unwrap();
        assert_eq!(
            translate(&mem, rt.address(), other_bus, 0x1000, false),
            Err(Fault::RootNotPresent)
        );
        assert_eq!(
            translate(&mem, rt.address(), other_fn, 0x1000, false),
            Err(Fault::ContextNotPresent)
        );
    }

    #[test]
    fn invalid_context_programming_faults() {
        let mem = SimMemory::new();
        let (rt, pt) = setup(&mem);
        let tm = TableMemory::coherent(&mem);
        let good = rt.read_context(&mem, DEV).unwrap();
        // AW naming 5 levels on a unit without 5-level support.
        let cfg = WalkerConfig {
            sagaw: 0b0110,
            mgaw: 48,
            ..WalkerConfig::PERMISSIVE
        };
        let five = ContextEntry::translated(pt.root(), Levels::Five, 5);
        rt.switch_context(tm, DEV, good, five).unwrap();
        assert_eq!(
            translate_with(&cfg, &mem, rt.address(), DEV, 0, false),
            Err(Fault::UnsupportedAddressWidth { aw: 3 })
        );
        let reserved_tt = ContextEntry {
            translation_type: TranslationType::Reserved,
            ..good
        };
        rt.switch_context(tm, DEV, five, reserved_tt).unwrap();
        assert_eq!(
            translate(&mem, rt.address(), DEV, 0x1000, false).map_err(|e| e.reason_code()),
            Err(3)
        );
        let pt_entry = ContextEntry {
            translation_type: TranslationType::PassThrough,
            ..good
        };
        rt.switch_context(tm, DEV, reserved_tt, pt_entry).unwrap();
        assert_eq!(
            translate(&mem, rt.address(), DEV, 0x7777, true),
            Ok(PhysAddr(0x7777))
        );
        // Reserved context bits (bit 71).
        let at = rt.entry_addr(DEV).unwrap();
        mem.write_u64(PhysAddr(at.0 + 8), (1 << 7) | 2);
        assert_eq!(
            translate(&mem, rt.address(), DEV, 0x1000, false),
            Err(Fault::ContextReserved)
        );
    }

    #[test]
    fn reserved_and_large_page_rules() {
        let mem = SimMemory::new();
        let (rt, pt) = setup(&mem);
        let root = rt.address();
        // Make the level-2 entry for IOVA 0x20_0000 a 2 MiB page at 0x4000_0000.
        let l4 = Pte(mem.read_u64(entry_addr(pt.root(), 0, 4))).addr();
        let l3 = Pte(mem.read_u64(entry_addr(l4, 0, 3))).addr();
        let pde = entry_addr(l3, 0x20_0000, 2);
        mem.write_u64(pde, 0x4000_0000 | pte::PAGE_SIZE_BIT | pte::READ);
        assert_eq!(
            translate(&mem, root, DEV, 0x23_4567, false),
            Ok(PhysAddr(0x4003_4567))
        );
        let no_2m = WalkerConfig {
            sllps: 0,
            ..WalkerConfig::PERMISSIVE
        };
        assert_eq!(
            translate_with(&no_2m, &mem, root, DEV, 0x23_4567, false),
            Err(Fault::PteReserved { level: 2 })
        );
        // Misaligned large page.
        mem.write_u64(pde, 0x4000_1000 | pte::PAGE_SIZE_BIT | pte::READ);
        assert_eq!(
            translate(&mem, root, DEV, 0x20_0000, false),
            Err(Fault::PteReserved { level: 2 })
        );
        // Address bits above a 39-bit HAW.
        let haw39 = WalkerConfig {
            haw: 39,
            ..WalkerConfig::PERMISSIVE
        };
        mem.write_u64(pde, (1 << 40) | pte::READ | pte::WRITE);
        assert_eq!(
            translate_with(&haw39, &mem, root, DEV, 0x20_0000, false),
            Err(Fault::PteReserved { level: 2 })
        );
        // PS at the PML4E is reserved.
        let pml4e = entry_addr(pt.root(), 0, 4);
        mem.write_u64(pml4e, l4.0 | pte::PAGE_SIZE_BIT | 3);
        assert_eq!(
            translate(&mem, root, DEV, 0x1000, false),
            Err(Fault::PteReserved { level: 4 })
        );
        // A read-only table pointer restricts writes below it.
        mem.write_u64(pml4e, l4.0 | pte::READ);
        assert_eq!(
            translate(&mem, root, DEV, 0x2000, true),
            Err(Fault::WriteToReadOnly { level: 4 })
        );
        assert_eq!(
            translate(&mem, root, DEV, 0x2000, false),
            Ok(PhysAddr(0x9000))
        );
    }
}
