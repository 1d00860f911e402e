//! The device table (AMD IOMMU spec §2.2.2): one 256-bit entry per DeviceID (requester ID),
//! read by the IOMMU for every untranslated request.
//!
//! Only the low 128 bits are ever written here (§2.2.2.1, Figure "Device Table Entry"): V (0),
//! TV (1), Mode (11:9), Host Page Table Root Pointer (51:12), IR (61), IW (62) and DomainID
//! (79:64) all live there, so an owner switch is ONE `cmpxchg16b` of bits 127:0 and the IOMMU
//! never sees a mix of old and new fields. Bits 255:128 (interrupt remapping) are left as the
//! kernel's interrupt code sets them. Reserved bits (6:2, 63 — QEMU logs
//! ILLEGAL_DEV_TABLE_ENTRY for them) and every field not listed stay zero.
//!
//! QEMU 7.2 quirk: its `amdvi_validate_dte` treated bit 72 (DomainID bit 8) as reserved
//! (`AMDVI_DTE_MIDDLE_QUAD_RESERVED = 0x100`, since fixed), so there a DomainID with bit 8
//! set makes the entry "illegal": DMA blocked and ILLEGAL_DEV_TABLE_ENTRY logged. The kernel
//! should hand out DomainIDs with bit 8 clear ([`QEMU_7_2_BAD_DOMAIN_BIT`]).

use core::fmt;

use lazaret_types::{PhysAddr, PhysMem, PAGE_SIZE};

use crate::levels::Levels;
use crate::pagetable::TranslationRoot;
use crate::pte::{Perms, ADDR_MASK, IR, IW};

/// Bytes per entry (256 bits).
pub const ENTRY_BYTES: u64 = 32;

pub const V: u64 = 1 << 0;
pub const TV: u64 = 1 << 1;
pub const MODE_SHIFT: u32 = 9;
pub const MODE_MASK: u64 = 0b111 << MODE_SHIFT;
/// Reserved bits of the first quadword (6:2, 63; bits 8:7 are HAD, 52 PPR, 53 GPRP).
pub const RESERVED_LOW: u64 = 0x8000_0000_0000_007c;
/// DomainID bit QEMU 7.2 wrongly checks as reserved (see the module docs).
pub const QEMU_7_2_BAD_DOMAIN_BIT: u16 = 1 << 8;

/// The fields of a DTE this crate uses; everything else in bits 127:0 is zero.
///
/// # Which encoding blocks all DMA
///
/// §2.2.2.1 Mode = 000b means "translation disabled, access controlled by IR and IW": with
/// TV = 1, Mode = 0 and IR = IW = 0 every read and every write is refused (target abort, and an
/// IO_PAGE_FAULT unless suppressed). QEMU's `amdvi_page_walk` agrees: Mode 0 takes the
/// `no_remap` path whose permissions are the DTE's IR/IW, here none. Linux programs the same
/// encoding for unused DeviceIDs. The alternatives are worse: V = 0 is *pass-through* (QEMU
/// `amdvi_do_translate`: "DTE\[V\]=0, address is passed untranslated"), and V = 1 with TV = 0
/// is handled differently by QEMU versions (7.2 used IR/IW, later ones abort) — with
/// IR = IW = 0 both block, but the spec leaves TV = 0 with a meaningful root undefined, so we
/// do not rely on it. (Under SEV-SNP hardware would report TV = 1 with a zero root as
/// ILLEGAL_DEV_TABLE_ENTRY — still a block; SNP is out of scope.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceTableEntry {
    valid: bool,
    translation_valid: bool,
    mode: u8,
    root: PhysAddr,
    perms: Perms,
    domain_id: u16,
}

impl DeviceTableEntry {
    /// V = 1, TV = 1, Mode = 0, IR = IW = 0: every DMA of the device is refused (see above).
    pub const fn blocking(domain_id: u16) -> DeviceTableEntry {
        DeviceTableEntry {
            valid: true,
            translation_valid: true,
            mode: 0,
            root: PhysAddr(0),
            perms: Perms::NONE,
            domain_id,
        }
    }

