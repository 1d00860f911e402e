//! Reference walker: interprets device table → DTE → I/O page tables from memory the way the
//! AMD IOMMU spec §2.2.2–§2.2.3 says the IOMMU does, and names the fault a request would
//! raise. Tests (and the kernel's property tests) use it to prove isolation: what this walker
//! cannot reach, the device cannot reach.
//!
//! It is a checker, so it shares nothing with what it checks: every bit position comes from
//! the spec through [`layout`], and nothing is imported from the device-table, page-table,
//! PTE, levels or quarantine builders (their encode/decode helpers would mirror their bugs).
//! [`translate_programmed`] starts from what the unit is programmed with (Device Table Base
//! register, EFR.HATS), so a table smaller than a DeviceID, or a DTE deeper than the unit
//! walks, is refused as hardware refuses it. The caching simulator
//! (`sim_device`, feature `sim`) runs its misses through [`check_dte`] and [`walk_with`].
//!
//! Rules followed, with the spec and QEMU's `amdvi_do_translate` / `amdvi_page_walk`:
//! - DTE\[V\] = 0: the request passes untranslated (pass-through).
//! - V = 1, TV = 0: treated as blocked (conservative; this crate never writes it).
//! - Mode 0: no translation, access decided by DTE IR/IW alone; Mode 7: illegal DTE.
//! - Mode 1..=6: IOVA bits above the depth must be zero; each entry needs PR = 1; IR/IW are
//!   ANDed over the DTE and every level; NextLevel 0 ends the walk (a page of the current
//!   level's size), 7 is a page-size-encoded PTE, a NextLevel lower than `level - 1` skips
//!   levels whose IOVA index bits must be zero, a NextLevel not below the current level is
//!   illegal.

use core::fmt;

use lazaret_types::{Mmio, PhysAddr, PhysMem};

/// Bit layouts, written from the spec (document 48882, rev 3.x).
pub mod layout {
    /// §3.4.1 Device Table Base Address register offset; base 51:12, Size 8:0 = 4 KiB pages - 1.
    pub const REG_DEVICE_TABLE_BASE: usize = 0x0000;
    /// §3.4.6 Extended Feature Register offset; HATS in bits 11:10.
    pub const REG_EXTENDED_FEATURE: usize = 0x0030;
    pub const DTB_SIZE_MASK: u64 = 0x1ff;
    pub const EFR_HATS_SHIFT: u32 = 10;
    /// Physical address bits 51:12 (table bases, DTE root, PTE address).
    pub const ADDRESS_51_12: u64 = 0x000f_ffff_ffff_f000;
    /// §2.2.2.1: 256-bit entries.
    pub const DTE_BYTES: u64 = 32;
    pub const DTE_V: u64 = 1 << 0;
    pub const DTE_TV: u64 = 1 << 1;
    pub const DTE_MODE_SHIFT: u32 = 9;
    pub const DTE_IR: u64 = 1 << 61;
    pub const DTE_IW: u64 = 1 << 62;
    /// Reserved bits 6:2 and 63 of the first quadword.
    pub const DTE_RESERVED_LOW: u64 = (0b1_1111 << 2) | (1 << 63);
    /// DomainID: bits 79:64, i.e. bits 15:0 of the second quadword.
    pub const DTE_DOMAIN_SHIFT: u32 = 64;
    /// §2.2.3 PTE / PDE fields.
    pub const PTE_PR: u64 = 1 << 0;
    pub const PTE_NEXT_LEVEL_SHIFT: u32 = 9;
    pub const PTE_IR: u64 = 1 << 61;
    pub const PTE_IW: u64 = 1 << 62;
    /// NextLevel 7: page size encoded in the address field.
    pub const NEXT_LEVEL_PAGE_SIZE: u32 = 7;
}

use layout::*;

/// Read / write permission, as ANDed down a walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    pub read: bool,
    pub write: bool,
}

