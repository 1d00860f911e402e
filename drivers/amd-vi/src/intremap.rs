//! Interrupt remapping (AMD IOMMU spec §2.2.5): one interrupt remapping table per device,
//! referenced from bits 255:128 of its DTEs (§2.2.2.1: IV, IntTabLen, IG, Interrupt Table
//! Root Pointer, the pass-through bits, IntCtl), with 32-bit IRTEs (Control.GAEn = 0) or
//! 128-bit ones (GAEn = 1, the unit has EFR.GASup) in remapped (not guest-virtual-APIC) mode.
//!
//! A device's MSI carries address 0xFEE0_0000 and data = the entry's index (data 10:0, the
//! "interrupt table offset"); vector and destination come from the entry, so a device can
//! reach only what its own table says. Every entry starts blocked (RemapEn = 0, SupIOPF = 0:
//! a use is target-aborted and logged as IO_PAGE_FAULT with I = 1). The table is built when
//! the device is added, so quarantining it later only blocks entries — never allocates.
//!
//! Limits: one 4 KiB frame per table (the frame allocator hands out single frames), which is
//! 256 entries of 128 bits; and at most 512 entries in either format, so that MSI data bits
//! 10:9 stay 0 and data 10:8 (which the IOMMU reads first as the message type, §2.2.5) always
//! reads "fixed" or "arbitrated", never NMI / INIT / ExtINT.
//!
//! Changes are atomic: a 128-bit entry is one `cmpxchg16b`; a 32-bit entry is replaced inside
//! its aligned 16-byte group by one `cmpxchg16b` (the other three entries unchanged); the DTE's
//! interrupt half (bits 255:128) is one `cmpxchg16b` too. After a change the caller owes
//! INVALIDATE_INTERRUPT_TABLE (entries) or INVALIDATE_DEVTAB_ENTRY then, fenced,
//! INVALIDATE_INTERRUPT_TABLE (DTE) — see [`crate::AmdViUnit::after_interrupt_dte_change`].

use core::fmt;

use lazaret_types::{FrameAllocator, PhysAddr, PhysMem, PAGE_SIZE};

use crate::device_table::{DeviceTable, DeviceTableError};
use crate::regs::ExtendedFeatures;

/// Most entries a table may have (see the module docs).
pub const MAX_INTERRUPT_ENTRIES: u32 = 512;

/// IRTE size, which the unit's Control.GAEn decides for every table at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrteFormat {
    /// 32-bit entries (GAEn = 0): 8-bit destination.
    Legacy32,
    /// 128-bit entries (GAEn = 1, needs EFR.GASup): 32-bit destination.
    Ga128,
}

impl IrteFormat {
    /// The format Lazaret uses on a unit: 128-bit when it has GASup, else 32-bit.
    /// [`crate::AmdViUnit::bring_up`] sets Control.GAEn to match.
    pub const fn for_unit(features: ExtendedFeatures) -> IrteFormat {
        if features.guest_apic() {
            IrteFormat::Ga128
        } else {
            IrteFormat::Legacy32
        }
    }

    pub const fn entry_bytes(self) -> u64 {
        match self {
            IrteFormat::Legacy32 => 4,
            IrteFormat::Ga128 => 16,
        }
    }

    /// Entries a table of this format may hold: one frame, at most [`MAX_INTERRUPT_ENTRIES`].
    pub const fn max_entries(self) -> u32 {
        let per_frame = (PAGE_SIZE / self.entry_bytes()) as u32;
        if per_frame < MAX_INTERRUPT_ENTRIES {
            per_frame
        } else {
            MAX_INTERRUPT_ENTRIES
        }
    }
}

/// IRTE fields (remapped mode): RemapEn 0, SupIOPF 1, IntType 4:2 (000b fixed), RqEoi 5,
/// DM 6 (0 physical), GuestMode 7 (0); 32-bit: Destination 15:8, Vector 23:16; 128-bit:
/// Destination[23:0] 31:8, Vector 71:64, Destination[31:24] 127:120.
const REMAP_EN: u128 = 1;

/// One remapped interrupt: fixed delivery, physical destination mode, edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Irte {
    pub vector: u8,
    /// Local APIC ID (above 255 only in the 128-bit format).
    pub destination: u32,
}

impl Irte {
    /// The entry's bits in `format` (the low 32 for [`IrteFormat::Legacy32`]).
    pub const fn encode(&self, format: IrteFormat) -> Result<u128, IntRemapError> {
        let vector = self.vector as u128;
        let dst = self.destination as u128;
        match format {
            IrteFormat::Legacy32 => {
                if self.destination > 0xff {
                    return Err(IntRemapError::DestinationTooWide {
                        apic_id: self.destination,
                    });
                }
                Ok(REMAP_EN | (dst << 8) | (vector << 16))
            }
            IrteFormat::Ga128 => {
                Ok(REMAP_EN | ((dst & 0xff_ffff) << 8) | (vector << 64) | ((dst >> 24) << 120))
            }
        }
    }
}

