//! The IVRS parser against 11 tables from real machines (testdata/ivrs-*.dat): each must
//! parse, agree field by field with iasl's decoding (the .dsl next to it), match the
//! features SOURCES.tsv lists, and yield consistent requester-ID facts.
//!
//! The iasl that wrote the .dsl files predates IVHD type 40h: it prints the 40h block's
//! common header and stops. Those blocks are checked against the 11h block of the same
//! IOMMU instead (real firmware repeats the entries, adding F0h devices).
use std::collections::BTreeMap;
use std::path::PathBuf;

use acpi_iommu::ivrs::{entry_kind, EntryDetail, Ivdb, IvhdType, SpecialVariety};
use acpi_iommu::{Ivhd, Ivrs};
use lazaret_types::Bdf;

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

/// Every ivrs-*.dat, by file stem, with its bytes.
fn tables() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(testdata())
        .expect("testdata")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("ivrs-") && name.ends_with(".dat")
        })
        .map(|p| {
            let stem = p.file_stem().and_then(|s| s.to_str()).expect("utf-8 name");
            (stem.to_string(), std::fs::read(&p).expect("read table"))
        })
        .collect();
    out.sort();
    assert_eq!(out.len(), 11, "expected the 11 IVRS dumps");
    out
}

// ---- a small reader for iasl's decoding ----------------------------------------------

#[derive(Debug, Default)]
struct DslEntry {
    offset: usize,
    kind: u8,
    device_id: u16,
    dte: u8,
    handle: Option<u8>,
    source: Option<u16>,
    variety: Option<u8>,
}

#[derive(Debug, Default)]
struct DslBlock {
    offset: usize,
    kind: u8,
    /// False when iasl did not know the type and printed only the common header.
    decoded: bool,
    fields: BTreeMap<String, u64>,
    entries: Vec<DslEntry>,
}

#[derive(Debug, Default)]
struct Dsl {
    ivinfo: u32,
    blocks: Vec<DslBlock>,
    raw: Vec<u8>,
}

fn hex(s: &str) -> u64 {
    u64::from_str_radix(s, 16).unwrap_or_else(|_| panic!("not hex: {s:?}"))
}

fn parse_dsl(text: &str) -> Dsl {
    let mut dsl = Dsl::default();
    for line in text.lines() {
        if line.starts_with("**** Unknown IVRS subtable type") {
            dsl.blocks.last_mut().expect("a block").decoded = false;
            continue;
        }
        if let Some((addr, bytes)) = line.trim_start().split_once(": ") {
            if addr.len() == 4 && addr.chars().all(|c| c.is_ascii_hexdigit()) {
                let hexpart = bytes.split("//").next().unwrap_or("");
                dsl.raw
                    .extend(hexpart.split_whitespace().map(|b| hex(b) as u8));
                continue;
            }
        }
        let Some(rest) = line.strip_prefix('[') else {
            continue;
        };
        let (pos, field) = rest.split_once(']').expect("closing bracket");
        let offset = hex(pos
            .split_whitespace()
            .next()
            .expect("offset")
            .trim_end_matches('h')) as usize;
        let Some((name, value)) = field.split_once(" : ") else {
            continue;
        };
        let name = name.trim();
        let token = value.split_whitespace().next().unwrap_or("");
        match name {
            "Subtable Type" => dsl.blocks.push(DslBlock {
                offset,
                kind: hex(token) as u8,
                decoded: true,
                ..DslBlock::default()
            }),
            "Entry Type" => {
                let block = dsl.blocks.last_mut().expect("entry inside a block");
                block.entries.push(DslEntry {
                    offset,
                    kind: hex(token) as u8,
                    ..DslEntry::default()
                });
            }
            _ => {
                let Some(block) = dsl.blocks.last_mut() else {
                    if name == "Virtualization Info" {
                        dsl.ivinfo = hex(token) as u32;
                    }
                    continue;
                };
                if let Some(e) = block.entries.last_mut() {
                    match name {
                        "Device ID" => e.device_id = hex(token) as u16,
                        "Data Setting" => e.dte = hex(token) as u8,
                        "Handle" => e.handle = Some(hex(token) as u8),
                        "Source Used Device ID" => e.source = Some(hex(token) as u16),
                        "Variety" => e.variety = Some(hex(token) as u8),
                        "Reserved" => {}
                        other => panic!("unexpected entry field {other:?}"),
                    }
                } else {
                    block.fields.insert(name.to_string(), hex(token));
                }
            }
        }
    }
    dsl
}

