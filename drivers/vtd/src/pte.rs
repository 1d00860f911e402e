//! Second-level paging entries (§9.8): R = bit 0, W = bit 1, PS = bit 7 (large page, only in
//! PDE/PDPE), SNP = bit 11 (leaf only), address in bits 51:12. An entry with R = W = 0 is not
//! present. Permissions are the intersection of R/W over all levels (§3.7.1), so table
//! pointers carry R|W and the leaf decides.
//!
//! The layout is the spec's own and differs from AMD's (no Present bit, no NextLevel, PS for
//! large pages), so it stays here; the table logic shared with AMD-Vi
//! (`lazaret_io_pagetable`) sees it only through [`crate::SecondLevel`].

use lazaret_types::PhysAddr;

use lazaret_io_pagetable::index;

pub const READ: u64 = 1 << 0;
pub const WRITE: u64 = 1 << 1;
pub const PAGE_SIZE_BIT: u64 = 1 << 7;
pub const SNOOP: u64 = 1 << 11;
/// Address field, bits 51:12.
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Access rights of a leaf mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Perms {
    pub read: bool,
    pub write: bool,
    /// Force snooping of this page's DMA (honoured only with ECAP.SC, §10.4.3).
    pub snoop: bool,
}

impl Perms {
    pub const READ: Perms = Perms {
        read: true,
        write: false,
        snoop: false,
    };
    pub const WRITE: Perms = Perms {
        read: false,
        write: true,
        snoop: false,
    };
    pub const READ_WRITE: Perms = Perms {
        read: true,
        write: true,
        snoop: false,
    };

    const fn bits(self) -> u64 {
        (if self.read { READ } else { 0 })
            | (if self.write { WRITE } else { 0 })
            | (if self.snoop { SNOOP } else { 0 })
    }
}

/// A raw second-level entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pte(pub u64);

impl Pte {
    /// A pointer to a next-level table: R|W so that only the leaf restricts access.
    pub const fn table(next: PhysAddr) -> Pte {
        Pte((next.0 & ADDR_MASK) | READ | WRITE)
    }

    /// A 4 KiB leaf.
    pub const fn leaf(page: PhysAddr, perms: Perms) -> Pte {
        Pte((page.0 & ADDR_MASK) | perms.bits())
    }

    /// A 2 MiB leaf: a PDE with PS = 1 (`page` 2 MiB aligned).
    pub const fn large_leaf(page: PhysAddr, perms: Perms) -> Pte {
        Pte(Pte::leaf(page, perms).0 | PAGE_SIZE_BIT)
    }

    pub const fn present(self) -> bool {
        self.0 & (READ | WRITE) != 0
    }

    pub const fn readable(self) -> bool {
        self.0 & READ != 0
    }

    pub const fn writable(self) -> bool {
        self.0 & WRITE != 0
    }

    pub const fn large(self) -> bool {
        self.0 & PAGE_SIZE_BIT != 0
    }

    pub const fn addr(self) -> PhysAddr {
        PhysAddr(self.0 & ADDR_MASK)
    }
}

/// Address of the entry for `iova` in `table`, a table at `level` (1 = leaf table).
pub const fn entry_addr(table: PhysAddr, iova: u64, level: u32) -> PhysAddr {
    PhysAddr(table.0 + index(iova, level) as u64 * 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_follow_section_9_8() {
        let l = Pte::leaf(PhysAddr(0x1234_5000), Perms::READ);
        assert_eq!(l.0, 0x1234_5001);
        assert!(l.present() && l.readable() && !l.writable());
        let t = Pte::table(PhysAddr(0x7000));
        assert_eq!(t.0, 0x7003);
        assert_eq!(t.addr(), PhysAddr(0x7000));
        let s = Pte::leaf(
            PhysAddr(0x9000),
            Perms {
                snoop: true,
                ..Perms::WRITE
            },
        );
        assert_eq!(s.0, 0x9000 | (1 << 11) | 2);
        assert!(!Pte(SNOOP).present());
    }
}
