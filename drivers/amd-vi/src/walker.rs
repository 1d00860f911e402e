//! Reference walker: interprets device table → DTE → I/O page tables from memory the way the
//! AMD IOMMU spec §2.2.2–§2.2.3 says the IOMMU does, and names the fault a request would
//! raise. Tests (and the kernel's property tests) use it to prove isolation: what this walker
//! cannot reach, the device cannot reach.
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

use lazaret_types::{PhysAddr, PhysMem};

use crate::device_table::{DeviceTableEntry, ENTRY_BYTES, RESERVED_LOW};
use crate::levels::Levels;
use crate::pagetable::TranslationRoot;
use crate::pte::{address, entry_addr, is_present, next_level, Perms, ADDR_MASK};

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The DeviceID is beyond the table programmed in the base register's Size field.
    DeviceIdBeyondTable { requester_id: u16, entries: u32 },
    /// Reserved bits set or Mode = 7 (ILLEGAL_DEV_TABLE_ENTRY).
    IllegalDte { requester_id: u16 },
    /// V = 1, TV = 0.
    TranslationNotValid,
    /// The DTE's IR/IW refuse this direction (IO_PAGE_FAULT; the blocking DTE ends here).
    Blocked { write: bool },
    /// IOVA above the depth programmed in DTE\[Mode\] (IO_PAGE_FAULT).
    AddressBeyondWidth { iova: u64, levels: Levels },
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
            Fault::TranslationNotValid => write!(f, "DTE translation not valid"),
            Fault::Blocked { write } => write!(f, "{} blocked by DTE", dir(*write)),
            Fault::AddressBeyondWidth { iova, levels } => {
                write!(f, "iova {iova:#x} beyond {levels} tables")
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

/// Translates an untranslated DMA request from `requester_id` for `iova` (read or write)
/// through the device table at `dev_table_base` with `dev_table_entries` entries.
pub fn translate<M: PhysMem + ?Sized>(
    mem: &M,
    dev_table_base: PhysAddr,
    dev_table_entries: u32,
    requester_id: u16,
    iova: u64,
    write: bool,
) -> Result<PhysAddr, Fault> {
    if u32::from(requester_id) >= dev_table_entries {
        return Err(Fault::DeviceIdBeyondTable {
            requester_id,
            entries: dev_table_entries,
        });
    }
    let raw = mem.read_u128(PhysAddr(
        dev_table_base.0 + u64::from(requester_id) * ENTRY_BYTES,
    ));
    let dte = DeviceTableEntry::decode(raw);
    if !dte.is_valid() {
        return Ok(PhysAddr(iova));
    }
    if (raw as u64) & RESERVED_LOW != 0 || dte.mode() == 7 {
        return Err(Fault::IllegalDte { requester_id });
    }
    if !dte.translation_valid() {
        return Err(Fault::TranslationNotValid);
    }
    if !dte.perms().allows(write) {
        return Err(Fault::Blocked { write });
    }
    match dte.levels() {
        None => Ok(PhysAddr(iova)),
        Some(levels) => walk(mem, dte.root(), levels, dte.perms(), iova, write),
    }
}

/// Walks page tables alone, as a DTE with IR = IW = 1 on `root` would.
pub fn walk_tables<M: PhysMem + ?Sized>(
    mem: &M,
    root: TranslationRoot,
    iova: u64,
    write: bool,
) -> Result<PhysAddr, Fault> {
    walk(
        mem,
        root.root(),
        root.levels(),
        Perms::READ_WRITE,
        iova,
        write,
    )
}

fn walk<M: PhysMem + ?Sized>(
    mem: &M,
    root: PhysAddr,
    levels: Levels,
    mut perms: Perms,
    iova: u64,
    write: bool,
) -> Result<PhysAddr, Fault> {
    if iova > levels.max_iova() {
        return Err(Fault::AddressBeyondWidth { iova, levels });
    }
    let mut table = root;
    let mut level = levels.count();
    loop {
        let e = mem.read_u64(entry_addr(table, Levels::index(iova, level)));
        if !is_present(e) {
            return Err(Fault::NotPresent { level });
        }
        perms = Perms {
            read: perms.read && Perms::from_bits(e).read,
            write: perms.write && Perms::from_bits(e).write,
        };
        if !perms.allows(write) {
            return Err(Fault::Permission { level, write });
        }
        let next = next_level(e);
        let span = match next {
            0 => Levels::entry_span(level),
            7 => encoded_page_size(e),
            n if n >= level => return Err(Fault::IllegalNextLevel { level, next: n }),
            n => {
                if (n + 1..level).any(|skipped| Levels::index(iova, skipped) != 0) {
                    return Err(Fault::SkippedBitsNonZero { level });
                }
                table = address(e);
                level = n;
                continue;
            }
        };
        let offset_mask = span.wrapping_sub(1);
        return Ok(PhysAddr(
            (e & ADDR_MASK & !offset_mask) | (iova & offset_mask),
        ));
    }
}

/// NextLevel = 7 (§2.2.3 "Page Size Encoding"): the page is 2^(13 + n) bytes where n counts
/// the consecutive ones in the address field from bit 12.
fn encoded_page_size(entry: u64) -> u64 {
    let ones = ((entry & ADDR_MASK) >> 12).trailing_ones();
    1u64.checked_shl(13 + ones).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pte::{leaf, pde, IR, IW, PRESENT};
    use lazaret_types::sim::SimMemory;

    const DT: PhysAddr = PhysAddr(0x10_0000);

    fn put_dte(mem: &SimMemory, rid: u16, raw: u128) {
        mem.write_bytes(PhysAddr(DT.0 + rid as u64 * 32), &raw.to_le_bytes());
    }

    #[test]
    fn dte_states() {
        let mem = SimMemory::new();
        put_dte(&mem, 1, 0); // V = 0
        assert_eq!(
            translate(&mem, DT, 16, 1, 0x1234, true),
            Ok(PhysAddr(0x1234))
        );
        put_dte(&mem, 2, DeviceTableEntry::blocking(3).encode());
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
        put_dte(&mem, 9, DeviceTableEntry::blocking(1).encode());
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
    fn skip_levels_large_pages_and_anded_permissions() {
        let mem = SimMemory::new();
        let (root, l1) = (PhysAddr(0x20_0000), PhysAddr(0x21_0000));
        // 3-level root entry 0 skips level 2 straight to a leaf table.
        mem.write_u64(entry_addr(root, 0), pde(l1, 1));
        mem.write_u64(entry_addr(l1, 5), leaf(PhysAddr(0x7000), Perms::READ_WRITE));
        let t = TranslationRoot::new(root, Levels::THREE);
        assert_eq!(walk_tables(&mem, t, 0x5008, true), Ok(PhysAddr(0x7008)));
        assert_eq!(
            walk_tables(&mem, t, (1 << 21) | 0x5000, false),
            Err(Fault::SkippedBitsNonZero { level: 3 })
        );
        // Root entry 1: a 1 GiB page (NextLevel 0 at level 3), read-only PDE over it.
        mem.write_u64(entry_addr(root, 1), PRESENT | 0x4000_0000 | IR);
        assert_eq!(
            walk_tables(&mem, t, (1 << 30) | 0x12_3456, false),
            Ok(PhysAddr(0x4012_3456))
        );
        assert_eq!(
            walk_tables(&mem, t, 1 << 30, true),
            Err(Fault::Permission {
                level: 3,
                write: true
            })
        );
        // Root entry 2: a PDE without IW over a writable leaf: ANDed, so no write.
        let l2 = PhysAddr(0x22_0000);
        mem.write_u64(entry_addr(root, 2), (pde(l2, 2) & !IW) | IR);
        mem.write_u64(entry_addr(l2, 0), pde(l1, 1));
        assert_eq!(
            walk_tables(&mem, t, 2 << 30 | 0x5000, true),
            Err(Fault::Permission {
                level: 3,
                write: true
            })
        );
        // Root entry 3: NextLevel 7; address bits 12 and 13 set encode 2^(13 + 2) = 32 KiB.
        mem.write_u64(entry_addr(root, 3), PRESENT | (7 << 9) | 0x9_3000 | IR);
        assert_eq!(
            walk_tables(&mem, t, (3 << 30) | 0x5abc, false),
            Ok(PhysAddr(0x9_5abc))
        );
        // Root entry 4: NextLevel not below the level.
        mem.write_u64(entry_addr(root, 4), pde(l1, 3));
        assert_eq!(
            walk_tables(&mem, t, 4 << 30, false),
            Err(Fault::IllegalNextLevel { level: 3, next: 3 })
        );
        assert_eq!(
            walk_tables(&mem, t, 1 << 39, false),
            Err(Fault::AddressBeyondWidth {
                iova: 1 << 39,
                levels: Levels::THREE
            })
        );
        assert_eq!(
            walk_tables(&mem, t, 5 << 30, false),
            Err(Fault::NotPresent { level: 3 })
        );
    }
}