fn field(block: &DslBlock, name: &str) -> u64 {
    *block
        .fields
        .get(name)
        .unwrap_or_else(|| panic!("block at {:#x} has no {name:?}", block.offset))
}

// ---- comparison with the .dsl ----------------------------------------------------------

fn common_header(b: &Ivdb<'_>) -> (u8, usize, u8, u16, u16) {
    match b {
        Ivdb::Hardware(h) => (
            h.kind.raw(),
            h.offset,
            h.flags.0,
            h.length,
            h.iommu_bdf.requester_id(),
        ),
        Ivdb::Memory(m) => (
            m.kind as u8,
            m.offset,
            m.flags.0,
            m.length,
            m.device_id.requester_id(),
        ),
        Ivdb::Unknown { .. } => panic!("real tables hold no unknown block types"),
    }
}

fn compare_ivhd(name: &str, d: &DslBlock, h: &Ivhd<'_>) {
    let ctx = format!("{name} IVHD @{:#x}", h.offset);
    assert_eq!(field(d, "Base Address"), h.base_address.as_u64(), "{ctx}");
    assert_eq!(field(d, "PCI Segment Group"), u64::from(h.segment), "{ctx}");
    assert_eq!(
        field(d, "Capability Offset"),
        u64::from(h.capability_offset),
        "{ctx}"
    );
    assert_eq!(
        field(d, "Virtualization Info"),
        u64::from(h.iommu_info.0),
        "{ctx}"
    );
    let features = if h.kind == IvhdType::Fixed10 {
        "Feature Reporting"
    } else {
        "Attributes"
    };
    assert_eq!(field(d, features), u64::from(h.features), "{ctx}");
    if h.kind == IvhdType::Fixed11 {
        assert_eq!(Some(field(d, "EFR Image")), h.efr, "{ctx}");
    }
    assert_eq!(d.entries.len(), h.entries.len(), "{ctx}: entry count");
    for (de, e) in d.entries.iter().zip(&h.entries) {
        let ctx = format!("{ctx} entry @{:#x}", e.offset);
        assert_eq!(
            (de.offset, de.kind, de.device_id, de.dte),
            (e.offset, e.kind, e.device_id.requester_id(), e.dte.0),
            "{ctx}"
        );
        match e.detail {
            EntryDetail::AliasSelect { alias } | EntryDetail::AliasRangeStart { alias } => {
                assert_eq!(de.source, Some(alias.requester_id()), "{ctx}")
            }
            EntryDetail::Special {
                handle,
                source,
                variety,
            } => {
                assert_eq!(de.handle, Some(handle), "{ctx}");
                assert_eq!(de.source, Some(source.requester_id()), "{ctx}");
                let raw = match variety {
                    SpecialVariety::IoApic => 1,
                    SpecialVariety::Hpet => 2,
                    SpecialVariety::Other(v) => v,
                };
                assert_eq!(de.variety, Some(raw), "{ctx}");
            }
            EntryDetail::Unknown { .. } => panic!("{ctx}: unknown entry in a real table"),
            _ => assert_eq!((de.source, de.handle), (None, None), "{ctx}"),
        }
    }
}

fn compare_with_dsl(name: &str, table: &[u8], ivrs: &Ivrs<'_>) {
    let text = std::fs::read_to_string(testdata().join(format!("{name}.dsl"))).expect("dsl");
    let dsl = parse_dsl(&text);
    assert_eq!(dsl.raw, table, "{name}: the .dsl's raw dump is the .dat");
    assert_eq!(dsl.ivinfo, ivrs.info.0, "{name}: IVinfo");
    assert!(!dsl.blocks.is_empty(), "{name}: dsl has blocks");
    assert!(dsl.blocks.len() <= ivrs.blocks.len(), "{name}: block count");
    for (i, (d, b)) in dsl.blocks.iter().zip(&ivrs.blocks).enumerate() {
        let header = (
            d.kind,
            d.offset,
            field(d, "Flags") as u8,
            field(d, "Length") as u16,
            field(d, "DeviceId") as u16,
        );
        assert_eq!(header, common_header(b), "{name}: block {i}");
        if !d.decoded {
            assert_eq!(
                i + 1,
                dsl.blocks.len(),
                "{name}: iasl stops at an unknown block"
            );
            assert_eq!(d.kind, 0x40, "{name}: only 40h is unknown to this iasl");
            continue;
        }
        match b {
            Ivdb::Hardware(h) => compare_ivhd(name, d, h),
            Ivdb::Memory(m) => {
                assert_eq!(field(d, "Auxiliary Data"), u64::from(m.aux), "{name}");
                assert_eq!(field(d, "Start Address"), m.start.as_u64(), "{name}");
                assert_eq!(field(d, "Memory Length"), m.size, "{name}");
            }
            Ivdb::Unknown { .. } => unreachable!("rejected by common_header"),
        }
    }
    if dsl.blocks.last().is_some_and(|d| d.decoded) {
        assert_eq!(
            dsl.blocks.len(),
            ivrs.blocks.len(),
            "{name}: every block decoded"
        );
    }
}