impl Access {
    const fn of(entry: u64, r: u64, w: u64) -> Access {
        Access {
            read: entry & r != 0,
            write: entry & w != 0,
        }
    }
    pub const fn and(self, o: Access) -> Access {
        Access {
            read: self.read && o.read,
            write: self.write && o.write,
        }
    }
    pub const fn allows(self, write: bool) -> bool {
        if write {
            self.write
        } else {
            self.read
        }
    }
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The DeviceID is beyond the table programmed in the base register's Size field.
    DeviceIdBeyondTable { requester_id: u16, entries: u32 },
    /// Reserved bits set or Mode = 7 (ILLEGAL_DEV_TABLE_ENTRY).
    IllegalDte { requester_id: u16 },
    /// DTE Mode deeper than the unit walks (EFR.HATS; `max_levels` 0 when HATS is reserved).
    ModeAboveHats {
        requester_id: u16,
        mode: u32,
        max_levels: u32,
    },
    /// V = 1, TV = 0.
    TranslationNotValid,
    /// The DTE's IR/IW refuse this direction (IO_PAGE_FAULT; the blocking DTE ends here).
    Blocked { write: bool },
    /// IOVA above the depth programmed in DTE\[Mode\] (IO_PAGE_FAULT).
    AddressBeyondWidth { iova: u64, levels: u32 },
    /// PR = 0 at `level` (IO_PAGE_FAULT, PR flag clear).
    NotPresent { level: u32 },
    /// IR/IW, ANDed down to `level`, refuse this direction (IO_PAGE_FAULT, PR flag set).
    Permission { level: u32, write: bool },
    /// NextLevel at `level` is not below it (and not 7).
    IllegalNextLevel { level: u32, next: u32 },
    /// A PDE at `level` skips levels whose IOVA index bits are not zero.
    SkippedBitsNonZero { level: u32 },
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = |w: bool| if w { "write" } else { "read" };
        match self {
            Fault::DeviceIdBeyondTable {
                requester_id,
                entries,
            } => write!(f, "device {requester_id:#06x} beyond {entries}-entry table"),
            Fault::IllegalDte { requester_id } => {
                write!(f, "illegal device table entry for {requester_id:#06x}")
            }
            Fault::ModeAboveHats {
                requester_id,
                mode,
                max_levels,
            } => write!(
                f,
                "device {requester_id:#06x}: {mode}-level tables, unit walks {max_levels}"
            ),
            Fault::TranslationNotValid => write!(f, "DTE translation not valid"),
            Fault::Blocked { write } => write!(f, "{} blocked by DTE", dir(*write)),
            Fault::AddressBeyondWidth { iova, levels } => {
                write!(f, "iova {iova:#x} beyond {levels}-level tables")
            }
            Fault::NotPresent { level } => write!(f, "not present at level {level}"),
            Fault::Permission { level, write } => {
                write!(f, "{} not permitted at level {level}", dir(*write))
            }
            Fault::IllegalNextLevel { level, next } => {
                write!(f, "illegal next level {next} at level {level}")
            }
            Fault::SkippedBitsNonZero { level } => {
                write!(f, "skipped-level iova bits not zero below level {level}")
            }
        }
    }
}

/// What a legal DTE says about a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DteDecision {
    /// V = 0: untranslated, unchecked.
    PassThrough,
    /// Mode 0 with the direction allowed: untranslated.
    Untranslated,
    /// Walk `levels` tables from `root`, tagged `domain_id`, DTE permissions `access`.
    Translate {
        root: PhysAddr,
        levels: u32,
        access: Access,
        domain_id: u16,
    },
}