/// What a device programs into its MSI capability to raise entry `index` (§2.2.5: the IOMMU
/// takes the offset from data 10:0; the address carries no destination bits, which QEMU 7.2's
/// amd-iommu insists on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiMessage {
    pub address: u64,
    pub data: u32,
}

impl MsiMessage {
    pub const fn remapped(index: u16) -> MsiMessage {
        MsiMessage {
            address: 0xFEE0_0000,
            data: index as u32,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntRemapError {
    OutOfFrames,
    /// More entries than a table of the format may hold.
    TooManyEntries {
        requested: u32,
        max: u32,
    },
    IndexOutOfRange {
        index: u16,
        entries: u32,
    },
    /// A destination above 255 in a 32-bit entry.
    DestinationTooWide {
        apic_id: u32,
    },
    /// The entry changed under the atomic update.
    ConcurrentUpdate {
        index: u16,
    },
    DeviceTable(DeviceTableError),
}

impl From<DeviceTableError> for IntRemapError {
    fn from(e: DeviceTableError) -> Self {
        IntRemapError::DeviceTable(e)
    }
}

impl fmt::Display for IntRemapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntRemapError::OutOfFrames => write!(f, "out of frames for an interrupt table"),
            IntRemapError::TooManyEntries { requested, max } => {
                write!(
                    f,
                    "{requested} interrupt entries exceed the maximum of {max}"
                )
            }
            IntRemapError::IndexOutOfRange { index, entries } => {
                write!(f, "interrupt index {index} beyond a table of {entries}")
            }
            IntRemapError::DestinationTooWide { apic_id } => {
                write!(f, "APIC ID {apic_id} does not fit a 32-bit interrupt entry")
            }
            IntRemapError::ConcurrentUpdate { index } => {
                write!(
                    f,
                    "interrupt entry {index} changed during its atomic update"
                )
            }
            IntRemapError::DeviceTable(e) => write!(f, "{e}"),
        }
    }
}

/// One device's interrupt remapping table: 2^IntTabLen entries, all blocked when built.
#[derive(Debug, PartialEq, Eq)]
pub struct InterruptTable {
    base: PhysAddr,
    format: IrteFormat,
    /// DTE IntTabLen: 2^len entries.
    len: u8,
}

impl InterruptTable {
    /// A zeroed table (every entry blocked) of at least `count` entries (a power of two, at
    /// least one), in one frame (4 KiB aligned, more than the 128 bytes §2.2.2.1 requires).
    pub fn new<M, A>(
        mem: &M,
        alloc: &mut A,
        format: IrteFormat,
        count: u32,
    ) -> Result<InterruptTable, IntRemapError>
    where
        M: PhysMem + ?Sized,
        A: FrameAllocator + ?Sized,
    {
        let max = format.max_entries();
        if count > max {
            return Err(IntRemapError::TooManyEntries {
                requested: count,
                max,
            });
        }
        let entries = count.max(1).next_power_of_two();
        let base = alloc.alloc_frame().ok_or(IntRemapError::OutOfFrames)?;
        mem.zero(base, PAGE_SIZE);
        Ok(InterruptTable {
            base,
            format,
            len: entries.trailing_zeros() as u8,
        })
    }

    pub fn base(&self) -> PhysAddr {
        self.base
    }

    pub fn format(&self) -> IrteFormat {
        self.format
    }

    pub fn entries(&self) -> u32 {
        1 << self.len
    }

    /// Bits 191:128 of a DTE that remaps through this table (§2.2.2.1): IV = 1, IntTabLen,
    /// IG = 0 (unmapped interrupts are logged), root pointer 51:6, InitPass = EIntPass =
    /// NMIPass = 0, IntCtl = 10b (remapped; 00b aborts, 01b passes unmapped), Lint0Pass =
    /// Lint1Pass = 0: nothing reaches a CPU except what the table says.
    pub fn dte_interrupt_bits(&self) -> u64 {
        const IV: u64 = 1;
        const INT_TAB_LEN_SHIFT: u32 = 1;
        const ROOT_MASK: u64 = 0x000f_ffff_ffff_ffc0;
        const INT_CTL_REMAPPED: u64 = 0b10 << 60;
        IV | (u64::from(self.len) << INT_TAB_LEN_SHIFT)
            | (self.base.0 & ROOT_MASK)
            | INT_CTL_REMAPPED
    }

