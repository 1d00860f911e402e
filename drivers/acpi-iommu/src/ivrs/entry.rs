//! IVHD device entries (AMD IOMMU spec rev 3.x §5.2.2.3, "IVHD Device Entries").
//!
//! Every entry starts with the same 4 bytes: type, a 16-bit DeviceID and the DTE setting
//! byte. Bits 7:6 of the type give the entry's size — 00b 4 bytes, 01b 8, 10b 16 — and 11b
//! marks variable-length entries, of which only F0h (ACPI HID device) is defined: its size
//! comes from its own UID length byte. A variable-length type we do not know therefore has
//! no size we could skip by, and is an error; fixed-size unknown types are kept as
//! [`EntryDetail::Unknown`] so a tool can warn about them.
use core::fmt;

use lazaret_types::Bdf;

use super::Vec;
use crate::reader::{Ascii, ParseError, Reader};

/// Type codes (spec rev 3.x, Table "IVHD Device Entry Type Codes").
pub mod kind {
    pub const PAD4: u8 = 0x00;
    pub const ALL: u8 = 0x01;
    pub const SELECT: u8 = 0x02;
    pub const RANGE_START: u8 = 0x03;
    pub const RANGE_END: u8 = 0x04;
    pub const PAD8: u8 = 0x40;
    pub const ALIAS_SELECT: u8 = 0x42;
    pub const ALIAS_RANGE_START: u8 = 0x43;
    pub const EXT_SELECT: u8 = 0x46;
    pub const EXT_RANGE_START: u8 = 0x47;
    pub const SPECIAL: u8 = 0x48;
    pub const ACPI_HID: u8 = 0xf0;
}

/// Fixed part of an F0h entry: header, HID, CID, UID format and UID length.
const ACPI_HID_FIXED_LEN: usize = 22;

/// The DTE setting byte every entry carries (spec rev 3.x, "DTE Setting" field): which
/// interrupts and system-management messages the device table entry lets through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DteSetting(pub u8);

impl DteSetting {
    /// Bit 0: INIT interrupts pass through untranslated.
    pub const fn init_pass(self) -> bool {
        self.0 & 1 != 0
    }
    /// Bit 1: external interrupts (ExtInt) pass.
    pub const fn eint_pass(self) -> bool {
        self.0 & 2 != 0
    }
    /// Bit 2: NMIs pass.
    pub const fn nmi_pass(self) -> bool {
        self.0 & 4 != 0
    }
    /// Bits 5:4: SysMgt, how system-management messages are handled (DTE.SysMgt encoding).
    pub const fn sys_mgt(self) -> u8 {
        (self.0 >> 4) & 3
    }
    /// Bit 6: LINT0 passes.
    pub const fn lint0_pass(self) -> bool {
        self.0 & 0x40 != 0
    }
    /// Bit 7: LINT1 passes.
    pub const fn lint1_pass(self) -> bool {
        self.0 & 0x80 != 0
    }
}

impl fmt::Display for DteSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dte={:#04x}", self.0)?;
        let names = [
            (self.init_pass(), " INITPass"),
            (self.eint_pass(), " EIntPass"),
            (self.nmi_pass(), " NMIPass"),
            (self.lint0_pass(), " Lint0Pass"),
            (self.lint1_pass(), " Lint1Pass"),
        ];
        for (set, name) in names {
            if set {
                f.write_str(name)?;
            }
        }
        if self.sys_mgt() != 0 {
            write!(f, " SysMgt={}", self.sys_mgt())?;
        }
        Ok(())
    }
}

/// The 32-bit extended DTE setting of entries 46h/47h.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExtendedSetting(pub u32);

impl ExtendedSetting {
    /// Bit 31: ATS requests from the device must be refused.
    pub const fn ats_disabled(self) -> bool {
        self.0 & (1 << 31) != 0
    }
}

/// What a special device (48h) is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecialVariety {
    IoApic,
    Hpet,
    Other(u8),
}

impl SpecialVariety {
    pub const fn from_raw(v: u8) -> SpecialVariety {
        match v {
            1 => SpecialVariety::IoApic,
            2 => SpecialVariety::Hpet,
            other => SpecialVariety::Other(other),
        }
    }
}

