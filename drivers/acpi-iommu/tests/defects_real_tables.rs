//! The defects of the 28 real tables in `testdata/`, pinned: each was checked by hand against
//! the table's `.dsl` (and SOURCES.tsv's notes, e.g. the Latitude's eight HPET scopes with ID 0
//! and the NUL-padded ANDD names). None stops Lazaret.
use std::path::PathBuf;

use acpi_iommu::defects::{dmar_defects, fatal, ivrs_defects, Defect};
use acpi_iommu::{Dmar, Ivrs};

/// file stem → (code, offset) of every defect, in report order. Files not listed have none.
const EXPECTED: &[(&str, &[(&str, usize)])] = &[
    (
        "dmar-dell-latitude-e6420",
        &[("hpet-id-duplicate", 0x50), ("rmrr-shared", 0x88)],
    ),
    (
        "dmar-dell-poweredge-r820",
        &[
            ("rmrr-shared", 0xe0),
            ("rmrr-device-in-several", 0x108),
            ("rmrr-device-in-several", 0x128),
        ],
    ),
    ("dmar-dell-precision-t3600", &[("rmrr-shared", 0x58)]),
    ("dmar-dell-precision-t5810", &[("rmrr-shared", 0x70)]),
    (
        "dmar-dell-xps13-9350",
        &[("andd-name-padded", 0xb8), ("andd-name-padded", 0xd4)],
    ),
    (
        "dmar-lenovo-thinkcentre-m58p",
        &[("rmrr-shared", 0xa0), ("rmrr-shared", 0xc8)],
    ),
    ("dmar-lenovo-thinkpad-t410", &[("rmrr-shared", 0x58)]),
    (
        "dmar-ms-surface-pro",
        &[
            ("andd-name-padded", 0xd0),
            ("andd-name-padded", 0xec),
            ("andd-name-padded", 0x108),
            ("andd-name-padded", 0x124),
            ("andd-name-padded", 0x140),
        ],
    ),
    ("dmar-supermicro-x10dai", &[("rmrr-shared", 0xd8)]),
    (
        "dmar-supermicro-x8dtn-f",
        &[
            ("rmrr-shared", 0x50),
            ("rmrr-shared", 0xa8),
            ("rmrr-device-in-several", 0xa8),
        ],
    ),
    (
        "ivrs-asus-prime-x399-a",
        &[("ivhd-reserved-flags", 0x78), ("ivhd-reserved-flags", 0xf8)],
    ),
    (
        "ivrs-asus-zenbook-s16-um5606wa",
        &[("ivmd-exclusion-range", 0xe8)],
    ),
    ("ivrs-biostar-a68mhe", &[("ivhd-reserved-flags", 0x70)]),
    (
        "ivrs-hp-laptop-14-fq0",
        &[("ivhd-reserved-flags", 0x78), ("ivhd-reserved-flags", 0xd0)],
    ),
    (
        "ivrs-lenovo-legion5-15arh05h",
        &[("ivhd-reserved-flags", 0x78), ("ivhd-reserved-flags", 0xd0)],
    ),
    ("ivrs-msi-ms-7b79", &[("ivhd-reserved-flags", 0x78)]),
    (
        "ivrs-valve-jupiter-steamdeck",
        &[("ivhd-reserved-flags", 0x78), ("ivhd-reserved-flags", 0xd0)],
    ),
];

fn real_tables() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dat"))
        .map(|p| {
            let stem = p.file_stem().unwrap().to_str().unwrap().to_string();
            (stem, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    assert_eq!(out.len(), 28);
    out
}

fn defects_of(bytes: &[u8]) -> Vec<Defect> {
    match &bytes[..4] {
        b"DMAR" => dmar_defects(&Dmar::parse(bytes).unwrap()),
        _ => ivrs_defects(&Ivrs::parse(bytes).unwrap()),
    }
}

#[test]
fn every_real_table_has_exactly_the_expected_defects() {
    for (name, bytes) in real_tables() {
        let found = defects_of(&bytes);
        let codes: Vec<(&str, usize)> = found.iter().map(|d| (d.code, d.offset)).collect();
        let expected = EXPECTED
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(&[][..], |(_, e)| e);
        assert_eq!(codes, expected, "{name}");
        assert!(
            fatal(&found).is_none(),
            "{name}: Lazaret runs on every real table"
        );
    }
}

#[test]
fn latitude_hpet_warning_names_all_eight_scopes() {
    let bytes = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/dmar-dell-latitude-e6420.dat"),
    )
    .unwrap();
    let found = defects_of(&bytes);
    let hpet = found
        .iter()
        .find(|d| d.code == "hpet-id-duplicate")
        .unwrap();
    for function in 0..8 {
        assert!(
            hpet.message.contains(&format!("f0:0f.{function}")),
            "{hpet}"
        );
    }
}
