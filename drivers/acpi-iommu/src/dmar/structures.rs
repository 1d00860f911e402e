//! The remapping structures that follow the DMAR header (VT-d spec §8.2–§8.10), each parsed
//! from its own sub-reader so that no field can be read past the structure's length.
use core::fmt;

use lazaret_types::{PhysAddr, PAGE_SIZE};

use super::flags::{AtsrFlags, DrhdFlags, SatcFlags};
use super::scope::DeviceScopes;
use crate::reader::{ParseError, Reader};

/// Type and length, the first four bytes of every remapping structure (§8.2).
const STRUCTURE_HEADER_LEN: usize = 4;

/// DMA Remapping Hardware Unit Definition (§8.3): one VT-d unit and the devices it translates.
#[derive(Clone, Copy, Debug)]
pub struct Drhd<'a> {
    /// Offset of the structure in the whole table.
    pub offset: usize,
    pub flags: DrhdFlags,
    /// Bits 3:0: the register set spans 2^N 4-KiB pages (rev 3+; 0 in older tables = 1 page).
    pub size: u8,
    pub segment: u16,
    pub register_base: PhysAddr,
    pub scopes: DeviceScopes<'a>,
}

impl Drhd<'_> {
    const FIXED_LEN: usize = 16;

    pub const fn include_pci_all(&self) -> bool {
        self.flags.contains(DrhdFlags::INCLUDE_PCI_ALL)
    }

    /// Bytes of MMIO the unit's registers occupy (§8.3 "Size").
    pub const fn register_set_size(&self) -> u64 {
        PAGE_SIZE << (self.size & 0xf)
    }

    fn parse(offset: usize, mut body: Reader<'_>) -> Result<Drhd<'_>, ParseError> {
        Ok(Drhd {
            offset,
            flags: DrhdFlags(body.u8()?),
            size: body.u8()?,
            segment: body.u16()?,
            register_base: PhysAddr(body.u64()?),
            scopes: DeviceScopes::validate(body)?,
        })
    }
}

/// Reserved Memory Region Reporting (§8.4): memory that the listed devices may DMA to at any
/// time (USB legacy emulation, integrated graphics), so it stays identity-mapped for them.
#[derive(Clone, Copy, Debug)]
pub struct Rmrr<'a> {
    pub offset: usize,
    pub segment: u16,
    pub base: PhysAddr,
    /// The last byte of the region (inclusive).
    pub limit: PhysAddr,
    pub scopes: DeviceScopes<'a>,
}

/// Why an RMRR's range cannot be identity-mapped as given (§8.4: base 4-KiB aligned, limit
/// one byte below a 4-KiB boundary, limit above base).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RmrrDefect {
    LimitBelowBase,
    BaseNotPageAligned,
    LimitNotPageEnd,
}

impl fmt::Display for RmrrDefect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RmrrDefect::LimitBelowBase => "limit below base",
            RmrrDefect::BaseNotPageAligned => "base not 4 KiB aligned",
            RmrrDefect::LimitNotPageEnd => "limit does not end a 4 KiB page",
        })
    }
}

impl Rmrr<'_> {
    const FIXED_LEN: usize = 24;

    /// True when `addr` lies in the region.
    pub const fn contains(&self, addr: PhysAddr) -> bool {
        self.base.0 <= addr.0 && addr.0 <= self.limit.0
    }

    /// The first problem with the range, if any. Firmware does ship such RMRRs; Xen ignores
    /// an RMRR whose limit is below its base, Linux warns about misalignment and maps anyway.
    pub const fn defect(&self) -> Option<RmrrDefect> {
        if self.limit.0 < self.base.0 {
            Some(RmrrDefect::LimitBelowBase)
        } else if !self.base.is_page_aligned() {
            Some(RmrrDefect::BaseNotPageAligned)
        } else if self.limit.0 % PAGE_SIZE != PAGE_SIZE - 1 {
            Some(RmrrDefect::LimitNotPageEnd)
        } else {
            None
        }
    }

    fn parse(offset: usize, mut body: Reader<'_>) -> Result<Rmrr<'_>, ParseError> {
        body.skip(2)?;
        Ok(Rmrr {
            offset,
            segment: body.u16()?,
            base: PhysAddr(body.u64()?),
            limit: PhysAddr(body.u64()?),
            scopes: DeviceScopes::validate(body)?,
        })
    }
}

