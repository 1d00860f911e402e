//! I/O page-table entry layout (AMD IOMMU spec §2.2.3, "I/O Page Table Entry" and
//! "I/O Page Directory Entry" formats). PDEs and PTEs share one layout:
//!
//! | bits  | field |
//! |-------|-------|
//! | 0     | PR: present |
//! | 11:9  | NextLevel: level of the table pointed to; 0 = this is a PTE (a page), 7 = PTE with a page-size encoding |
//! | 51:12 | address of the next table or of the page |
//! | 61    | IR: reads allowed |
//! | 62    | IW: writes allowed |
//!
//! IR/IW are ANDed along the whole walk, the DTE's included (§2.2.3: "the effective
//! permission is the logical AND of all levels"), so every PDE this crate writes grants both
//! and the leaf decides.
//!
//! The layout is the spec's own and differs from VT-d's (Present bit, NextLevel instead of
//! PS, IR/IW at 61/62), so it stays here; the table logic shared with VT-d
//! (`lazaret_io_pagetable`) sees it only through [`crate::IoPageTable`].

use lazaret_types::PhysAddr;

pub const PRESENT: u64 = 1 << 0;
pub const NEXT_LEVEL_SHIFT: u32 = 9;
pub const NEXT_LEVEL_MASK: u64 = 0b111 << NEXT_LEVEL_SHIFT;
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
pub const IR: u64 = 1 << 61;
pub const IW: u64 = 1 << 62;

/// Access rights of a mapping (IR / IW).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Perms {
    pub read: bool,
    pub write: bool,
}

impl Perms {
    pub const NONE: Perms = Perms {
        read: false,
        write: false,
    };
    pub const READ: Perms = Perms {
        read: true,
        write: false,
    };
    pub const READ_WRITE: Perms = Perms {
        read: true,
        write: true,
    };

    pub const fn bits(self) -> u64 {
        (if self.read { IR } else { 0 }) | (if self.write { IW } else { 0 })
    }

    pub const fn from_bits(entry: u64) -> Perms {
        Perms {
            read: entry & IR != 0,
            write: entry & IW != 0,
        }
    }

    pub const fn is_none(self) -> bool {
        !self.read && !self.write
    }

    pub const fn union(self, other: Perms) -> Perms {
        Perms {
            read: self.read || other.read,
            write: self.write || other.write,
        }
    }

    /// Whether an access in direction `write` is allowed.
    pub const fn allows(self, write: bool) -> bool {
        if write {
            self.write
        } else {
            self.read
        }
    }
}

/// A PDE pointing to the table of `child_level` at `table`, granting R/W (the leaf decides).
pub const fn pde(table: PhysAddr, child_level: u32) -> u64 {
    PRESENT | ((child_level as u64) << NEXT_LEVEL_SHIFT) | (table.0 & ADDR_MASK) | IR | IW
}

/// A 4 KiB leaf PTE (NextLevel = 0) for `page`.
pub const fn leaf(page: PhysAddr, perms: Perms) -> u64 {
    PRESENT | (page.0 & ADDR_MASK) | perms.bits()
}

pub const fn is_present(entry: u64) -> bool {
    entry & PRESENT != 0
}

pub const fn next_level(entry: u64) -> u32 {
    ((entry & NEXT_LEVEL_MASK) >> NEXT_LEVEL_SHIFT) as u32
}

pub const fn address(entry: u64) -> PhysAddr {
    PhysAddr(entry & ADDR_MASK)
}

/// Physical address of entry `index` of the table at `table`.
pub const fn entry_addr(table: PhysAddr, index: usize) -> PhysAddr {
    PhysAddr(table.0 + 8 * index as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pde_and_leaf_round_trip() {
        let d = pde(PhysAddr(0x1234_5000), 2);
        assert!(is_present(d));
        assert_eq!(next_level(d), 2);
        assert_eq!(address(d), PhysAddr(0x1234_5000));
        assert_eq!(Perms::from_bits(d), Perms::READ_WRITE);
        let l = leaf(PhysAddr(0xabc_d000), Perms::READ);
        assert_eq!(next_level(l), 0);
        assert_eq!(Perms::from_bits(l), Perms::READ);
        assert_eq!(l, 1 | 0xabc_d000 | (1 << 61));
    }
}