/// iasl cannot show 40h blocks: check each against the 11h block of the same IOMMU, whose
/// entries real firmware repeats in it before adding the F0h (ACPI HID) devices.
fn check_40h_against_11h(name: &str, ivrs: &Ivrs<'_>) {
    for h40 in ivrs.ivhds().filter(|h| h.kind == IvhdType::Mixed40) {
        let h11 = ivrs
            .ivhds()
            .find(|h| h.kind == IvhdType::Fixed11 && h.iommu() == h40.iommu())
            .unwrap_or_else(|| panic!("{name}: 40h without 11h"));
        assert_eq!(
            (h40.base_address, h40.efr, h40.efr2, h40.capability_offset),
            (h11.base_address, h11.efr, h11.efr2, h11.capability_offset),
            "{name}"
        );
        let pci: Vec<_> = h40
            .entries
            .iter()
            .filter(|e| e.kind != entry_kind::ACPI_HID)
            .map(|e| (e.kind, e.device_id, e.dte, e.detail))
            .collect();
        let in_11h: Vec<_> = h11
            .entries
            .iter()
            .map(|e| (e.kind, e.device_id, e.dte, e.detail))
            .collect();
        assert_eq!(pci, in_11h, "{name}: 40h repeats the 11h entries");
        let last = h40.entries.last().expect("entries");
        assert_eq!(
            last.offset + table_entry_len(last),
            h40.offset + usize::from(h40.length),
            "{name}: the last entry ends the block"
        );
    }
}

fn table_entry_len(e: &acpi_iommu::ivrs::DeviceEntry<'_>) -> usize {
    match e.detail {
        EntryDetail::AcpiHid(hid) => 22 + hid.uid.len(),
        _ => 4 << (e.kind >> 6),
    }
}

// ---- comparison with SOURCES.tsv -------------------------------------------------------

fn features_of(name: &str) -> String {
    let tsv = std::fs::read_to_string(testdata().join("SOURCES.tsv")).expect("SOURCES.tsv");
    let line = tsv
        .lines()
        .find(|l| l.starts_with(&format!("{name}.dat\t")))
        .unwrap_or_else(|| panic!("{name} not in SOURCES.tsv"));
    line.rsplit('\t')
        .next()
        .expect("features column")
        .to_string()
}

/// "3 range-start" → (3, "range-start").
fn count_and_name(item: &str) -> (usize, &str) {
    let (n, what) = item.trim().split_once(' ').expect("count and name");
    (n.parse().expect("count"), what)
}

