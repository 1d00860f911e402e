//! IVHD, the I/O Virtualization Hardware Definition block: one IOMMU and the devices it
//! translates for (AMD IOMMU spec rev 3.x §5.2.2).
//!
//! Layout shared by all three types (offsets within the block):
//! 0 type, 1 flags, 2 length (u16), 4 IOMMU DeviceID, 6 capability offset, 8 IOMMU base
//! address (u64), 16 PCI segment group, 18 IOMMU info, 20 feature reporting (10h) or IOMMU
//! attributes (11h/40h). Types 11h and 40h add the EFR register image at 24 and EFR2 at 32
//! (called "Reserved" for 11h in the oldest rev 3 texts; Linux and QEMU treat it as EFR2 for
//! both, and so do we). Device entries follow the header.
use core::fmt;

use lazaret_types::{Bdf, PhysAddr, Sbdf};

use super::entry::{parse_entries, DeviceEntry};
use super::facts::{expand, DeviceFacts, FactError};
use super::Vec;
use crate::reader::{ParseError, Reader};

/// Header size of a type 10h IVHD.
pub const IVHD_10H_HEADER_LEN: usize = 24;
/// Header size of a type 11h or 40h IVHD.
pub const IVHD_11H_HEADER_LEN: usize = 40;

/// The IVHD flavour. Ordered: a later type describes the same IOMMU more completely.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IvhdType {
    /// 10h: legacy block, feature reporting only (every AMD-Vi OS understands it).
    Fixed10 = 0x10,
    /// 11h: adds the EFR register image.
    Fixed11 = 0x11,
    /// 40h: like 11h, and may carry F0h ACPI HID device entries.
    Mixed40 = 0x40,
}

impl IvhdType {
    pub const fn from_raw(kind: u8) -> Option<IvhdType> {
        match kind {
            0x10 => Some(IvhdType::Fixed10),
            0x11 => Some(IvhdType::Fixed11),
            0x40 => Some(IvhdType::Mixed40),
            _ => None,
        }
    }

    pub const fn raw(self) -> u8 {
        self as u8
    }

    pub const fn header_len(self) -> usize {
        match self {
            IvhdType::Fixed10 => IVHD_10H_HEADER_LEN,
            IvhdType::Fixed11 | IvhdType::Mixed40 => IVHD_11H_HEADER_LEN,
        }
    }
}

/// IVHD flags byte (spec rev 3.x, IVHD "Flags"). Bits 7:6 are defined for 10h only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IvhdFlags(pub u8);

impl IvhdFlags {
    pub const HT_TUN_EN: u8 = 1 << 0;
    pub const PASS_PW: u8 = 1 << 1;
    pub const RES_PASS_PW: u8 = 1 << 2;
    pub const ISOC: u8 = 1 << 3;
    pub const IOTLB_SUP: u8 = 1 << 4;
    pub const COHERENT: u8 = 1 << 5;
    /// 10h only.
    pub const PREF_SUP: u8 = 1 << 6;
    /// 10h only.
    pub const PPR_SUP: u8 = 1 << 7;

    pub const fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
}

/// IOMMU info field: the MSI vector number and HyperTransport unit ID.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IommuInfo(pub u16);

impl IommuInfo {
    /// Bits 4:0: MSI message number of the IOMMU's event interrupt.
    pub const fn msi_num(self) -> u8 {
        (self.0 & 0x1f) as u8
    }
    /// Bits 12:8: HyperTransport UnitID.
    pub const fn unit_id(self) -> u8 {
        ((self.0 >> 8) & 0x1f) as u8
    }
}

/// One IVHD block: an IOMMU and its device entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ivhd<'a> {
    /// Offset of the block in the table.
    pub offset: usize,
    pub kind: IvhdType,
    pub flags: IvhdFlags,
    pub length: u16,
    /// Requester ID of the IOMMU's own PCI function.
    pub iommu_bdf: Bdf,
    /// Offset of the IOMMU capability block in that function's config space.
    pub capability_offset: u16,
    /// MMIO base of the IOMMU registers.
    pub base_address: PhysAddr,
    pub segment: u16,
    pub iommu_info: IommuInfo,
    /// 10h: IOMMU feature reporting; 11h/40h: IOMMU attributes. Kept raw: the EFR image
    /// (or the EFR register itself) is the authoritative feature source.
    pub features: u32,
    /// 11h/40h: image of the Extended Feature Register (MMIO 0x30).
    pub efr: Option<u64>,
    /// 11h/40h: image of the Extended Feature 2 Register (MMIO 0x1A0).
    pub efr2: Option<u64>,
    pub entries: Vec<DeviceEntry<'a>>,
}

impl<'a> Ivhd<'a> {
    /// Parses a block whose type is an IVHD type; `r` holds exactly its `length` bytes,
    /// which the caller has checked is at least the header size for that type.
    pub(super) fn parse(kind: IvhdType, mut r: Reader<'a>) -> Result<Ivhd<'a>, ParseError> {
        let offset = r.table_offset();
        r.skip(1)?;
        let flags = IvhdFlags(r.u8()?);
        let length = r.u16()?;
        let iommu_bdf = Bdf::from_requester_id(r.u16()?);
        let capability_offset = r.u16()?;
        let base_address = PhysAddr(r.u64()?);
        let segment = r.u16()?;
        let iommu_info = IommuInfo(r.u16()?);
        let features = r.u32()?;
        let (efr, efr2) = match kind {
            IvhdType::Fixed10 => (None, None),
            IvhdType::Fixed11 | IvhdType::Mixed40 => (Some(r.u64()?), Some(r.u64()?)),
        };
        Ok(Ivhd {
            offset,
            kind,
            flags,
            length,
            iommu_bdf,
            capability_offset,
            base_address,
            segment,
            iommu_info,
            features,
            efr,
            efr2,
            entries: parse_entries(r)?,
        })
    }

    /// The IOMMU's own PCI function, with its segment: the key that ties the 10h, 11h and
    /// 40h blocks describing the same IOMMU together.
    pub const fn iommu(&self) -> Sbdf {
        Sbdf::new(self.segment, self.iommu_bdf)
    }

    /// The requester IDs this IOMMU's entries cover, with their DTE settings and aliases,
    /// ranges paired up. See [`DeviceFacts`].
    pub fn device_facts(&self) -> Result<DeviceFacts<'a>, FactError> {
        expand(&self.entries)
    }
}

impl fmt::Display for Ivhd<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IVHD {:02x}h @{:#x}: IOMMU {} cap {:#x} base {:#x} flags {:#04x} info {:#06x} features {:#010x}",
            self.kind.raw(),
            self.offset,
            self.iommu(),
            self.capability_offset,
            self.base_address.as_u64(),
            self.flags.0,
            self.iommu_info.0,
            self.features
        )?;
        if let Some(efr) = self.efr {
            write!(f, " EFR {efr:#018x}")?;
        }
        if let Some(efr2) = self.efr2 {
            write!(f, " EFR2 {efr2:#018x}")?;
        }
        for e in &self.entries {
            write!(f, "\n    @{:#05x} {e}", e.offset)?;
        }
        Ok(())
    }
}
