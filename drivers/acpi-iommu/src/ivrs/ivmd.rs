//! IVMD, the I/O Virtualization Memory Definition block (AMD IOMMU spec rev 3.x §5.2.3):
//! memory that devices must reach untranslated (unity-mapped, like VT-d's RMRR) or that the
//! IOMMU must not translate at all (exclusion range).
//!
//! Layout (offsets within the block): 0 type, 1 flags, 2 length (u16, 32), 4 DeviceID,
//! 6 auxiliary data (20h/21h: reserved; 22h: the range's last DeviceID), 8 PCI segment group
//! (u16; reserved, so 0, in tables older than multi-segment IVRS), 10 reserved, 16 start
//! address (u64), 24 memory block length (u64).
use core::fmt;

use lazaret_types::{Bdf, PhysAddr};

use crate::reader::{ParseError, Reader};

/// Size of an IVMD block.
pub const IVMD_LEN: usize = 32;

/// Which devices an IVMD applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IvmdType {
    /// 20h: every peripheral.
    All = 0x20,
    /// 21h: the one peripheral named by DeviceID.
    Select = 0x21,
    /// 22h: DeviceID through auxiliary data.
    Range = 0x22,
}

impl IvmdType {
    pub const fn from_raw(kind: u8) -> Option<IvmdType> {
        match kind {
            0x20 => Some(IvmdType::All),
            0x21 => Some(IvmdType::Select),
            0x22 => Some(IvmdType::Range),
            _ => None,
        }
    }
}

/// IVMD flags: bit 0 Unity, bit 1 IR, bit 2 IW, bit 3 ExclusionRange.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IvmdFlags(pub u8);

impl IvmdFlags {
    /// The range must be identity-mapped for the devices.
    pub const fn unity(self) -> bool {
        self.0 & 1 != 0
    }
    pub const fn read(self) -> bool {
        self.0 & 2 != 0
    }
    pub const fn write(self) -> bool {
        self.0 & 4 != 0
    }
    /// The range bypasses translation (exclusion range registers).
    pub const fn exclusion(self) -> bool {
        self.0 & 8 != 0
    }
}

/// One IVMD block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ivmd {
    pub offset: usize,
    pub kind: IvmdType,
    pub flags: IvmdFlags,
    pub length: u16,
    pub device_id: Bdf,
    pub aux: u16,
    /// The PCI segment of the devices named.
    pub segment: u16,
    pub start: PhysAddr,
    pub size: u64,
}

impl Ivmd {
    /// `r` holds exactly the block, at least [`IVMD_LEN`] bytes (checked by the caller).
    pub(super) fn parse(kind: IvmdType, mut r: Reader<'_>) -> Result<Ivmd, ParseError> {
        let offset = r.table_offset();
        r.skip(1)?;
        let flags = IvmdFlags(r.u8()?);
        let length = r.u16()?;
        let device_id = Bdf::from_requester_id(r.u16()?);
        let aux = r.u16()?;
        let segment = r.u16()?;
        r.skip(6)?;
        Ok(Ivmd {
            offset,
            kind,
            flags,
            length,
            device_id,
            aux,
            segment,
            start: PhysAddr(r.u64()?),
            size: r.u64()?,
        })
    }

    /// The first and last requester IDs the block applies to (inclusive).
    pub const fn devices(&self) -> (Bdf, Bdf) {
        match self.kind {
            IvmdType::All => (Bdf::from_requester_id(0), Bdf::from_requester_id(u16::MAX)),
            IvmdType::Select => (self.device_id, self.device_id),
            IvmdType::Range => (self.device_id, Bdf::from_requester_id(self.aux)),
        }
    }

    /// The exclusive end address, `None` when start + size overflows.
    pub const fn end(&self) -> Option<PhysAddr> {
        self.start.checked_add(self.size)
    }
}

impl fmt::Display for Ivmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IVMD {:02x}h @{:#x}: ", self.kind as u8, self.offset)?;
        match self.devices() {
            _ if self.kind == IvmdType::All => f.write_str("all devices")?,
            (first, last) if first == last => write!(f, "device {first}")?,
            (first, last) => write!(f, "devices {first}..={last}")?,
        }
        write!(f, " memory {:#x}+{:#x}", self.start.as_u64(), self.size)?;
        let flags = self.flags;
        for (set, name) in [
            (flags.unity(), " unity"),
            (flags.read(), " IR"),
            (flags.write(), " IW"),
            (flags.exclusion(), " exclusion"),
        ] {
            if set {
                f.write_str(name)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(kind: u8, flags: u8, device: u16, aux: u16) -> std::vec::Vec<u8> {
        let mut b = std::vec![kind, flags, 32, 0];
        b.extend_from_slice(&device.to_le_bytes());
        b.extend_from_slice(&aux.to_le_bytes());
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&0x7d90_0000u64.to_le_bytes());
        b.extend_from_slice(&0x10_0000u64.to_le_bytes());
        b
    }

    #[test]
    fn the_segment_group_is_read_from_offset_8() {
        let mut b = block(0x21, 0x07, 0x0010, 0);
        b[8..10].copy_from_slice(&3u16.to_le_bytes());
        let m = Ivmd::parse(IvmdType::Select, Reader::new(&b, 0)).expect("valid");
        assert_eq!(m.segment, 3);
        let old = block(0x21, 0x07, 0x0010, 0);
        let m = Ivmd::parse(IvmdType::Select, Reader::new(&old, 0)).expect("valid");
        assert_eq!(m.segment, 0, "reserved (zero) in single-segment tables");
    }

    #[test]
    fn range_ivmd_uses_aux_as_last_device() {
        let b = block(0x22, 0x06, 0x0100, 0x01ff);
        let m = Ivmd::parse(IvmdType::Range, Reader::new(&b, 0xc8)).expect("valid");
        let (first, last) = m.devices();
        assert_eq!(
            (first.requester_id(), last.requester_id()),
            (0x0100, 0x01ff)
        );
        assert!(m.flags.read() && m.flags.write() && !m.flags.unity());
        assert_eq!(m.end(), Some(PhysAddr(0x7da0_0000)));
        assert_eq!(
            m.to_string(),
            "IVMD 22h @0xc8: devices 01:00.0..=01:1f.7 memory 0x7d900000+0x100000 IR IW"
        );
    }

    #[test]
    fn all_ivmd_ignores_device_fields() {
        let b = block(0x20, 0x01, 0x1234, 0x5678);
        let m = Ivmd::parse(IvmdType::All, Reader::new(&b, 0)).expect("valid");
        assert_eq!(m.devices().1.requester_id(), u16::MAX);
        assert!(m.to_string().contains("all devices"));
        let mut huge = b.clone();
        huge[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
        let m = Ivmd::parse(IvmdType::All, Reader::new(&huge, 0)).expect("valid");
        assert_eq!(m.end(), None);
    }
}