    /// Translation through `tables`: Mode comes from the same [`Levels`] the tables were
    /// built with, root and depth travel together in [`TranslationRoot`]. IR = IW = 1 at the
    /// DTE level, so the leaf PTEs decide (permissions are ANDed, §2.2.3).
    pub const fn translated(tables: TranslationRoot, domain_id: u16) -> DeviceTableEntry {
        DeviceTableEntry {
            valid: true,
            translation_valid: true,
            mode: tables.levels().mode(),
            root: tables.root(),
            perms: Perms::READ_WRITE,
            domain_id,
        }
    }

    pub const fn is_valid(&self) -> bool {
        self.valid
    }
    pub const fn translation_valid(&self) -> bool {
        self.translation_valid
    }
    /// Table depth programmed; `None` for Mode 0 (no translation) or the reserved 7.
    pub const fn levels(&self) -> Option<Levels> {
        Levels::new(self.mode)
    }
    pub const fn mode(&self) -> u8 {
        self.mode
    }
    pub const fn root(&self) -> PhysAddr {
        self.root
    }
    pub const fn perms(&self) -> Perms {
        self.perms
    }
    pub const fn domain_id(&self) -> u16 {
        self.domain_id
    }

    /// Whether this is the blocking encoding.
    pub const fn is_blocking(&self) -> bool {
        self.valid && self.translation_valid && self.mode == 0 && self.perms.is_none()
    }

    /// Bits 127:0 of the entry.
    pub const fn encode(&self) -> u128 {
        let mut lo = (self.mode as u64) << MODE_SHIFT | (self.root.0 & ADDR_MASK);
        if self.valid {
            lo |= V;
        }
        if self.translation_valid {
            lo |= TV;
        }
        lo |= self.perms.bits();
        (lo as u128) | ((self.domain_id as u128) << 64)
    }

    /// Reads the fields back from bits 127:0 (other bits are ignored).
    pub const fn decode(raw: u128) -> DeviceTableEntry {
        let lo = raw as u64;
        DeviceTableEntry {
            valid: lo & V != 0,
            translation_valid: lo & TV != 0,
            mode: ((lo & MODE_MASK) >> MODE_SHIFT) as u8,
            root: PhysAddr(lo & ADDR_MASK),
            perms: Perms {
                read: lo & IR != 0,
                write: lo & IW != 0,
            },
            domain_id: (raw >> 64) as u16,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceTableError {
    /// The table base must be 4 KiB aligned (§3.4.1).
    UnalignedBase(PhysAddr),
    /// The requester ID has no entry in this table.
    BeyondTable { requester_id: u16, entries: u32 },
    /// The entry changed under us: the compare-exchange found `found` (nothing written).
    Changed { found: u128 },
}

impl fmt::Display for DeviceTableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceTableError::UnalignedBase(b) => {
                write!(f, "device table base {b} not 4 KiB aligned")
            }
            DeviceTableError::BeyondTable {
                requester_id,
                entries,
            } => write!(
                f,
                "requester id {requester_id:#06x} beyond the {entries}-entry device table"
            ),
            DeviceTableError::Changed { found } => {
                write!(
                    f,
                    "device table entry changed concurrently (found {found:#x})"
                )
            }
        }
    }
}

/// A device table at a caller-provided physically contiguous base.
///
/// The table spans several 4 KiB frames for more than 128 DeviceIDs and
/// [`lazaret_types::FrameAllocator`] hands out single frames, so the kernel allocates
/// [`DeviceTable::bytes_for`] contiguous bytes itself (its buddy allocator) and passes the
/// base; this type never frees it.
#[derive(Debug, PartialEq, Eq)]
pub struct DeviceTable {
    base: PhysAddr,
    entries: u32,
}

impl DeviceTable {
    /// Bytes needed for DeviceIDs `0..=max_requester_id`, rounded up to whole 4 KiB pages as
    /// the base register's Size field counts them.
    pub const fn bytes_for(max_requester_id: u16) -> u64 {
        let bytes = (max_requester_id as u64 + 1) * ENTRY_BYTES;
        bytes.div_ceil(PAGE_SIZE) * PAGE_SIZE
    }