impl fmt::Display for SpecialVariety {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecialVariety::IoApic => f.write_str("IOAPIC"),
            SpecialVariety::Hpet => f.write_str("HPET"),
            SpecialVariety::Other(v) => write!(f, "variety {v:#04x}"),
        }
    }
}

/// How the UID of an F0h entry is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UidFormat {
    Absent,
    Integer,
    String,
    Other(u8),
}

impl UidFormat {
    pub const fn from_raw(v: u8) -> UidFormat {
        match v {
            0 => UidFormat::Absent,
            1 => UidFormat::Integer,
            2 => UidFormat::String,
            other => UidFormat::Other(other),
        }
    }
}

/// The ACPI namespace identity of an F0h device: _HID, _CID and _UID as firmware wrote them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcpiHid<'a> {
    pub hid: [u8; 8],
    pub cid: [u8; 8],
    pub uid_format: UidFormat,
    /// The UID bytes (`UID Length` of them), borrowed from the table.
    pub uid: &'a [u8],
}

impl AcpiHid<'_> {
    /// The HID without its trailing NUL padding.
    pub fn hid_str(&self) -> &[u8] {
        trim_nul(&self.hid)
    }

    /// A little-endian integer UID, when the format says integer and it fits 64 bits.
    pub fn uid_integer(&self) -> Option<u64> {
        if self.uid_format != UidFormat::Integer || self.uid.len() > 8 {
            return None;
        }
        Some(
            self.uid
                .iter()
                .rev()
                .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)),
        )
    }
}

fn trim_nul(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    bytes.get(..end).unwrap_or(bytes)
}

impl fmt::Display for AcpiHid<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HID {:?}", Ascii(self.hid_str()))?;
        let cid = trim_nul(&self.cid);
        if !cid.is_empty() {
            write!(f, " CID {:?}", Ascii(cid))?;
        }
        match (self.uid_format, self.uid_integer()) {
            (UidFormat::Absent, _) => Ok(()),
            (_, Some(n)) => write!(f, " UID {n}"),
            _ => write!(f, " UID {:?}", Ascii(trim_nul(self.uid))),
        }
    }
}

/// What is specific to each entry type; the common fields live in [`DeviceEntry`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryDetail<'a> {
    /// 00h / 40h: padding, ignored.
    Pad,
    /// 01h: the DTE setting applies to every device ID.
    All,
    /// 02h: one device ID.
    Select,
    /// 03h: first device ID of a range closed by the next 04h.
    RangeStart,
    /// 04h: last device ID of the range opened before it.
    RangeEnd,
    /// 42h: the device's DMA carries requester ID `alias`.
    AliasSelect { alias: Bdf },
    /// 43h: like 03h, and every device in the range carries requester ID `alias`.
    AliasRangeStart { alias: Bdf },
    /// 46h: one device ID with an extended setting.
    ExtendedSelect { ext: ExtendedSetting },
    /// 47h: range start with an extended setting.
    ExtendedRangeStart { ext: ExtendedSetting },
    /// 48h: an IOAPIC or HPET (`handle` is its APIC ID / HPET number) whose interrupts
    /// carry requester ID `source`. The common DeviceID field is reserved here.
    Special {
        handle: u8,
        source: Bdf,
        variety: SpecialVariety,
    },
    /// F0h: an ACPI-enumerated (non-PCI) device using the common DeviceID.
    AcpiHid(AcpiHid<'a>),
    /// A fixed-size type this parser does not know; `length` bytes were skipped.
    Unknown { length: usize },
}

/// One device entry of an IVHD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceEntry<'a> {
    /// Offset of the entry in the table (matches iasl's listing).
    pub offset: usize,
    /// The raw type code.
    pub kind: u8,
    /// Bytes 1..3: the DeviceID (requester ID) the entry is about; reserved for 48h.
    pub device_id: Bdf,
    pub dte: DteSetting,
    pub detail: EntryDetail<'a>,
}