    /// (16-byte group address, bit shift of the entry inside it, entry mask).
    fn slot(&self, index: u16) -> Result<(PhysAddr, u32, u128), IntRemapError> {
        if u32::from(index) >= self.entries() {
            return Err(IntRemapError::IndexOutOfRange {
                index,
                entries: self.entries(),
            });
        }
        let offset = u64::from(index) * self.format.entry_bytes();
        let group = PhysAddr(self.base.0 + (offset & !15));
        let shift = ((offset & 15) * 8) as u32;
        let mask = match self.format {
            IrteFormat::Legacy32 => 0xffff_ffffu128 << shift,
            IrteFormat::Ga128 => u128::MAX,
        };
        Ok((group, shift, mask))
    }

    /// The raw entry at `index` (low 32 bits for the 32-bit format).
    pub fn read<M: PhysMem + ?Sized>(&self, mem: &M, index: u16) -> Result<u128, IntRemapError> {
        let (group, shift, mask) = self.slot(index)?;
        Ok((mem.read_u128(group) & mask) >> shift)
    }

    /// Entry `index` → `irte`, atomically. The caller then invalidates the table.
    pub fn program<M: PhysMem + ?Sized>(
        &self,
        mem: &M,
        index: u16,
        irte: Irte,
    ) -> Result<(), IntRemapError> {
        let bits = irte.encode(self.format)?;
        self.replace(mem, index, bits)
    }

    /// Entry `index` → blocked (RemapEn = 0, SupIOPF = 0: target abort, logged), atomically;
    /// never allocates. The caller then invalidates the table.
    pub fn block<M: PhysMem + ?Sized>(&self, mem: &M, index: u16) -> Result<(), IntRemapError> {
        self.replace(mem, index, 0)
    }

    /// Every entry → blocked (quarantine); never allocates. The caller then invalidates the
    /// table of each of the device's DeviceIDs (one command each).
    pub fn block_all<M: PhysMem + ?Sized>(&self, mem: &M) -> Result<(), IntRemapError> {
        (0..self.entries() as u16).try_for_each(|i| self.block(mem, i))
    }

    fn replace<M: PhysMem + ?Sized>(
        &self,
        mem: &M,
        index: u16,
        bits: u128,
    ) -> Result<(), IntRemapError> {
        let (group, shift, mask) = self.slot(index)?;
        let current = mem.read_u128(group);
        let new = (current & !mask) | ((bits << shift) & mask);
        mem.compare_exchange_u128(group, current, new)
            .map(|_| ())
            .map_err(|_| IntRemapError::ConcurrentUpdate { index })
    }

    /// Gives the frame back; only once no DTE points at it (and the DTEs were invalidated).
    pub fn free<A: FrameAllocator + ?Sized>(self, alloc: &mut A) {
        alloc.free_frame(self.base);
    }
}

impl DeviceTable {
    /// Points `requester_id`'s DTE at `table` (see [`InterruptTable::dte_interrupt_bits`]) in
    /// one `cmpxchg16b` of bits 255:128; bits 255:192 are kept as they are, bits 127:0 (the
    /// DMA half, [`DeviceTable::switch_owner`]) are not touched. The caller then owes
    /// [`crate::AmdViUnit::after_interrupt_dte_change`].
    pub fn set_interrupt_table<M: PhysMem + ?Sized>(
        &self,
        mem: &M,
        requester_id: u16,
        table: &InterruptTable,
    ) -> Result<(), IntRemapError> {
        self.set_interrupt_bits(mem, requester_id, table.dte_interrupt_bits())
    }

    /// IV = 1, IntCtl = 00b, no pass-through: every interrupt of `requester_id` is
    /// target-aborted (for DeviceIDs with no table, e.g. before a device is added).
    pub fn block_interrupts<M: PhysMem + ?Sized>(
        &self,
        mem: &M,
        requester_id: u16,
    ) -> Result<(), IntRemapError> {
        self.set_interrupt_bits(mem, requester_id, 1)
    }

    fn set_interrupt_bits<M: PhysMem + ?Sized>(
        &self,
        mem: &M,
        requester_id: u16,
        bits: u64,
    ) -> Result<(), IntRemapError> {
        let upper = PhysAddr(self.entry_addr(requester_id)?.0 + 16);
        let current = mem.read_u128(upper);
        let new = (current & !u128::from(u64::MAX)) | u128::from(bits);
        mem.compare_exchange_u128(upper, current, new)
            .map(|_| ())
            .map_err(|found| IntRemapError::DeviceTable(DeviceTableError::Changed { found }))
    }

    /// Bits 191:128 of `requester_id`'s DTE, raw (for logging and tests).
    pub fn interrupt_bits<M: PhysMem + ?Sized>(
        &self,
        mem: &M,
        requester_id: u16,
    ) -> Result<u64, IntRemapError> {
        Ok(mem.read_u64(PhysAddr(self.entry_addr(requester_id)?.0 + 16)))
    }
}

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;