/// Judges the low 128 bits of a DTE for one request; `max_levels` is what EFR.HATS allows.
pub fn check_dte(
    raw: u128,
    requester_id: u16,
    max_levels: u32,
    write: bool,
) -> Result<DteDecision, Fault> {
    let lo = raw as u64;
    if lo & DTE_V == 0 {
        return Ok(DteDecision::PassThrough);
    }
    let mode = ((lo >> DTE_MODE_SHIFT) & 0b111) as u32;
    if lo & DTE_RESERVED_LOW != 0 || mode == 7 {
        return Err(Fault::IllegalDte { requester_id });
    }
    if lo & DTE_TV == 0 {
        return Err(Fault::TranslationNotValid);
    }
    let access = Access::of(lo, DTE_IR, DTE_IW);
    if !access.allows(write) {
        return Err(Fault::Blocked { write });
    }
    if mode == 0 {
        return Ok(DteDecision::Untranslated);
    }
    if mode > max_levels {
        return Err(Fault::ModeAboveHats {
            requester_id,
            mode,
            max_levels,
        });
    }
    Ok(DteDecision::Translate {
        root: PhysAddr(lo & ADDRESS_51_12),
        levels: mode,
        access,
        domain_id: (raw >> DTE_DOMAIN_SHIFT) as u16,
    })
}

/// Entries in the table the Device Table Base register describes (Size + 1 pages).
pub fn programmed_entries(device_table_base: u64) -> u32 {
    (((device_table_base & DTB_SIZE_MASK) + 1) * 4096 / DTE_BYTES) as u32
}

/// Host table depth EFR.HATS allows: 00b 4, 01b 5, 10b 6; 11b reserved → 0 (nothing walks).
pub fn hats_levels(efr: u64) -> u32 {
    match (efr >> EFR_HATS_SHIFT) & 0b11 {
        0 => 4,
        1 => 5,
        2 => 6,
        _ => 0,
    }
}

/// Translates an untranslated DMA request from `requester_id` for `iova` (read or write)
/// through the device table at `dev_table_base` with `dev_table_entries` entries, for a unit
/// that walks up to 6 levels.
pub fn translate<M: PhysMem + ?Sized>(
    mem: &M,
    dev_table_base: PhysAddr,
    dev_table_entries: u32,
    requester_id: u16,
    iova: u64,
    write: bool,
) -> Result<PhysAddr, Fault> {
    translate_in(
        mem,
        dev_table_base,
        dev_table_entries,
        6,
        requester_id,
        iova,
        write,
    )
}

/// Like [`translate`], but from what the unit is programmed with: the table base and Size
/// from the Device Table Base register, the deepest walk from EFR.HATS.
pub fn translate_programmed<M, R>(
    mem: &M,
    regs: &R,
    device_id: u16,
    iova: u64,
    write: bool,
) -> Result<PhysAddr, Fault>
where
    M: PhysMem + ?Sized,
    R: Mmio + ?Sized,
{
    let dtb = regs.read64(REG_DEVICE_TABLE_BASE);
    let hats = hats_levels(regs.read64(REG_EXTENDED_FEATURE));
    let base = PhysAddr(dtb & ADDRESS_51_12);
    translate_in(
        mem,
        base,
        programmed_entries(dtb),
        hats,
        device_id,
        iova,
        write,
    )
}

fn translate_in<M: PhysMem + ?Sized>(
    mem: &M,
    base: PhysAddr,
    entries: u32,
    max_levels: u32,
    requester_id: u16,
    iova: u64,
    write: bool,
) -> Result<PhysAddr, Fault> {
    if u32::from(requester_id) >= entries {
        return Err(Fault::DeviceIdBeyondTable {
            requester_id,
            entries,
        });
    }
    let raw = mem.read_u128(PhysAddr(base.0 + u64::from(requester_id) * DTE_BYTES));
    match check_dte(raw, requester_id, max_levels, write)? {
        DteDecision::PassThrough | DteDecision::Untranslated => Ok(PhysAddr(iova)),
        DteDecision::Translate {
            root,
            levels,
            access,
            ..
        } => {
            walk_with(|_, at| mem.read_u64(at), root, levels, access, iova, write).map(|(pa, _)| pa)
        }
    }
}

