//! The seams a vendor fills in: how its entries are encoded ([`EntryFormat`]) and how its
//! table writes reach the unit's page walker ([`TableWriter`]).

use lazaret_types::{PhysAddr, PhysMem, PAGE_SIZE};

use crate::depth::Depth;
use crate::quarantine::IdentityRange;

/// What a present or absent entry at some level means to the generic code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    NotPresent,
    /// A pointer to the table one level down.
    Table(PhysAddr),
    /// A page: a 4 KiB leaf at level 1, a large page above.
    Page(PhysAddr),
    /// Something these tables never build (e.g. an AMD NextLevel that skips levels).
    Foreign,
}

/// A vendor's entry encoding. Only what the specs define differently lives here.
pub trait EntryFormat {
    type Levels: Depth;
    /// Leaf access rights (VT-d adds SNP to read/write).
    type Perms: Copy;
    /// A firmware reserved range as this vendor's tables describe it (VT-d RMRR, AMD IVMD).
    type Range: IdentityRange;

    /// Highest byte address an entry's address field can hold: an identity map is refused
    /// beyond it (both vendors: bits 51:12).
    const MAX_ADDRESS: u64;

    /// Whether basic-mode quarantine without any identity range still gets an (empty) root.
    const EMPTY_ROOT_IN_BASIC_MODE: bool;

    /// An entry pointing at `table`, a table of `child_level`. It grants read and write:
    /// both specs AND the rights along the walk, so the leaf decides.
    fn table(table: PhysAddr, child_level: u32) -> u64;

    /// A page of `perms` at `level` (1: 4 KiB, 2: 2 MiB).
    fn page(page: PhysAddr, perms: Self::Perms, level: u32) -> u64;

    /// What `entry`, read from a table at `level`, is.
    fn kind(entry: u64, level: u32) -> EntryKind;

    /// Plain read/write rights (no vendor extras).
    fn perms(read: bool, write: bool) -> Self::Perms;

    /// The read/write rights a page entry grants.
    fn access(entry: u64) -> (bool, bool);

    /// Whether `perms` grants neither read nor write.
    fn grants_nothing(perms: Self::Perms) -> bool;
}

/// How table memory is written so that a unit's page walker sees it.
pub trait TableWriter<E: ?Sized> {
    fn read_u64(&self, addr: PhysAddr) -> u64;
    /// Writes one 8-byte table entry, visible to the walker when this returns.
    fn write_entry(&self, addr: PhysAddr, value: u64);
    /// Sets every entry of an unlinked table to `entry`.
    fn fill_table(&self, table: PhysAddr, entry: u64);
    /// Zeroes a data page (a scratch page: not walked, only DMA'd).
    fn zero_page(&self, page: PhysAddr);
}

/// Formats of units whose table walks snoop the CPU caches (AMD-Vi with Control.Coherent):
/// plain [`PhysMem`] writes reach the walker, so `&M` is a [`TableWriter`] for them. VT-d is
/// not one (ECAP.C may be 0): it writes through its own flushing table memory.
pub trait SnoopedWalks {}

impl<M: PhysMem + ?Sized, E: SnoopedWalks + ?Sized> TableWriter<E> for &M {
    fn read_u64(&self, addr: PhysAddr) -> u64 {
        (**self).read_u64(addr)
    }

    fn write_entry(&self, addr: PhysAddr, value: u64) {
        (**self).write_u64(addr, value);
    }

    fn fill_table(&self, table: PhysAddr, entry: u64) {
        (**self).zero(table, PAGE_SIZE);
        if entry != 0 {
            for i in 0..PAGE_SIZE / 8 {
                (**self).write_u64(PhysAddr(table.0 + 8 * i), entry);
            }
        }
    }

    fn zero_page(&self, page: PhysAddr) {
        (**self).zero(page, PAGE_SIZE);
    }
}