    /// Takes the memory at `base` and makes every entry [`DeviceTableEntry::blocking`], so no
    /// DeviceID passes through (V = 0 would) once IommuEn is set.
    pub fn new<M: PhysMem + ?Sized>(
        mem: &M,
        base: PhysAddr,
        max_requester_id: u16,
    ) -> Result<DeviceTable, DeviceTableError> {
        if !base.is_page_aligned() {
            return Err(DeviceTableError::UnalignedBase(base));
        }
        let bytes = DeviceTable::bytes_for(max_requester_id);
        mem.zero(base, bytes);
        let table = DeviceTable {
            base,
            entries: (bytes / ENTRY_BYTES) as u32,
        };
        let blocking = DeviceTableEntry::blocking(0).encode();
        for rid in 0..table.entries {
            let at = PhysAddr(base.0 + rid as u64 * ENTRY_BYTES);
            mem.write_bytes(at, &blocking.to_le_bytes());
        }
        Ok(table)
    }

    pub fn base(&self) -> PhysAddr {
        self.base
    }

    /// Number of entries (a multiple of 128).
    pub fn entries(&self) -> u32 {
        self.entries
    }

    /// The Device Table Base Address register value (§3.4.1): base, Size = pages - 1.
    pub fn base_register(&self) -> u64 {
        let pages = self.entries as u64 * ENTRY_BYTES / PAGE_SIZE;
        (self.base.0 & crate::regs::BASE_MASK) | (pages - 1)
    }

    /// Whether `device_id` has an entry here. Check every ID of a device (aliases too) before
    /// the first write, so an add never fails half-way with some DTEs already pointing at
    /// tables that are then freed.
    pub fn covers(&self, device_id: u16) -> bool {
        u32::from(device_id) < self.entries
    }

    /// [`Self::covers`] for every ID.
    pub fn covers_all(&self, device_ids: &[u16]) -> bool {
        device_ids.iter().all(|&id| self.covers(id))
    }

    /// Address of the entry of `requester_id`.
    pub fn entry_addr(&self, requester_id: u16) -> Result<PhysAddr, DeviceTableError> {
        if !self.covers(requester_id) {
            return Err(DeviceTableError::BeyondTable {
                requester_id,
                entries: self.entries,
            });
        }
        Ok(PhysAddr(self.base.0 + requester_id as u64 * ENTRY_BYTES))
    }

    pub fn read<M: PhysMem + ?Sized>(
        &self,
        mem: &M,
        requester_id: u16,
    ) -> Result<DeviceTableEntry, DeviceTableError> {
        Ok(DeviceTableEntry::decode(
            mem.read_u128(self.entry_addr(requester_id)?),
        ))
    }

    /// One atomic 16-byte compare-exchange of bits 127:0 from `current` to `new`; fails with
    /// [`DeviceTableError::Changed`] (writing nothing) when the entry is not `current`.
    pub fn exchange<M: PhysMem + ?Sized>(
        &self,
        mem: &M,
        requester_id: u16,
        current: DeviceTableEntry,
        new: DeviceTableEntry,
    ) -> Result<(), DeviceTableError> {
        let at = self.entry_addr(requester_id)?;
        mem.compare_exchange_u128(at, current.encode(), new.encode())
            .map(|_| ())
            .map_err(|found| DeviceTableError::Changed { found })
    }