/// The size of the entry at the front of `r`, from its type (see the module doc).
fn entry_length(r: &Reader<'_>) -> Result<usize, ParseError> {
    let mut head = *r;
    let kind = head.u8()?;
    match kind >> 6 {
        0 => Ok(4),
        1 => Ok(8),
        2 => Ok(16),
        _ if kind == kind::ACPI_HID => {
            let fixed =
                head.peek(ACPI_HID_FIXED_LEN - 1)
                    .map_err(|_| ParseError::BadSubtableLength {
                        offset: r.table_offset(),
                        length: ACPI_HID_FIXED_LEN,
                    })?;
            let uid_len = fixed.last().copied().unwrap_or(0);
            Ok(ACPI_HID_FIXED_LEN + usize::from(uid_len))
        }
        _ => Err(ParseError::InvalidField {
            offset: r.table_offset(),
            what: "variable-length IVHD device entry of unknown type (its size is unknowable)",
        }),
    }
}

/// Parses every entry in `r` (an IVHD's bytes after its header).
pub(super) fn parse_entries<'a>(mut r: Reader<'a>) -> Result<Vec<DeviceEntry<'a>>, ParseError> {
    let mut out = Vec::new();
    while !r.is_empty() {
        let offset = r.table_offset();
        let length = entry_length(&r)?;
        if length > r.remaining() {
            return Err(ParseError::BadSubtableLength { offset, length });
        }
        out.push(parse_entry(r.sub(length)?)?);
    }
    Ok(out)
}