/// Root Port ATS Capability Reporting (§8.5): root ports that support Address Translation
/// Services; with ALL_PORTS, every root port of the segment.
#[derive(Clone, Copy, Debug)]
pub struct Atsr<'a> {
    pub offset: usize,
    pub flags: AtsrFlags,
    pub segment: u16,
    pub scopes: DeviceScopes<'a>,
}

impl Atsr<'_> {
    const FIXED_LEN: usize = 8;

    pub const fn all_ports(&self) -> bool {
        self.flags.contains(AtsrFlags::ALL_PORTS)
    }

    fn parse(offset: usize, mut body: Reader<'_>) -> Result<Atsr<'_>, ParseError> {
        let flags = AtsrFlags(body.u8()?);
        body.skip(1)?;
        Ok(Atsr {
            offset,
            flags,
            segment: body.u16()?,
            scopes: DeviceScopes::validate(body)?,
        })
    }
}

/// Remapping Hardware Static Affinity (§8.6): the NUMA proximity domain of the unit whose
/// registers are at `register_base`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rhsa {
    pub offset: usize,
    pub register_base: PhysAddr,
    pub proximity_domain: u32,
}

impl Rhsa {
    const FIXED_LEN: usize = 20;

    fn parse(offset: usize, mut body: Reader<'_>) -> Result<Rhsa, ParseError> {
        body.skip(4)?;
        Ok(Rhsa {
            offset,
            register_base: PhysAddr(body.u64()?),
            proximity_domain: body.u32()?,
        })
    }
}

/// ACPI Namespace Device Declaration (§8.7): names the ACPI device that scope entries of type 5
/// with the same enumeration ID refer to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Andd<'a> {
    pub offset: usize,
    pub device_number: u8,
    /// The object name field as stored: NUL-terminated, often NUL-padded.
    pub raw_name: &'a [u8],
}

impl<'a> Andd<'a> {
    const FIXED_LEN: usize = 8;

    /// The name up to its first NUL, when that is valid UTF-8 (e.g. `\_SB.PCI0.I2C0`).
    pub fn name(&self) -> Option<&'a str> {
        let end = self
            .raw_name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.raw_name.len());
        self.raw_name
            .get(..end)
            .and_then(|name| core::str::from_utf8(name).ok())
    }

    fn parse(offset: usize, mut body: Reader<'a>) -> Result<Andd<'a>, ParseError> {
        body.skip(3)?;
        Ok(Andd {
            offset,
            device_number: body.u8()?,
            raw_name: body.rest(),
        })
    }
}

/// SoC Integrated Address Translation Cache (§8.8): integrated devices with an ATC, and whether
/// they need ATS enabled.
#[derive(Clone, Copy, Debug)]
pub struct Satc<'a> {
    pub offset: usize,
    pub flags: SatcFlags,
    pub segment: u16,
    pub scopes: DeviceScopes<'a>,
}

impl Satc<'_> {
    const FIXED_LEN: usize = 8;

    pub const fn atc_required(&self) -> bool {
        self.flags.contains(SatcFlags::ATC_REQUIRED)
    }

    fn parse(offset: usize, mut body: Reader<'_>) -> Result<Satc<'_>, ParseError> {
        let flags = SatcFlags(body.u8()?);
        body.skip(1)?;
        Ok(Satc {
            offset,
            flags,
            segment: body.u16()?,
            scopes: DeviceScopes::validate(body)?,
        })
    }
}

/// SoC Integrated Device Property (rev 4.1+, "SIDP Reporting Structure"): integrated devices
/// whose properties are carried in the flags of their scope entries.
#[derive(Clone, Copy, Debug)]
pub struct Sidp<'a> {
    pub offset: usize,
    pub segment: u16,
    pub scopes: DeviceScopes<'a>,
}

impl Sidp<'_> {
    const FIXED_LEN: usize = 8;

    fn parse(offset: usize, mut body: Reader<'_>) -> Result<Sidp<'_>, ParseError> {
        body.skip(2)?;
        Ok(Sidp {
            offset,
            segment: body.u16()?,
            scopes: DeviceScopes::validate(body)?,
        })
    }
}

