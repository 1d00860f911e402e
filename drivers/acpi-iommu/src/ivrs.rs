//! IVRS, the I/O Virtualization Reporting Structure through which firmware describes AMD
//! IOMMUs (AMD I/O Virtualization Technology (IOMMU) Specification 48882 rev 3.x, §5.2).
//!
//! Layout: the ACPI header (36 bytes), IVinfo (u32, offset 36), 8 reserved bytes, then IVDB
//! blocks back to back until the table's end. Each block starts with type (u8), flags (u8)
//! and length (u16); IVHD blocks ([`Ivhd`]) describe an IOMMU and its devices, IVMD blocks
//! ([`Ivmd`]) memory that must stay reachable. Every length is checked against both its
//! own header size and its parent before anything is read, so a malformed table is a
//! [`ParseError`], never a panic, an out-of-bounds read or an endless loop.
//!
//! Firmware usually describes one IOMMU several times (10h for old OSes, 11h and 40h with
//! more detail); [`Ivrs::selected_ivhds`] picks one block per IOMMU.
extern crate alloc;

mod entry;
mod facts;
mod intremap;
mod ivhd;
mod ivmd;

use alloc::vec::Vec;
use core::fmt;

pub use entry::{
    kind as entry_kind, AcpiHid, DeviceEntry, DteSetting, EntryDetail, ExtendedSetting,
    SpecialVariety, UidFormat,
};
pub use facts::{DeviceFact, DeviceFacts, FactError, FactKind};
pub use intremap::{remapping_doubt, RemapDoubt};
pub use ivhd::{IommuInfo, Ivhd, IvhdFlags, IvhdType, IVHD_10H_HEADER_LEN, IVHD_11H_HEADER_LEN};
pub use ivmd::{Ivmd, IvmdFlags, IvmdType, IVMD_LEN};

use crate::reader::{ParseError, Reader};
use crate::sdt::{SdtHeader, SDT_HEADER_LEN};

/// Offset of the first IVDB block: header, IVinfo, reserved.
pub const IVRS_BLOCKS_OFFSET: usize = SDT_HEADER_LEN + 12;

/// Type, flags and length: the least any IVDB block has.
const IVDB_MIN_LEN: usize = 4;

/// IVinfo, the virtualization facts common to every IOMMU (spec rev 3.x §5.2.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IvInfo(pub u32);

impl IvInfo {
    /// Bit 0 EFRSup: the 11h/40h EFR images are valid.
    pub const fn efr_sup(self) -> bool {
        self.0 & 1 != 0
    }
    /// Bit 1: firmware asks the OS to keep DMA remapping on (pre-boot DMA protection).
    pub const fn dma_remap_sup(self) -> bool {
        self.0 & 2 != 0
    }
    /// Bits 7:5 GVASize: guest virtual address size code (010b = 48 bits, 011b = 57 bits).
    pub const fn gva_size(self) -> u8 {
        ((self.0 >> 5) & 7) as u8
    }
    /// Bits 14:8 PASize: host physical address bits.
    pub const fn pa_size(self) -> u8 {
        ((self.0 >> 8) & 0x7f) as u8
    }
    /// Bits 21:15 VASize: virtual address bits.
    pub const fn va_size(self) -> u8 {
        ((self.0 >> 15) & 0x7f) as u8
    }
    /// Bit 22 HtAtsResv: the HyperTransport ATS-reserved address range is in use.
    pub const fn ht_ats_reserved(self) -> bool {
        self.0 & (1 << 22) != 0
    }
}

impl fmt::Display for IvInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IVinfo {:#010x}: PA {} bits, VA {} bits, GVA code {}",
            self.0,
            self.pa_size(),
            self.va_size(),
            self.gva_size()
        )?;
        for (set, name) in [
            (self.efr_sup(), " EFRSup"),
            (self.dma_remap_sup(), " DmaRemap"),
            (self.ht_ats_reserved(), " HtAtsResv"),
        ] {
            if set {
                f.write_str(name)?;
            }
        }
        Ok(())
    }
}

/// One IVDB block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ivdb<'a> {
    Hardware(Ivhd<'a>),
    Memory(Ivmd),
    /// A type this parser does not know (e.g. 51h on recent laptops), skipped by length.
    Unknown {
        kind: u8,
        offset: usize,
        length: usize,
    },
}