/// Walks page tables alone, as a DTE with IR = IW = 1 on `root` (`levels` deep) would.
pub fn walk_tables<M: PhysMem + ?Sized>(
    mem: &M,
    root: PhysAddr,
    levels: u32,
    iova: u64,
    write: bool,
) -> Result<PhysAddr, Fault> {
    let all = Access {
        read: true,
        write: true,
    };
    walk_with(|_, at| mem.read_u64(at), root, levels, all, iova, write).map(|(pa, _)| pa)
}

/// Index of `iova` in a table at `level` (1 = leaf tables): 9 bits from 12 + 9 (level - 1).
const fn index(iova: u64, level: u32) -> u64 {
    let shift = 12 + 9 * (level - 1);
    if shift >= 64 {
        0
    } else {
        (iova >> shift) & 0x1ff
    }
}

/// Bytes one entry at `level` maps.
const fn span(level: u32) -> u64 {
    let shift = 12 + 9 * (level - 1);
    if shift >= 64 {
        u64::MAX
    } else {
        1 << shift
    }
}

/// The walk itself; `read(level, entry_address)` fetches each entry (the simulator serves
/// PDEs from its page-directory cache). Returns the physical address and the permissions
/// ANDed over the DTE and every level.
pub fn walk_with(
    mut read: impl FnMut(u32, PhysAddr) -> u64,
    root: PhysAddr,
    levels: u32,
    mut access: Access,
    iova: u64,
    write: bool,
) -> Result<(PhysAddr, Access), Fault> {
    let bits = 12 + 9 * levels;
    if bits < 64 && iova >> bits != 0 {
        return Err(Fault::AddressBeyondWidth { iova, levels });
    }
    let mut table = root;
    let mut level = levels;
    loop {
        let e = read(level, PhysAddr(table.0 + 8 * index(iova, level)));
        if e & PTE_PR == 0 {
            return Err(Fault::NotPresent { level });
        }
        access = access.and(Access::of(e, PTE_IR, PTE_IW));
        if !access.allows(write) {
            return Err(Fault::Permission { level, write });
        }
        let size = match ((e >> PTE_NEXT_LEVEL_SHIFT) & 0b111) as u32 {
            0 => span(level),
            NEXT_LEVEL_PAGE_SIZE => encoded_page_size(e),
            n if n >= level => return Err(Fault::IllegalNextLevel { level, next: n }),
            n => {
                if (n + 1..level).any(|skipped| index(iova, skipped) != 0) {
                    return Err(Fault::SkippedBitsNonZero { level });
                }
                table = PhysAddr(e & ADDRESS_51_12);
                level = n;
                continue;
            }
        };
        let offset_mask = size.wrapping_sub(1);
        let pa = (e & ADDRESS_51_12 & !offset_mask) | (iova & offset_mask);
        return Ok((PhysAddr(pa), access));
    }
}

