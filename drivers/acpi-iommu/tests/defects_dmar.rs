//! Each DMAR defect check against a small hand-built table (VT-d spec rev 4.1, chapter 8).
mod dmar_support;

use acpi_iommu::defects::{dmar_defects, fatal, ignored_units, Action, Defect};
use acpi_iommu::Dmar;
use dmar_support::{drhd, rmrr, scope, structure, table};

const ENDPOINT: u8 = 1;
const BRIDGE: u8 = 2;
const IOAPIC: u8 = 3;
const HPET: u8 = 4;
const ACPI: u8 = 5;
const INCLUDE_PCI_ALL: u8 = 1;

/// Offset of the first structure: 36-byte header, HAW, flags, 10 reserved bytes.
const FIRST: usize = 48;

fn defects(structures: &[Vec<u8>]) -> Vec<Defect> {
    let t = table(38, 1, structures);
    dmar_defects(&Dmar::parse(&t).expect("the builder makes valid tables"))
}

fn codes(list: &[Defect]) -> Vec<(&'static str, usize, Action)> {
    list.iter().map(|d| (d.code, d.offset, d.action)).collect()
}

fn catch_all() -> Vec<u8> {
    drhd(
        INCLUDE_PCI_ALL,
        0,
        0xfed9_1000,
        &[scope(IOAPIC, 2, 0xf0, &[(0x1f, 0)])],
    )
}

fn gpu_unit() -> Vec<u8> {
    drhd(0, 0, 0xfed9_0000, &[scope(ENDPOINT, 0, 0, &[(2, 0)])])
}

#[test]
fn a_clean_table_has_no_defects() {
    let rmrr = rmrr(
        0,
        0x8b80_0000,
        0x8f9f_ffff,
        &[scope(ENDPOINT, 0, 0, &[(2, 0)])],
    );
    assert_eq!(defects(&[gpu_unit(), catch_all(), rmrr]), []);
}

#[test]
fn drhd_base_zero_or_unaligned_ignores_that_unit() {
    let zero = drhd(0, 0, 0, &[scope(ENDPOINT, 0, 0, &[(2, 0)])]);
    let list = defects(&[zero, catch_all()]);
    assert_eq!(
        codes(&list),
        [("drhd-base-zero", FIRST, Action::IgnoreUnit)]
    );
    assert_eq!(ignored_units(&list).collect::<Vec<_>>(), [FIRST]);
    assert!(fatal(&list).is_none());

    let unaligned = drhd(0, 0, 0xfed9_0800, &[scope(ENDPOINT, 0, 0, &[(2, 0)])]);
    let list = defects(&[unaligned, catch_all()]);
    assert_eq!(
        codes(&list),
        [("drhd-base-unaligned", FIRST, Action::IgnoreUnit)]
    );
    assert!(list[0].message.contains("0xfed90800"), "{}", list[0]);
}

#[test]
fn no_usable_unit_means_lazaret_cannot_run() {
    let zero_catch_all = drhd(INCLUDE_PCI_ALL, 0, 0, &[]);
    let list = defects(&[zero_catch_all]);
    assert_eq!(
        codes(&list),
        [
            ("drhd-base-zero", FIRST, Action::IgnoreUnit),
            ("dmar-no-usable-drhd", 0, Action::CannotRun)
        ]
    );
    assert_eq!(fatal(&list).map(|d| d.code), Some("dmar-no-usable-drhd"));

    let only_rmrr = rmrr(0, 0x1000, 0x1fff, &[scope(ENDPOINT, 0, 0, &[(2, 0)])]);
    let list = defects(&[only_rmrr]);
    assert_eq!(fatal(&list).map(|d| d.code), Some("dmar-no-drhd"));
}

#[test]
fn duplicate_bases_and_empty_units_are_ignored() {
    let first = gpu_unit();
    let second = drhd(0, 0, 0xfed9_0000, &[scope(ENDPOINT, 0, 0, &[(3, 0)])]);
    let empty = drhd(0, 0, 0xfed8_4000, &[]);
    let second_at = FIRST + first.len();
    let empty_at = second_at + second.len();
    let list = defects(&[first, second, empty, catch_all()]);
    assert_eq!(
        codes(&list),
        [
            ("drhd-duplicate-base", second_at, Action::IgnoreUnit),
            ("drhd-no-scope", empty_at, Action::IgnoreUnit),
        ]
    );
}

