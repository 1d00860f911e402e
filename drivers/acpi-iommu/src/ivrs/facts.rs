//! The requester-ID view of an IVHD: which IDs its entries cover, with which DTE setting,
//! and which IDs a device's DMA really carries (aliases).
//!
//! Semantics follow the spec's entry descriptions (AMD IOMMU spec rev 3.x §5.2.2.3) and the
//! order Linux and Xen apply them in: entries are read in order, and for an ID covered more
//! than once the last DTE setting wins, while an alias (42h/43h) stays until another alias
//! entry replaces it. A range start (03h/43h/47h) is closed by the next 04h; only padding may
//! sit between them.
use core::fmt;

use lazaret_types::Bdf;

use super::entry::{
    AcpiHid, DeviceEntry, DteSetting, EntryDetail, ExtendedSetting, SpecialVariety,
};
use super::Vec;

/// What kind of requester a fact is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FactKind<'a> {
    /// PCI functions (01h, 02h, ranges, 42h, 43h, 46h, 47h).
    Pci,
    /// An IOAPIC or HPET whose interrupts carry this requester ID (48h).
    Special { handle: u8, variety: SpecialVariety },
    /// An ACPI-enumerated device using this requester ID (F0h).
    Acpi(AcpiHid<'a>),
}

/// Requester IDs `first..=last` and what the IVHD says about them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceFact<'a> {
    pub first: Bdf,
    pub last: Bdf,
    pub dte: DteSetting,
    /// DMA from these devices carries this requester ID instead of their own.
    pub alias: Option<Bdf>,
    pub ext: Option<ExtendedSetting>,
    pub kind: FactKind<'a>,
    /// Table offset of the entry (for a range: of its start) the fact comes from.
    pub offset: usize,
}

impl DeviceFact<'_> {
    pub fn covers(&self, bdf: Bdf) -> bool {
        (self.first..=self.last).contains(&bdf)
    }
}

impl fmt::Display for DeviceFact<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)?;
        } else {
            write!(f, "{}..={}", self.first, self.last)?;
        }
        if let Some(alias) = self.alias {
            write!(f, " DMA as {alias}")?;
        }
        match self.kind {
            FactKind::Pci => {}
            FactKind::Special { handle, variety } => write!(f, " ({variety} {handle})")?,
            FactKind::Acpi(hid) => write!(f, " (ACPI {hid})")?,
        }
        if let Some(ext) = self.ext {
            write!(f, " ext {:#x}", ext.0)?;
        }
        write!(f, " {}", self.dte)
    }
}

/// Why an IVHD's entries do not describe a consistent set of requester IDs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FactError {
    /// A range start (at `offset`) not followed by a range end.
    RangeWithoutEnd { offset: usize },
    /// A range end (at `offset`) with no open range.
    EndWithoutStart { offset: usize },
    /// A range whose end (at `offset`) lies before its start.
    InvertedRange {
        offset: usize,
        first: Bdf,
        last: Bdf,
    },
}

impl fmt::Display for FactError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FactError::RangeWithoutEnd { offset } => {
                write!(f, "IVHD range start at {offset:#x} has no range end")
            }
            FactError::EndWithoutStart { offset } => {
                write!(f, "IVHD range end at {offset:#x} has no range start")
            }
            FactError::InvertedRange {
                offset,
                first,
                last,
            } => write!(
                f,
                "IVHD range ending at {offset:#x} runs backwards: {first} to {last}"
            ),
        }
    }
}

/// Every fact of one IVHD, in entry order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceFacts<'a> {
    facts: Vec<DeviceFact<'a>>,
}

impl<'a> DeviceFacts<'a> {
    pub fn as_slice(&self) -> &[DeviceFact<'a>] {
        &self.facts
    }

    /// The fact that decides `bdf`'s DTE setting: the last one covering it.
    pub fn covering(&self, bdf: Bdf) -> Option<&DeviceFact<'a>> {
        self.facts.iter().rev().find(|f| f.covers(bdf))
    }

    /// The requester ID that `bdf`'s DMA carries: the last alias covering it, else itself.
    pub fn alias_of(&self, bdf: Bdf) -> Bdf {
        self.facts
            .iter()
            .rev()
            .find_map(|f| f.alias.filter(|_| f.covers(bdf)))
            .unwrap_or(bdf)
    }

    /// The facts whose devices' DMA carries requester ID `rid`: together with `rid`'s own
    /// function, these devices cannot be isolated from each other.
    pub fn aliased_to(&self, rid: Bdf) -> impl Iterator<Item = &DeviceFact<'a>> + '_ {
        self.facts.iter().filter(move |f| f.alias == Some(rid))
    }
}