/// NextLevel = 7 (§2.2.3 "Page Size Encoding"): the page is 2^(13 + n) bytes where n counts
/// the consecutive ones in the address field from bit 12.
fn encoded_page_size(entry: u64) -> u64 {
    let ones = ((entry & ADDRESS_51_12) >> 12).trailing_ones();
    1u64.checked_shl(13 + ones).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    //! Hand-built tables: raw bit patterns typed from the spec figures, no builder helpers.
    use super::*;
    use lazaret_types::sim::{SimMemory, SimRegisters};

    const DT: PhysAddr = PhysAddr(0x10_0000);
    const PR: u64 = 1;
    const IR: u64 = 1 << 61;
    const IW: u64 = 1 << 62;

    fn put_dte(mem: &SimMemory, rid: u16, raw: u128) {
        mem.write_bytes(PhysAddr(DT.0 + rid as u64 * 32), &raw.to_le_bytes());
    }

    /// PDE: PR, NextLevel `next` (bits 11:9), address, IR | IW.
    fn pde(table: u64, next: u64) -> u64 {
        PR | (next << 9) | table | IR | IW
    }

    fn put(mem: &SimMemory, table: u64, index: u64, e: u64) {
        mem.write_u64(PhysAddr(table + 8 * index), e);
    }

    /// V | TV | Mode | root | IR | IW, DomainID in bits 79:64.
    fn dte(mode: u64, root: u64, did: u16) -> u128 {
        let lo = 0b11 | (mode << 9) | root | IR | IW;
        lo as u128 | ((did as u128) << 64)
    }

    #[test]
    fn dte_states() {
        let mem = SimMemory::new();
        put_dte(&mem, 1, 0); // V = 0
        assert_eq!(
            translate(&mem, DT, 16, 1, 0x1234, true),
            Ok(PhysAddr(0x1234))
        );
        put_dte(&mem, 2, 0b11 | (3 << 64)); // V, TV, Mode 0, no IR/IW: blocking
        assert_eq!(
            translate(&mem, DT, 16, 2, 0x1234, true),
            Err(Fault::Blocked { write: true })
        );
        put_dte(&mem, 3, 1); // V = 1, TV = 0
        assert_eq!(
            translate(&mem, DT, 16, 3, 0, false),
            Err(Fault::TranslationNotValid)
        );
        put_dte(&mem, 4, 0b11 | 0x4); // reserved bit 2
        assert_eq!(
            translate(&mem, DT, 16, 4, 0, false),
            Err(Fault::IllegalDte { requester_id: 4 })
        );
        put_dte(&mem, 5, 0b11 | (7 << 9));
        assert_eq!(
            translate(&mem, DT, 16, 5, 0, false),
            Err(Fault::IllegalDte { requester_id: 5 })
        );
        put_dte(&mem, 6, (0b11 | IR) as u128); // Mode 0, read only
        assert_eq!(
            translate(&mem, DT, 16, 6, 0x5000, false),
            Ok(PhysAddr(0x5000))
        );
        assert_eq!(
            translate(&mem, DT, 16, 6, 0x5000, true),
            Err(Fault::Blocked { write: true })
        );
        put_dte(&mem, 7, (0b11u64 | (1u64 << 63)) as u128); // reserved bit 63
        assert_eq!(
            translate(&mem, DT, 16, 7, 0, false),
            Err(Fault::IllegalDte { requester_id: 7 })
        );
        assert_eq!(
            translate(&mem, DT, 16, 16, 0, false),
            Err(Fault::DeviceIdBeyondTable {
                requester_id: 16,
                entries: 16
            })
        );
    }

    #[test]
    fn blocking_dte_faults_every_access() {
        let mem = SimMemory::new();
        put_dte(&mem, 9, 0b11 | (1 << 64));
        let samples = (0..64u64).map(|i| i.wrapping_mul(0x0400_0000_0000_0000 + 0x1234_5678_9abc));
        for iova in samples.chain([0, u64::MAX, 0xfee0_0000]) {
            for write in [false, true] {
                assert_eq!(
                    translate(&mem, DT, 16, 9, iova, write),
                    Err(Fault::Blocked { write })
                );
            }
        }
    }

    #[test]
    fn programmed_registers_bound_the_table_and_the_depth() {
        let mem = SimMemory::new();
        let regs = SimRegisters::new();
        let (root, l1) = (0x20_0000u64, 0x21_0000u64);
        // 2-level tables: root entry 0 → leaf table, entry 3 → frame 0x7000.
        put(&mem, root, 0, pde(l1, 1));
        put(&mem, l1, 3, PR | 0x7000 | IR | IW);
        // Table of 1 page = 128 entries; HATS = 00b (4 levels).
        regs.set(layout::REG_DEVICE_TABLE_BASE, DT.0);
        regs.set(layout::REG_EXTENDED_FEATURE, 0);
        put_dte(&mem, 0x10, dte(2, root, 5));
        let t = |rid, iova, w| translate_programmed(&mem, &regs, rid, iova, w);
        assert_eq!(t(0x10, 0x3123, true), Ok(PhysAddr(0x7123)));
        // DeviceID 128 is beyond a 1-page table, even with memory holding a DTE there.
        put_dte(&mem, 128, dte(2, root, 5));
        assert_eq!(
            t(128, 0x3000, false),
            Err(Fault::DeviceIdBeyondTable {
                requester_id: 128,
                entries: 128
            })
        );
        regs.set(layout::REG_DEVICE_TABLE_BASE, DT.0 | 1);
        assert_eq!(t(128, 0x3000, false), Ok(PhysAddr(0x7000)));
        // Mode 5 on a HATS = 4 unit is refused before any table is read.
        put_dte(&mem, 0x11, dte(5, root, 5));
        assert_eq!(
            t(0x11, 0, false),
            Err(Fault::ModeAboveHats {
                requester_id: 0x11,
                mode: 5,
                max_levels: 4
            })
        );
        regs.set(layout::REG_EXTENDED_FEATURE, 1 << 10);
        assert_eq!(t(0x11, 0, false), Err(Fault::NotPresent { level: 1 }));
        // HATS = 11b is reserved: nothing translates.
        regs.set(layout::REG_EXTENDED_FEATURE, 3 << 10);
        assert!(matches!(
            t(0x10, 0x3000, false),
            Err(Fault::ModeAboveHats { .. })
        ));
    }

    #[test]
    fn skip_levels_large_pages_and_anded_permissions() {
        let mem = SimMemory::new();
        let (root, l1) = (0x20_0000u64, 0x21_0000u64);
        // 3-level root entry 0 skips level 2 straight to a leaf table.
        put(&mem, root, 0, pde(l1, 1));
        put(&mem, l1, 5, PR | 0x7000 | IR | IW);
        let w = |iova, write| walk_tables(&mem, PhysAddr(root), 3, iova, write);
        assert_eq!(w(0x5008, true), Ok(PhysAddr(0x7008)));
        assert_eq!(
            w((1 << 21) | 0x5000, false),
            Err(Fault::SkippedBitsNonZero { level: 3 })
        );
        // Root entry 1: a 1 GiB page (NextLevel 0 at level 3), read only.
        put(&mem, root, 1, PR | 0x4000_0000 | IR);
        assert_eq!(w((1 << 30) | 0x12_3456, false), Ok(PhysAddr(0x4012_3456)));
        assert_eq!(
            w(1 << 30, true),
            Err(Fault::Permission {
                level: 3,
                write: true
            })
        );
        // Root entry 2: a PDE without IW over a writable leaf: ANDed, so no write.
        let l2 = 0x22_0000u64;
        put(&mem, root, 2, pde(l2, 2) & !IW);
        put(&mem, l2, 0, pde(l1, 1));
        assert_eq!(
            w(2 << 30 | 0x5000, true),
            Err(Fault::Permission {
                level: 3,
                write: true
            })
        );
        assert_eq!(w(2 << 30 | 0x5000, false), Ok(PhysAddr(0x7000)));
        // Root entry 3: NextLevel 7; address bits 12 and 13 set encode 2^(13 + 2) = 32 KiB.
        put(&mem, root, 3, PR | (7 << 9) | 0x9_3000 | IR);
        assert_eq!(w((3 << 30) | 0x5abc, false), Ok(PhysAddr(0x9_5abc)));
        // Root entry 4: NextLevel not below the level.
        put(&mem, root, 4, pde(l1, 3));
        assert_eq!(
            w(4 << 30, false),
            Err(Fault::IllegalNextLevel { level: 3, next: 3 })
        );
        assert_eq!(
            w(1 << 39, false),
            Err(Fault::AddressBeyondWidth {
                iova: 1 << 39,
                levels: 3
            })
        );
        assert_eq!(w(5 << 30, false), Err(Fault::NotPresent { level: 3 }));
        // A leaf entry with IR only refuses writes at level 1.
        put(&mem, l1, 6, PR | 0x8000 | IR);
        assert_eq!(
            w(0x6000, true),
            Err(Fault::Permission {
                level: 1,
                write: true
            })
        );
    }
}