impl fmt::Display for Ivdb<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ivdb::Hardware(h) => h.fmt(f),
            Ivdb::Memory(m) => m.fmt(f),
            Ivdb::Unknown {
                kind,
                offset,
                length,
            } => write!(
                f,
                "UNKNOWN IVDB type {kind:02x}h @{offset:#x}, {length} bytes skipped"
            ),
        }
    }
}

/// A parsed IVRS. Strings (ACPI UIDs) are borrowed from the table bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ivrs<'a> {
    pub header: SdtHeader,
    pub info: IvInfo,
    /// Every block, in table order.
    pub blocks: Vec<Ivdb<'a>>,
}

impl<'a> Ivrs<'a> {
    /// Parses and checks a whole IVRS: signature, length, checksum, and every block and
    /// device entry length.
    pub fn parse(table: &'a [u8]) -> Result<Ivrs<'a>, ParseError> {
        let (header, mut body) = SdtHeader::parse_table(table, b"IVRS")?;
        let info = IvInfo(body.u32()?);
        body.skip(8)?;
        let mut blocks = Vec::new();
        while !body.is_empty() {
            blocks.push(parse_block(&mut body)?);
        }
        Ok(Ivrs {
            header,
            info,
            blocks,
        })
    }

    /// Every IVHD, in table order.
    pub fn ivhds(&self) -> impl Iterator<Item = &Ivhd<'a>> + '_ {
        self.blocks.iter().filter_map(|b| match b {
            Ivdb::Hardware(h) => Some(h),
            _ => None,
        })
    }

    /// Every IVMD, in table order.
    pub fn ivmds(&self) -> impl Iterator<Item = &Ivmd> + '_ {
        self.blocks.iter().filter_map(|b| match b {
            Ivdb::Memory(m) => Some(m),
            _ => None,
        })
    }

    /// One IVHD per IOMMU (segment + IOMMU device ID), in order of first appearance: the one
    /// of the highest type, the first of them if firmware repeats a type. The 10h, 11h and 40h
    /// blocks of one IOMMU describe the same devices, the later types more completely, so
    /// reading all of them would apply every entry twice — this is what Linux's
    /// `get_highest_supported_ivhd_type` avoids, done per IOMMU.
    pub fn selected_ivhds(&self) -> Vec<&Ivhd<'a>> {
        let mut chosen: Vec<&Ivhd<'a>> = Vec::new();
        for h in self.ivhds() {
            match chosen.iter_mut().find(|c| c.iommu() == h.iommu()) {
                Some(c) if h.kind > c.kind => *c = h,
                Some(_) => {}
                None => chosen.push(h),
            }
        }
        chosen
    }

    /// The unknown blocks and device entries a pre-flight tool should warn about.
    pub fn unknown_parts(&self) -> impl Iterator<Item = (u8, usize)> + '_ {
        self.blocks.iter().flat_map(|b| {
            let (own, entries) = match b {
                Ivdb::Unknown { kind, offset, .. } => (Some((*kind, *offset)), &[][..]),
                Ivdb::Hardware(h) => (None, &h.entries[..]),
                Ivdb::Memory(_) => (None, &[][..]),
            };
            own.into_iter().chain(
                entries
                    .iter()
                    .filter(|e| matches!(e.detail, EntryDetail::Unknown { .. }))
                    .map(|e| (e.kind, e.offset)),
            )
        })
    }
}

/// The least length a block of type `kind` can have.
fn min_block_len(kind: u8) -> usize {
    match (IvhdType::from_raw(kind), IvmdType::from_raw(kind)) {
        (Some(t), _) => t.header_len(),
        (_, Some(_)) => IVMD_LEN,
        _ => IVDB_MIN_LEN,
    }
}

/// Parses the block at the front of `body` and advances past it.
fn parse_block<'a>(body: &mut Reader<'a>) -> Result<Ivdb<'a>, ParseError> {
    let offset = body.table_offset();
    let mut head = *body;
    let kind = head.u8()?;
    head.skip(1)?;
    let length = usize::from(head.u16()?);
    if length < min_block_len(kind) || length > body.remaining() {
        return Err(ParseError::BadSubtableLength { offset, length });
    }
    let block = body.sub(length)?;
    if let Some(t) = IvhdType::from_raw(kind) {
        Ok(Ivdb::Hardware(Ivhd::parse(t, block)?))
    } else if let Some(t) = IvmdType::from_raw(kind) {
        Ok(Ivdb::Memory(Ivmd::parse(t, block)?))
    } else {
        Ok(Ivdb::Unknown {
            kind,
            offset,
            length,
        })
    }
}