/// Parses one entry; `r` holds exactly its bytes.
fn parse_entry(mut r: Reader<'_>) -> Result<DeviceEntry<'_>, ParseError> {
    let offset = r.table_offset();
    let kind = r.u8()?;
    let device_id = Bdf::from_requester_id(r.u16()?);
    let dte = DteSetting(r.u8()?);
    let detail = match kind {
        kind::PAD4 | kind::PAD8 => EntryDetail::Pad,
        kind::ALL => EntryDetail::All,
        kind::SELECT => EntryDetail::Select,
        kind::RANGE_START => EntryDetail::RangeStart,
        kind::RANGE_END => EntryDetail::RangeEnd,
        kind::ALIAS_SELECT | kind::ALIAS_RANGE_START => {
            r.skip(1)?;
            let alias = Bdf::from_requester_id(r.u16()?);
            if kind == kind::ALIAS_SELECT {
                EntryDetail::AliasSelect { alias }
            } else {
                EntryDetail::AliasRangeStart { alias }
            }
        }
        kind::EXT_SELECT | kind::EXT_RANGE_START => {
            let ext = ExtendedSetting(r.u32()?);
            if kind == kind::EXT_SELECT {
                EntryDetail::ExtendedSelect { ext }
            } else {
                EntryDetail::ExtendedRangeStart { ext }
            }
        }
        kind::SPECIAL => EntryDetail::Special {
            handle: r.u8()?,
            source: Bdf::from_requester_id(r.u16()?),
            variety: SpecialVariety::from_raw(r.u8()?),
        },
        kind::ACPI_HID => {
            let hid = r.array()?;
            let cid = r.array()?;
            let uid_format = UidFormat::from_raw(r.u8()?);
            r.skip(1)?; // UID length: already used to size this reader.
            EntryDetail::AcpiHid(AcpiHid {
                hid,
                cid,
                uid_format,
                uid: r.rest(),
            })
        }
        _ => EntryDetail::Unknown {
            length: 4 + r.rest().len(),
        },
    };
    Ok(DeviceEntry {
        offset,
        kind,
        device_id,
        dte,
        detail,
    })
}

impl fmt::Display for DeviceEntry<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = self.device_id;
        match self.detail {
            EntryDetail::Pad => return write!(f, "{:02x}h pad", self.kind),
            EntryDetail::All => write!(f, "01h all devices")?,
            EntryDetail::Select => write!(f, "02h select {id}")?,
            EntryDetail::RangeStart => write!(f, "03h range from {id}")?,
            EntryDetail::RangeEnd => return write!(f, "04h range to {id}"),
            EntryDetail::AliasSelect { alias } => write!(f, "42h select {id} alias {alias}")?,
            EntryDetail::AliasRangeStart { alias } => {
                write!(f, "43h range from {id} alias {alias}")?
            }
            EntryDetail::ExtendedSelect { ext } => write!(f, "46h select {id} ext {:#x}", ext.0)?,
            EntryDetail::ExtendedRangeStart { ext } => {
                write!(f, "47h range from {id} ext {:#x}", ext.0)?
            }
            EntryDetail::Special {
                handle,
                source,
                variety,
            } => write!(f, "48h special {variety} {handle} as {source}")?,
            EntryDetail::AcpiHid(hid) => write!(f, "f0h ACPI {hid} as {id}")?,
            EntryDetail::Unknown { length } => {
                return write!(
                    f,
                    "{:02x}h UNKNOWN entry type ({length} bytes skipped)",
                    self.kind
                )
            }
        }
        write!(f, " {}", self.dte)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Vec<DeviceEntry<'_>>, ParseError> {
        parse_entries(Reader::new(bytes, 0x100))
    }

    #[test]
    fn sizes_follow_the_type_bits() {
        let bytes = [
            0x3f, 1, 0, 0, // unknown 4-byte
            0x7f, 2, 0, 0, 0, 0, 0, 0, // unknown 8-byte
            0x80, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // unknown 16-byte
            0x02, 0x10, 0x00, 0xd7, // select 00:02.0
        ];
        let e = parse(&bytes).expect("valid");
        let lengths: Vec<_> = e
            .iter()
            .map(|e| match e.detail {
                EntryDetail::Unknown { length } => length,
                _ => 0,
            })
            .collect();
        assert_eq!(lengths, [4, 8, 16, 0]);
        assert_eq!(e[3].offset, 0x100 + 28);
        assert_eq!(e[3].device_id, Bdf::new(0, 2, 0).expect("valid"));
        let dte = e[3].dte;
        assert!(dte.init_pass() && dte.eint_pass() && dte.nmi_pass());
        assert!(dte.lint0_pass() && dte.lint1_pass());
        assert_eq!(dte.sys_mgt(), 1);
    }

    #[test]
    fn unknown_variable_length_type_is_an_error() {
        let bytes = [0xc1, 0, 0, 0, 0, 0, 0, 0];
        assert!(matches!(
            parse(&bytes),
            Err(ParseError::InvalidField { offset: 0x100, .. })
        ));
    }

    #[test]
    fn acpi_hid_entry_is_sized_by_its_uid_length() {
        let mut bytes = std::vec![0xf0, 0x99, 0x00, 0x00];
        bytes.extend_from_slice(b"MSFT0201");
        bytes.extend_from_slice(&[0; 8]);
        bytes.extend_from_slice(&[1, 2, 0x34, 0x12]);
        bytes.extend_from_slice(&[0x01, 0x00, 0x00, 0x00]); // an All entry after it
        let e = parse(&bytes).expect("valid");
        assert_eq!(e.len(), 2);
        let EntryDetail::AcpiHid(hid) = e[0].detail else {
            panic!("not an ACPI HID entry: {:?}", e[0]);
        };
        assert_eq!(hid.hid_str(), b"MSFT0201");
        assert_eq!(hid.uid_integer(), Some(0x1234));
        assert_eq!(e[1].detail, EntryDetail::All);
        // The UID length now claims one byte more than the block holds.
        let mut bad = bytes.clone();
        bad.truncate(24);
        bad[21] = 3;
        assert_eq!(
            parse(&bad),
            Err(ParseError::BadSubtableLength {
                offset: 0x100,
                length: 25
            })
        );
        // Too short even for the fixed part.
        assert_eq!(
            parse(&bytes[..21]),
            Err(ParseError::BadSubtableLength {
                offset: 0x100,
                length: 22
            })
        );
    }

    #[test]
    fn an_entry_cut_by_its_block_is_an_error() {
        assert_eq!(
            parse(&[0x48, 0, 0, 0, 1, 0xa0]),
            Err(ParseError::BadSubtableLength {
                offset: 0x100,
                length: 8
            })
        );
    }
}