#[test]
fn include_pci_all_must_be_last_and_alone_in_its_segment() {
    let all = catch_all();
    let gpu_at = FIRST + all.len();
    let second_all = drhd(INCLUDE_PCI_ALL, 0, 0xfed9_3000, &[]);
    let second_at = gpu_at + gpu_unit().len();
    let other_segment = drhd(INCLUDE_PCI_ALL, 1, 0xfed9_4000, &[]);
    let list = defects(&[all, gpu_unit(), second_all, other_segment]);
    assert_eq!(
        codes(&list),
        [
            ("drhd-include-all-not-last", FIRST, Action::Ignore),
            ("drhd-include-all-duplicate", second_at, Action::Ignore),
        ]
    );
    assert!(list[1].message.contains("first @0x30"), "{}", list[1]);
}

#[test]
fn eight_hpet_scopes_with_one_id_are_one_warning() {
    let hpets: Vec<Vec<u8>> = (0..8).map(|f| scope(HPET, 0, 0xf0, &[(0x0f, f)])).collect();
    let unit = drhd(INCLUDE_PCI_ALL, 0, 0xfed9_1000, &hpets);
    let list = defects(&[unit]);
    // The DRHD's fixed part is 16 bytes; each HPET scope 8.
    assert_eq!(
        codes(&list),
        [("hpet-id-duplicate", FIRST + 16 + 8, Action::Ignore)]
    );
    assert!(list[0]
        .message
        .starts_with("8 HPET scopes share enumeration ID 0"));
    assert!(list[0].message.contains("the first (f0:0f.0) is used"));
}

#[test]
fn reused_ioapic_ids_are_found_across_units_and_types_are_kept_apart() {
    let a = drhd(0, 0, 0xc800_0000, &[scope(IOAPIC, 3, 0x80, &[(5, 4)])]);
    let a_len = a.len();
    let b = drhd(
        INCLUDE_PCI_ALL,
        0,
        0xdf10_0000,
        &[
            scope(IOAPIC, 3, 0, &[(0x1e, 1)]),
            scope(IOAPIC, 1, 0, &[(5, 4)]),
            scope(HPET, 1, 0, &[(0x0f, 0)]),
        ],
    );
    let list = defects(&[a, b]);
    assert_eq!(
        codes(&list),
        [("ioapic-id-duplicate", FIRST + a_len + 16, Action::Ignore)]
    );
    assert!(list[0].message.contains("80:05.4, 00:1e.1"), "{}", list[0]);
}

#[test]
fn rmrr_ranges() {
    let dev = || vec![scope(ENDPOINT, 0, 0, &[(0x14, 0)])];
    let cases = [
        (
            rmrr(0, 0x2000, 0x1fff, &dev()),
            "rmrr-zero-size",
            Action::SkipRange,
        ),
        (
            rmrr(0, 0x5000, 0x1fff, &dev()),
            "rmrr-inverted",
            Action::SkipRange,
        ),
        (
            rmrr(0, 0, 0xf_ffff, &dev()),
            "rmrr-page-zero",
            Action::SkipRange,
        ),
        (
            rmrr(0, 0x7944_e800, 0x7946_dfff, &dev()),
            "rmrr-unaligned",
            Action::IdentityMapAnyway,
        ),
        (
            rmrr(0, 0x7944_e000, 0x7946_d000, &dev()),
            "rmrr-unaligned",
            Action::IdentityMapAnyway,
        ),
        (
            rmrr(0, 0x7944_e000, 0x7946_dfff, &[]),
            "rmrr-no-scope",
            Action::Ignore,
        ),
    ];
    let unit_len = catch_all().len();
    for (r, code, action) in cases {
        let list = defects(&[catch_all(), r]);
        assert_eq!(codes(&list), [(code, FIRST + unit_len, action)], "{list:?}");
    }
}

#[test]
fn a_device_in_several_rmrrs_is_fine() {
    let usb = || vec![scope(ENDPOINT, 0, 0, &[(0x1a, 0)])];
    let first = rmrr(0, 0xbf45_8000, 0xbf46_ffff, &usb());
    let second = rmrr(0, 0xbf45_0000, 0xbf45_0fff, &usb());
    let second_at = FIRST + catch_all().len() + first.len();
    let list = defects(&[catch_all(), first, second]);
    assert_eq!(
        codes(&list),
        [("rmrr-device-in-several", second_at, Action::Ignore)]
    );
    assert!(list[0].message.contains("00:1a.0 (also @0x"), "{}", list[0]);
}

#[test]
fn an_rmrr_shared_by_devices_refuses_their_assignment() {
    let shared = rmrr(
        0,
        0xcf5c_6000,
        0xcf5d_5fff,
        &[
            scope(ENDPOINT, 0, 0, &[(0x1d, 0)]),
            scope(ENDPOINT, 0, 0, &[(0x1a, 0)]),
        ],
    );
    let list = defects(&[catch_all(), shared]);
    assert_eq!(
        codes(&list),
        [(
            "rmrr-shared",
            FIRST + catch_all().len(),
            Action::RefuseAssignment
        )]
    );
    assert!(list[0].message.contains("00:1d.0, 00:1a.0"));
}