impl fmt::Display for Ivrs<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IVRS rev {}, {} bytes, OEM {:?}\n{}",
            self.header.revision,
            self.header.length,
            crate::reader::Ascii(&self.header.oem_id),
            self.info
        )?;
        for b in &self.blocks {
            write!(f, "\n{b}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdt::fix_checksum;
    use lazaret_types::Bdf;

    /// An IVRS around `blocks`, with a valid header.
    fn table(blocks: &[u8]) -> std::vec::Vec<u8> {
        let mut t = std::vec![0u8; IVRS_BLOCKS_OFFSET];
        t[..4].copy_from_slice(b"IVRS");
        t[8] = 2;
        t[36..40].copy_from_slice(&0x0020_3041u32.to_le_bytes());
        t.extend_from_slice(blocks);
        let len = t.len() as u32;
        t[4..8].copy_from_slice(&len.to_le_bytes());
        fix_checksum(&mut t);
        t
    }

    fn ivhd10(devid: u16, entries: &[u8]) -> std::vec::Vec<u8> {
        let mut b = std::vec![0x10, 0xb0];
        b.extend_from_slice(&((24 + entries.len()) as u16).to_le_bytes());
        b.extend_from_slice(&devid.to_le_bytes());
        b.extend_from_slice(&0x40u16.to_le_bytes());
        b.extend_from_slice(&0xfeb8_0000u64.to_le_bytes());
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(entries);
        b
    }

    #[test]
    fn ivinfo_fields_decode() {
        let i = IvInfo(0x0020_3043);
        assert!(i.efr_sup() && i.dma_remap_sup() && !i.ht_ats_reserved());
        assert_eq!((i.pa_size(), i.va_size(), i.gva_size()), (48, 64, 2));
    }

    #[test]
    fn unknown_blocks_are_skipped_and_reported() {
        let mut blocks = std::vec![0x51, 0, 8, 0, 0xaa, 0xbb, 0xcc, 0xdd];
        blocks.extend(ivhd10(2, &[1, 0, 0, 0]));
        let t = table(&blocks);
        let ivrs = Ivrs::parse(&t).expect("valid");
        assert_eq!(
            ivrs.blocks[0],
            Ivdb::Unknown {
                kind: 0x51,
                offset: 48,
                length: 8
            }
        );
        assert_eq!(ivrs.ivhds().count(), 1);
        assert_eq!(
            ivrs.unknown_parts().collect::<std::vec::Vec<_>>(),
            [(0x51, 48)]
        );
    }

    #[test]
    fn impossible_block_lengths_are_errors() {
        for (length, why) in [(0u16, "zero"), (3, "under 4"), (20, "under IVHD header")] {
            let mut b = ivhd10(2, &[]);
            b[2..4].copy_from_slice(&length.to_le_bytes());
            assert_eq!(
                Ivrs::parse(&table(&b)),
                Err(ParseError::BadSubtableLength {
                    offset: 48,
                    length: length.into()
                }),
                "{why}"
            );
        }
        let mut b = ivhd10(2, &[]);
        b[2] = 25; // one byte past the table
        assert!(matches!(
            Ivrs::parse(&table(&b)),
            Err(ParseError::BadSubtableLength { length: 25, .. })
        ));
        let short_ivmd = [
            0x21, 0, 24, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert!(matches!(
            Ivrs::parse(&table(&short_ivmd)),
            Err(ParseError::BadSubtableLength { length: 24, .. })
        ));
    }

    #[test]
    fn highest_type_is_selected_per_iommu() {
        let mut blocks = ivhd10(2, &[1, 0, 0, 0]);
        let mut b11 = ivhd10(2, &[2, 8, 0, 0]);
        b11[0] = 0x11;
        b11.splice(24..24, [0u8; 16]);
        b11[2] = 40 + 4;
        let other = ivhd10(0x42, &[1, 0, 0, 0]);
        blocks.extend(&b11);
        blocks.extend(&other);
        let t = table(&blocks);
        let ivrs = Ivrs::parse(&t).expect("valid");
        let chosen = ivrs.selected_ivhds();
        let kinds: std::vec::Vec<_> = chosen.iter().map(|h| (h.iommu_bdf, h.kind)).collect();
        assert_eq!(
            kinds,
            [
                (Bdf::from_requester_id(2), IvhdType::Fixed11),
                (Bdf::from_requester_id(0x42), IvhdType::Fixed10)
            ]
        );
    }
}