/// A structure of a type this parser does not know, skipped by its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownStructure {
    pub structure_type: u16,
    pub offset: usize,
    pub length: usize,
}

/// One remapping structure, by type (§8.2, Table 8-3).
#[derive(Clone, Copy, Debug)]
pub enum RemappingStructure<'a> {
    Drhd(Drhd<'a>),
    Rmrr(Rmrr<'a>),
    Atsr(Atsr<'a>),
    Rhsa(Rhsa),
    Andd(Andd<'a>),
    Satc(Satc<'a>),
    Sidp(Sidp<'a>),
    Unknown(UnknownStructure),
}

impl<'a> RemappingStructure<'a> {
    /// The type field.
    pub const fn structure_type(&self) -> u16 {
        match self {
            RemappingStructure::Drhd(_) => 0,
            RemappingStructure::Rmrr(_) => 1,
            RemappingStructure::Atsr(_) => 2,
            RemappingStructure::Rhsa(_) => 3,
            RemappingStructure::Andd(_) => 4,
            RemappingStructure::Satc(_) => 5,
            RemappingStructure::Sidp(_) => 6,
            RemappingStructure::Unknown(u) => u.structure_type,
        }
    }

    /// Offset of the structure in the whole table.
    pub const fn offset(&self) -> usize {
        match self {
            RemappingStructure::Drhd(d) => d.offset,
            RemappingStructure::Rmrr(r) => r.offset,
            RemappingStructure::Atsr(a) => a.offset,
            RemappingStructure::Rhsa(r) => r.offset,
            RemappingStructure::Andd(a) => a.offset,
            RemappingStructure::Satc(s) => s.offset,
            RemappingStructure::Sidp(s) => s.offset,
            RemappingStructure::Unknown(u) => u.offset,
        }
    }

    /// The device scopes, for the types that have them.
    pub fn scopes(&self) -> Option<DeviceScopes<'a>> {
        match self {
            RemappingStructure::Drhd(d) => Some(d.scopes),
            RemappingStructure::Rmrr(r) => Some(r.scopes),
            RemappingStructure::Atsr(a) => Some(a.scopes),
            RemappingStructure::Satc(s) => Some(s.scopes),
            RemappingStructure::Sidp(s) => Some(s.scopes),
            RemappingStructure::Rhsa(_)
            | RemappingStructure::Andd(_)
            | RemappingStructure::Unknown(_) => None,
        }
    }
}

/// The smallest length a structure of `structure_type` can have.
fn fixed_len(structure_type: u16) -> usize {
    match structure_type {
        0 => Drhd::FIXED_LEN,
        1 => Rmrr::FIXED_LEN,
        2 => Atsr::FIXED_LEN,
        3 => Rhsa::FIXED_LEN,
        4 => Andd::FIXED_LEN,
        5 => Satc::FIXED_LEN,
        6 => Sidp::FIXED_LEN,
        _ => STRUCTURE_HEADER_LEN,
    }
}

/// Parses the structure at the cursor and advances past it. Its length must cover its type's
/// fixed part (so it is never zero) and stay within the table.
pub(crate) fn parse_structure<'a>(
    list: &mut Reader<'a>,
) -> Result<RemappingStructure<'a>, ParseError> {
    let offset = list.table_offset();
    let mut peek = *list;
    let structure_type = peek.u16()?;
    let length = usize::from(peek.u16()?);
    if length < fixed_len(structure_type) || length > list.remaining() {
        return Err(ParseError::BadSubtableLength { offset, length });
    }
    let mut body = list.sub(length)?;
    body.skip(STRUCTURE_HEADER_LEN)?;
    Ok(match structure_type {
        0 => RemappingStructure::Drhd(Drhd::parse(offset, body)?),
        1 => RemappingStructure::Rmrr(Rmrr::parse(offset, body)?),
        2 => RemappingStructure::Atsr(Atsr::parse(offset, body)?),
        3 => RemappingStructure::Rhsa(Rhsa::parse(offset, body)?),
        4 => RemappingStructure::Andd(Andd::parse(offset, body)?),
        5 => RemappingStructure::Satc(Satc::parse(offset, body)?),
        6 => RemappingStructure::Sidp(Sidp::parse(offset, body)?),
        _ => RemappingStructure::Unknown(UnknownStructure {
            structure_type,
            offset,
            length,
        }),
    })
}