fn check_sources(name: &str, ivrs: &Ivrs<'_>) {
    let features = features_of(name);
    let all_entries: Vec<_> = ivrs.ivhds().flat_map(|h| &h.entries).collect();
    let count = |pred: &dyn Fn(&EntryDetail<'_>) -> bool| {
        all_entries.iter().filter(|e| pred(&e.detail)).count()
    };
    let mut checked = 0;
    for part in features.split("; ") {
        if part.starts_with("NOTE:") || part.starts_with("iasl ") {
            continue;
        } else if let Some(rest) = part.strip_prefix("rev ") {
            let (rev, bytes) = rest.split_once(", ").expect("rev, bytes");
            assert_eq!(rev.parse::<u8>().ok(), Some(ivrs.header.revision), "{name}");
            let bytes = bytes.trim_end_matches(" bytes").parse::<u32>().ok();
            assert_eq!(bytes, Some(ivrs.header.length), "{name}");
            checked += 1;
        } else if let Some(rest) = part.strip_prefix("IVinfo 0x") {
            let value = rest.split_whitespace().next().expect("value");
            assert_eq!(hex(value) as u32, ivrs.info.0, "{name}");
            checked += 1;
        } else if part.contains(" x IVHD ") {
            let (blocks, iommus) = part.split_once(" (").expect("IOMMU count");
            for item in blocks.split(", ") {
                let (n, what) = item.split_once(" x IVHD ").expect("n x IVHD t");
                let kind = hex(what.trim_end_matches('h')) as u8;
                let found = ivrs.ivhds().filter(|h| h.kind.raw() == kind).count();
                assert_eq!(
                    n.parse::<usize>().ok(),
                    Some(found),
                    "{name}: IVHD {kind:x}h"
                );
            }
            let (n, _) = count_and_name(iommus.trim_end_matches(')'));
            assert_eq!(n, ivrs.selected_ivhds().len(), "{name}: IOMMUs");
            checked += 1;
        } else if let Some(rest) = part.strip_prefix("entries (all IVHDs): ") {
            for item in rest.split(", ") {
                let (n, what) = count_and_name(item);
                let found = match what {
                    "select" => count(&|d| matches!(d, EntryDetail::Select)),
                    "range-start" => count(&|d| matches!(d, EntryDetail::RangeStart)),
                    "alias-range" => count(&|d| matches!(d, EntryDetail::AliasRangeStart { .. })),
                    "alias-select" => count(&|d| matches!(d, EntryDetail::AliasSelect { .. })),
                    "pad/reserved" => count(&|d| matches!(d, EntryDetail::Pad)),
                    "special" => count(&|d| matches!(d, EntryDetail::Special { .. })),
                    other => panic!("{name}: unhandled entry kind {other:?} in SOURCES.tsv"),
                };
                assert_eq!(n, found, "{name}: {what}");
            }
            checked += 1;
        } else if let Some(rest) = part.strip_prefix("special: ") {
            for item in rest.split(", ") {
                let (n, what) = count_and_name(item);
                let variety = match what {
                    "IOAPIC" => SpecialVariety::IoApic,
                    "HPET" => SpecialVariety::Hpet,
                    other => panic!("{name}: unhandled special {other:?}"),
                };
                let found = count(
                    &|d| matches!(d, EntryDetail::Special { variety: v, .. } if *v == variety),
                );
                assert_eq!(n, found, "{name}: {what}");
            }
            checked += 1;
        } else if part.contains(" ACPI-HID (") {
            let (n, hids) = part.split_once(" ACPI-HID (").expect("hid list");
            let mut want: Vec<&str> = hids.trim_end_matches(')').split(',').collect();
            let mut found: Vec<String> = all_entries
                .iter()
                .filter_map(|e| match e.detail {
                    EntryDetail::AcpiHid(h) => {
                        Some(String::from_utf8_lossy(h.hid_str()).into_owned())
                    }
                    _ => None,
                })
                .collect();
            assert_eq!(
                n.parse::<usize>().ok(),
                Some(found.len()),
                "{name}: F0h count"
            );
            found.sort();
            found.dedup();
            want.sort();
            assert_eq!(found, want, "{name}: HIDs");
            checked += 1;
        } else if part.contains(" IVMD ") {
            let (n, kind) = part.split_once(" IVMD ").expect("n IVMD t");
            let kind = kind.split_whitespace().next().expect("type");
            let kind = hex(kind.trim_end_matches('h')) as u8;
            let found = ivrs.ivmds().filter(|m| m.kind as u8 == kind).count();
            assert_eq!(n.parse::<usize>().ok(), Some(found), "{name}: IVMD");
            assert_eq!(found, ivrs.ivmds().count(), "{name}: no other IVMD types");
            checked += 1;
        }
    }
    assert!(checked >= 4, "{name}: too few features checked ({checked})");
    if !features.contains(" IVMD ") {
        assert_eq!(ivrs.ivmds().count(), 0, "{name}: no IVMD listed");
    }
    if !features.contains("ACPI-HID") {
        assert!(!all_entries.iter().any(|e| e.kind == entry_kind::ACPI_HID));
    }
}

// ---- the requester-ID view ---------------------------------------------------------------