#[test]
fn an_rmrr_over_devices_of_different_units_is_distinguished() {
    let bridge_unit = drhd(0, 0, 0xfed8_4000, &[scope(BRIDGE, 0, 0, &[(0x1c, 0)])]);
    let behind_bridge = scope(ENDPOINT, 0, 0, &[(0x1c, 0), (0, 0)]);
    let on_root_bus = scope(ENDPOINT, 0, 0, &[(0x14, 0)]);
    let r = rmrr(0, 0x8000_0000, 0x8000_ffff, &[behind_bridge, on_root_bus]);
    let list = defects(&[bridge_unit, catch_all(), r]);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].code, "rmrr-spans-units");
    assert_eq!(list[0].action, Action::RefuseAssignment);
    assert!(
        list[0].message.contains("00:1c.0/00.0 under DRHD @0x30"),
        "{}",
        list[0]
    );
    assert!(list[0].message.contains("00:14.0 under DRHD @0x"));
}

/// ANDD: 3 reserved bytes, device number, NUL-terminated name (§8.7).
fn andd(number: u8, name: &[u8]) -> Vec<u8> {
    let mut fixed = vec![0, 0, 0, number];
    fixed.extend_from_slice(name);
    structure(4, &fixed, &[])
}

#[test]
fn andd_names() {
    let cases: [(&[u8], Option<&str>); 6] = [
        (b"\\_SB.PCI0.I2C0\0", None),
        (b"\\_SB.PCI0.I2C0\0\0\0\0\0\0", Some("andd-name-padded")),
        (b"\\_SB.PCI0.I2C0", Some("andd-name-unterminated")),
        (b"\\_SB.\xffCI0\0", Some("andd-name-invalid")),
        (b"\0\0\0\0", Some("andd-name-invalid")),
        (b"\\_SB.I2C0\0junk", Some("andd-name-invalid")),
    ];
    let unit = drhd(
        INCLUDE_PCI_ALL,
        0,
        0xfed9_1000,
        &[scope(ACPI, 1, 0, &[(0x15, 0)])],
    );
    for (name, code) in cases {
        let list = defects(&[unit.clone(), andd(1, name)]);
        let expected: Vec<_> = code
            .map(|c| (c, FIRST + unit.len(), Action::Ignore))
            .into_iter()
            .collect();
        assert_eq!(
            codes(&list),
            expected,
            "{:?}",
            String::from_utf8_lossy(name)
        );
    }
    let padded = defects(&[unit.clone(), andd(1, b"\\_SB.PCI0.I2C0\0\0\0\0\0\0")]);
    assert!(padded[0].message.contains("5 NUL padding bytes"));
    let missing = defects(&[unit.clone(), andd(2, b"\\_SB.PCI0.I2C1\0")]);
    assert_eq!(
        codes(&missing),
        [("andd-missing", FIRST + 16, Action::Ignore)]
    );
}

#[test]
fn unknown_structures_reserved_scopes_bad_paths_and_stray_rhsas() {
    let unknown = structure(9, &[1, 2, 3, 4], &[]);
    let unit = drhd(
        INCLUDE_PCI_ALL,
        0,
        0xfed9_1000,
        &[
            scope(9, 0, 0, &[(1, 0)]),
            scope(ENDPOINT, 0, 0, &[(0x20, 0)]),
        ],
    );
    let mut rhsa_fixed = vec![0u8; 4];
    rhsa_fixed.extend(0xfbff_e000u64.to_le_bytes());
    rhsa_fixed.extend(1u32.to_le_bytes());
    let rhsa = structure(3, &rhsa_fixed, &[]);
    let unit_at = FIRST + unknown.len();
    let rhsa_at = unit_at + unit.len();
    let list = defects(&[unknown, unit, rhsa]);
    assert_eq!(
        codes(&list),
        [
            ("dmar-unknown-structure", FIRST, Action::Ignore),
            ("scope-type-reserved", unit_at + 16, Action::Ignore),
            ("scope-path-invalid", unit_at + 24, Action::Ignore),
            ("rhsa-unknown-unit", rhsa_at, Action::Ignore),
        ]
    );
    assert!(list[0].message.contains("structure type 9 (8 bytes)"));
}

#[test]
fn every_defect_displays_its_code_and_action() {
    let zero = drhd(INCLUDE_PCI_ALL, 0, 0, &[]);
    for d in defects(&[zero]) {
        let text = d.to_string();
        assert!(text.starts_with(&format!("[{}] @", d.code)), "{text}");
        assert!(
            text.contains(&format!("Lazaret will {}", d.action)),
            "{text}"
        );
    }
}