    /// Switches `requester_id` to `new` in one atomic write and returns the previous entry,
    /// whose DomainID the caller invalidates (INVALIDATE_IOMMU_PAGES) before trusting the
    /// switch. Never passes through an invalid or blocking state.
    pub fn switch_owner<M: PhysMem + ?Sized>(
        &self,
        mem: &M,
        requester_id: u16,
        new: DeviceTableEntry,
    ) -> Result<DeviceTableEntry, DeviceTableError> {
        let at = self.entry_addr(requester_id)?;
        let raw = mem.read_u128(at);
        mem.compare_exchange_u128(at, raw, new.encode())
            .map(DeviceTableEntry::decode)
            .map_err(|found| DeviceTableError::Changed { found })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lazaret_types::sim::SimMemory;

    #[test]
    fn encodes_fields_at_the_spec_bit_positions() {
        let root = TranslationRoot::new(PhysAddr(0x1234_5000), Levels::FOUR);
        let raw = DeviceTableEntry::translated(root, 0xbeef).encode();
        let lo = raw as u64;
        assert_eq!(lo & 0b11, 0b11, "V and TV");
        assert_eq!((lo >> 9) & 7, 4, "Mode = levels");
        assert_eq!(lo & ADDR_MASK, 0x1234_5000);
        assert_eq!(lo >> 61 & 0b11, 0b11, "IR, IW");
        assert_eq!((raw >> 64) as u16, 0xbeef);
        assert_eq!(raw >> 80, 0);
        assert_eq!(lo & RESERVED_LOW, 0);
        let d = DeviceTableEntry::decode(raw);
        assert_eq!(d.levels(), Some(Levels::FOUR));
        assert_eq!(d.root(), PhysAddr(0x1234_5000));
        assert_eq!(d.domain_id(), 0xbeef);
    }

    #[test]
    fn blocking_entry_is_valid_untranslated_without_access() {
        let b = DeviceTableEntry::blocking(7);
        assert_eq!(b.encode(), 0b11 | (7u128 << 64));
        assert!(b.is_blocking());
        assert_eq!(b.levels(), None);
    }

    #[test]
    fn table_size_rounds_to_pages_and_starts_blocking() {
        assert_eq!(DeviceTable::bytes_for(0), 4096);
        assert_eq!(DeviceTable::bytes_for(127), 4096);
        assert_eq!(DeviceTable::bytes_for(128), 8192);
        assert_eq!(DeviceTable::bytes_for(0xffff), 2 << 20);
        let mem = SimMemory::new();
        mem.write_u64(PhysAddr(0x20_0000 + 32 * 5), 0xdead);
        let t = DeviceTable::new(&mem, PhysAddr(0x20_0000), 0xff).unwrap();
        assert_eq!(t.entries(), 256);
        assert_eq!(t.base_register(), 0x20_0000 | 1);
        for rid in 0..=255 {
            assert!(t.read(&mem, rid).unwrap().is_blocking());
        }
        assert_eq!(
            t.read(&mem, 256),
            Err(DeviceTableError::BeyondTable {
                requester_id: 256,
                entries: 256
            })
        );
        assert_eq!(
            DeviceTable::new(&mem, PhysAddr(0x20_0010), 1),
            Err(DeviceTableError::UnalignedBase(PhysAddr(0x20_0010)))
        );
    }

    #[test]
    fn switch_is_one_exchange_that_keeps_the_upper_half() {
        let mem = SimMemory::new();
        let t = DeviceTable::new(&mem, PhysAddr(0x20_0000), 0x10).unwrap();
        let upper = PhysAddr(0x20_0000 + 3 * 32 + 16);
        mem.write_u64(upper, 0x1234); // interrupt remapping bits: not ours
        let root = TranslationRoot::new(PhysAddr(0x8000), Levels::THREE);
        let new = DeviceTableEntry::translated(root, 9);
        let prev = t.switch_owner(&mem, 3, new).unwrap();
        assert!(prev.is_blocking());
        assert_eq!(t.read(&mem, 3).unwrap(), new);
        assert_eq!(mem.read_u64(upper), 0x1234);
        let stale = DeviceTableEntry::blocking(0);
        assert!(matches!(
            t.exchange(&mem, 3, stale, stale),
            Err(DeviceTableError::Changed { .. })
        ));
        assert_eq!(
            t.read(&mem, 3).unwrap(),
            new,
            "failed exchange wrote nothing"
        );
        t.exchange(&mem, 3, new, stale).unwrap();
        assert!(t.read(&mem, 3).unwrap().is_blocking());
    }
}