fn check_facts(name: &str, ivrs: &Ivrs<'_>) {
    for h in ivrs.selected_ivhds() {
        let facts = h
            .device_facts()
            .unwrap_or_else(|e| panic!("{name}: IVHD @{:#x}: {e}", h.offset));
        assert!(
            !facts.as_slice().is_empty(),
            "{name}: IVHD covers something"
        );
        for e in &h.entries {
            match e.detail {
                EntryDetail::AliasRangeStart { alias } | EntryDetail::AliasSelect { alias } => {
                    assert_eq!(facts.alias_of(e.device_id), alias, "{name}");
                }
                EntryDetail::Select => {
                    let f = facts.covering(e.device_id).expect("covered");
                    assert_eq!(f.dte, e.dte, "{name}");
                }
                EntryDetail::Special { source, .. } => {
                    assert!(facts.covering(source).is_some(), "{name}");
                }
                _ => {}
            }
        }
        // The IOMMU's own function is never given an alias by firmware.
        assert_eq!(facts.alias_of(h.iommu_bdf), h.iommu_bdf, "{name}");
    }
}

#[test]
fn every_real_table_parses_and_agrees_with_iasl_and_sources() {
    for (name, table) in tables() {
        let ivrs = Ivrs::parse(&table).unwrap_or_else(|e| panic!("{name}: {e}"));
        compare_with_dsl(&name, &table, &ivrs);
        check_40h_against_11h(&name, &ivrs);
        check_sources(&name, &ivrs);
        check_facts(&name, &ivrs);
        assert_eq!(ivrs.unknown_parts().count(), 0, "{name}");
        let shown = ivrs.to_string();
        assert_eq!(
            shown.matches("\nIVHD ").count(),
            ivrs.ivhds().count(),
            "{name}: Display lists every IVHD"
        );
    }
}

#[test]
fn selected_ivhd_is_the_highest_type_per_iommu() {
    let expect = [
        ("ivrs-supermicro-h8dgu", vec![IvhdType::Fixed10]),
        ("ivrs-biostar-a68mhe", vec![IvhdType::Fixed11]),
        (
            "ivrs-asus-prime-x399-a",
            vec![IvhdType::Fixed11, IvhdType::Fixed11],
        ),
        ("ivrs-valve-jupiter-steamdeck", vec![IvhdType::Mixed40]),
    ];
    let all = tables();
    for (name, kinds) in expect {
        let (_, table) = all.iter().find(|(n, _)| n == name).expect("present");
        let ivrs = Ivrs::parse(table).expect("valid");
        let chosen: Vec<_> = ivrs.selected_ivhds().iter().map(|h| h.kind).collect();
        assert_eq!(chosen, kinds, "{name}");
    }
}

#[test]
fn zenbook_details_decode() {
    let table = std::fs::read(testdata().join("ivrs-asus-zenbook-s16-um5606wa.dat")).expect("dat");
    let ivrs = Ivrs::parse(&table).expect("valid");
    let ivmds: Vec<_> = ivrs.ivmds().collect();
    assert!(ivmds[0].flags.unity() && ivmds[0].flags.read() && ivmds[0].flags.write());
    assert!(ivmds[1].flags.exclusion() && !ivmds[1].flags.unity());
    assert_eq!(
        ivmds[0].devices(),
        (Bdf::from_requester_id(0x60), Bdf::from_requester_id(0x60))
    );
    assert_eq!(ivmds[0].end().map(|a| a.as_u64()), Some(0x7da0_0000));
    let h40 = ivrs.selected_ivhds()[0];
    let hids: Vec<_> = h40
        .entries
        .iter()
        .filter_map(|e| match e.detail {
            EntryDetail::AcpiHid(h) => Some(h),
            _ => None,
        })
        .collect();
    assert_eq!(hids.len(), 5);
    assert_eq!(hids[0].uid, b"\\_SB.FUR0");
    assert_eq!(hids[4].hid_str(), b"MSFT0201");
    assert_eq!(hids[4].uid_integer(), Some(1));
    assert!(ivrs.info.efr_sup() && ivrs.info.dma_remap_sup());
    let shown = ivrs.to_string();
    assert!(shown.contains("ACPI HID \"MSFT0201\" UID 1"), "{shown}");
    assert!(shown.contains("exclusion"), "{shown}");
}

// ---- malformed variants of the real tables -----------------------------------------------

/// `table` with its length field set to its size and its checksum fixed.
fn resealed(mut table: Vec<u8>) -> Vec<u8> {
    let len = table.len() as u32;
    if table.len() >= 8 {
        table[4..8].copy_from_slice(&len.to_le_bytes());
    }
    acpi_iommu::sdt::fix_checksum(&mut table);
    table
}