/// A range start waiting for its end.
struct OpenRange {
    first: Bdf,
    dte: DteSetting,
    alias: Option<Bdf>,
    ext: Option<ExtendedSetting>,
    offset: usize,
}

/// Expands `entries` into facts (see the module doc for the rules).
pub(super) fn expand<'a>(entries: &[DeviceEntry<'a>]) -> Result<DeviceFacts<'a>, FactError> {
    let mut facts = Vec::new();
    let mut open: Option<OpenRange> = None;
    for e in entries {
        let one = |alias, ext, kind| DeviceFact {
            first: e.device_id,
            last: e.device_id,
            dte: e.dte,
            alias,
            ext,
            kind,
            offset: e.offset,
        };
        let start = |alias, ext| OpenRange {
            first: e.device_id,
            dte: e.dte,
            alias,
            ext,
            offset: e.offset,
        };
        if let Some(range) = &open {
            if !matches!(e.detail, EntryDetail::Pad | EntryDetail::RangeEnd) {
                return Err(FactError::RangeWithoutEnd {
                    offset: range.offset,
                });
            }
        }
        match e.detail {
            EntryDetail::Pad | EntryDetail::Unknown { .. } => {}
            EntryDetail::All => facts.push(DeviceFact {
                first: Bdf::from_requester_id(0),
                last: Bdf::from_requester_id(u16::MAX),
                ..one(None, None, FactKind::Pci)
            }),
            EntryDetail::Select => facts.push(one(None, None, FactKind::Pci)),
            EntryDetail::AliasSelect { alias } => facts.push(one(Some(alias), None, FactKind::Pci)),
            EntryDetail::ExtendedSelect { ext } => facts.push(one(None, Some(ext), FactKind::Pci)),
            EntryDetail::RangeStart => open = Some(start(None, None)),
            EntryDetail::AliasRangeStart { alias } => open = Some(start(Some(alias), None)),
            EntryDetail::ExtendedRangeStart { ext } => open = Some(start(None, Some(ext))),
            EntryDetail::RangeEnd => {
                let Some(range) = open.take() else {
                    return Err(FactError::EndWithoutStart { offset: e.offset });
                };
                if e.device_id < range.first {
                    return Err(FactError::InvertedRange {
                        offset: e.offset,
                        first: range.first,
                        last: e.device_id,
                    });
                }
                facts.push(DeviceFact {
                    first: range.first,
                    last: e.device_id,
                    dte: range.dte,
                    alias: range.alias,
                    ext: range.ext,
                    kind: FactKind::Pci,
                    offset: range.offset,
                });
            }
            EntryDetail::Special {
                handle,
                source,
                variety,
            } => facts.push(DeviceFact {
                first: source,
                last: source,
                ..one(None, None, FactKind::Special { handle, variety })
            }),
            EntryDetail::AcpiHid(hid) => facts.push(one(None, None, FactKind::Acpi(hid))),
        }
    }
    match open {
        Some(range) => Err(FactError::RangeWithoutEnd {
            offset: range.offset,
        }),
        None => Ok(DeviceFacts { facts }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::Reader;

    fn rid(v: u16) -> Bdf {
        Bdf::from_requester_id(v)
    }

    /// Entries from raw bytes, as they would sit in an IVHD at table offset 0x48.
    fn entries(bytes: &[u8]) -> Vec<DeviceEntry<'_>> {
        super::super::entry::parse_entries(Reader::new(bytes, 0x48)).expect("valid entries")
    }

    #[test]
    fn ranges_pair_and_aliases_apply_to_the_whole_range() {
        let bytes = [
            0x03, 0x08, 0x00, 0x00, // range 00:01.0 ..
            0x04, 0xfe, 0xff, 0x00, // .. ff:1f.6
            0x43, 0x00, 0xff, 0x00, 0x00, 0xa4, 0x00, 0x00, // ff:00.0 .. aliased to 00:14.4
            0x00, 0x00, 0x00, 0x00, // pad between start and end is fine
            0x04, 0xff, 0xff, 0x00, // .. ff:1f.7
            0x02, 0x10, 0x00, 0xd7, // select 00:02.0, later DTE setting wins
            0x48, 0x00, 0x00, 0xd7, 0x21, 0xa0, 0x00, 0x01, // IOAPIC 0x21 as 00:14.0
        ];
        let e = entries(&bytes);
        let facts = expand(&e).expect("consistent");
        let f = facts.as_slice();
        assert_eq!(f.len(), 4);
        assert_eq!(
            (f[0].first, f[0].last, f[0].offset),
            (rid(8), rid(0xfffe), 0x48)
        );
        assert_eq!((f[1].first, f[1].last), (rid(0xff00), rid(0xffff)));
        assert_eq!(facts.alias_of(rid(0xff13)), rid(0xa4));
        assert_eq!(facts.alias_of(rid(0x0010)), rid(0x0010));
        assert_eq!(
            facts.covering(rid(0x10)).map(|f| f.dte),
            Some(DteSetting(0xd7))
        );
        assert_eq!(
            facts.covering(rid(0x18)).map(|f| f.dte),
            Some(DteSetting(0))
        );
        assert!(facts.covering(rid(0)).is_none());
        assert_eq!(
            f[3].kind,
            FactKind::Special {
                handle: 0x21,
                variety: SpecialVariety::IoApic
            }
        );
        assert_eq!(f[3].first, rid(0xa0));
        assert_eq!(facts.aliased_to(rid(0xa4)).count(), 1);
    }

    #[test]
    fn an_alias_survives_a_later_select_of_the_same_device() {
        let bytes = [
            0x42, 0x08, 0x01, 0x00, 0x00, 0x10, 0x00, 0x00, // 01:01.0 aliased to 00:02.0
            0x02, 0x08, 0x01, 0x07, // 01:01.0 selected again with another DTE setting
        ];
        let e = entries(&bytes);
        let facts = expand(&e).expect("consistent");
        assert_eq!(facts.alias_of(rid(0x0108)), rid(0x0010));
        assert_eq!(
            facts.covering(rid(0x0108)).map(|f| f.dte),
            Some(DteSetting(7))
        );
    }

    #[test]
    fn all_entry_covers_every_id() {
        let e = entries(&[0x01, 0, 0, 0x01]);
        let facts = expand(&e).expect("consistent");
        assert!(facts.covering(rid(0)).is_some());
        assert!(facts.covering(rid(0xffff)).is_some());
    }

    #[test]
    fn unpaired_and_inverted_ranges_are_errors() {
        let start_only = entries(&[0x03, 0x08, 0, 0]);
        assert_eq!(
            expand(&start_only),
            Err(FactError::RangeWithoutEnd { offset: 0x48 })
        );
        let interrupted = entries(&[0x47, 0x08, 0, 0, 0, 0, 0, 0x80, 0x02, 0x10, 0, 0]);
        assert_eq!(
            expand(&interrupted),
            Err(FactError::RangeWithoutEnd { offset: 0x48 })
        );
        let end_only = entries(&[0x02, 0x08, 0, 0, 0x04, 0xff, 0, 0]);
        assert_eq!(
            expand(&end_only),
            Err(FactError::EndWithoutStart { offset: 0x4c })
        );
        let inverted = entries(&[0x03, 0x10, 0, 0, 0x04, 0x08, 0, 0]);
        assert_eq!(
            expand(&inverted),
            Err(FactError::InvertedRange {
                offset: 0x4c,
                first: rid(0x10),
                last: rid(0x08)
            })
        );
        assert!(FactError::RangeWithoutEnd { offset: 0x48 }
            .to_string()
            .contains("0x48"));
    }

    #[test]
    fn extended_range_keeps_its_setting() {
        let e = entries(&[0x47, 0x00, 0x02, 0, 0, 0, 0, 0x80, 0x04, 0xff, 0x02, 0]);
        let facts = expand(&e).expect("consistent");
        let f = facts.covering(rid(0x0210)).expect("covered");
        assert!(f.ext.is_some_and(|x| x.ats_disabled()));
        assert_eq!(f.to_string(), "02:00.0..=02:1f.7 ext 0x80000000 dte=0x00");
    }
}