#[test]
fn truncation_at_every_length_is_clean() {
    use acpi_iommu::ParseError;
    for (name, table) in tables() {
        let ivrs = Ivrs::parse(&table).expect("valid");
        let mut boundaries = vec![48usize];
        for b in &ivrs.blocks {
            let (_, offset, _, length, _) = common_header(b);
            boundaries.push(offset + usize::from(length));
        }
        for cut in 0..table.len() {
            // As delivered: the length field no longer matches.
            assert!(Ivrs::parse(&table[..cut]).is_err(), "{name} cut {cut}");
            // Re-sealed: header checks pass, the block walk must catch it.
            let sealed = resealed(table[..cut].to_vec());
            let result = Ivrs::parse(&sealed);
            if cut < 36 {
                assert!(result.is_err(), "{name} cut {cut}");
            } else if let Some(n) = boundaries.iter().position(|&b| b == cut) {
                let ok = result.unwrap_or_else(|e| panic!("{name} cut {cut}: {e}"));
                assert_eq!(ok.blocks.len(), n, "{name} cut {cut}");
            } else {
                assert!(
                    matches!(
                        result,
                        Err(ParseError::Truncated { .. } | ParseError::BadSubtableLength { .. })
                    ),
                    "{name} cut {cut}: {result:?}"
                );
            }
        }
    }
}

#[test]
fn wrong_length_field_and_bad_checksum_are_rejected() {
    use acpi_iommu::ParseError;
    for (name, table) in tables() {
        let mut longer = table.clone();
        longer[4] = longer[4].wrapping_add(1);
        assert!(
            matches!(Ivrs::parse(&longer), Err(ParseError::BadLength { .. })),
            "{name}"
        );
        let mut bad = table.clone();
        bad[60] ^= 0x10;
        assert!(
            matches!(Ivrs::parse(&bad), Err(ParseError::BadChecksum { .. })),
            "{name}"
        );
    }
}

#[test]
fn bad_block_and_entry_lengths_are_rejected() {
    use acpi_iommu::ParseError;
    for (name, table) in tables() {
        let ivrs = Ivrs::parse(&table).expect("valid");
        // Zero length on the first block: would loop forever if accepted.
        let mut zero = table.clone();
        zero[50..52].copy_from_slice(&[0, 0]);
        assert_eq!(
            Ivrs::parse(&resealed(zero)),
            Err(ParseError::BadSubtableLength {
                offset: 48,
                length: 0
            }),
            "{name}"
        );
        // The last block claims 4 bytes more than the table holds.
        let (_, last_offset, _, last_len, _) = common_header(ivrs.blocks.last().expect("blocks"));
        let mut past = table.clone();
        let longer = (last_len + 4).to_le_bytes();
        past[last_offset + 2..last_offset + 4].copy_from_slice(&longer);
        assert_eq!(
            Ivrs::parse(&resealed(past)),
            Err(ParseError::BadSubtableLength {
                offset: last_offset,
                length: usize::from(last_len) + 4
            }),
            "{name}"
        );
        // Every F0h entry whose UID length is pushed past its block.
        for h in ivrs.ivhds() {
            for e in h.entries.iter().filter(|e| e.kind == entry_kind::ACPI_HID) {
                let mut long_uid = table.clone();
                long_uid[e.offset + 21] = 0xff;
                assert_eq!(
                    Ivrs::parse(&resealed(long_uid)),
                    Err(ParseError::BadSubtableLength {
                        offset: e.offset,
                        length: 22 + 0xff
                    }),
                    "{name}"
                );
            }
        }
    }
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Random byte changes and cuts of real tables, re-sealed so they get past the
        /// header checks: parsing, fact expansion and Display never panic.
        #[test]
        fn mutated_real_tables_never_panic(
            which in 0usize..11,
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in proptest::option::of(any::<usize>()),
        ) {
            let all = tables();
            let mut table = all[which].1.clone();
            for (pos, byte) in edits {
                let i = 36 + pos % (table.len() - 36);
                table[i] = byte;
            }
            if let Some(cut) = cut {
                table.truncate(cut % (table.len() + 1));
            }
            let table = resealed(table);
            if let Ok(ivrs) = Ivrs::parse(&table) {
                let _ = ivrs.to_string();
                for h in ivrs.selected_ivhds() {
                    if let Ok(facts) = h.device_facts() {
                        let _ = facts.alias_of(Bdf::from_requester_id(0xa4));
                        for f in facts.as_slice() {
                            let _ = f.to_string();
                        }
                    }
                }
            }
        }
    }
}
