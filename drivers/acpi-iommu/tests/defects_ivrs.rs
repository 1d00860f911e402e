//! Each IVRS defect check against a small hand-built table (AMD IOMMU spec rev 3.x, §5.2).
use acpi_iommu::defects::{fatal, ignored_units, ivrs_defects, Action, Defect};
use acpi_iommu::ivrs::IVRS_BLOCKS_OFFSET;
use acpi_iommu::sdt::fix_checksum;
use acpi_iommu::Ivrs;

const FIRST: usize = IVRS_BLOCKS_OFFSET;

/// An IVRS around `blocks`: header, IVinfo (EFRSup, 48-bit PA), reserved.
fn table(blocks: &[Vec<u8>]) -> Vec<u8> {
    let mut t = vec![0u8; IVRS_BLOCKS_OFFSET];
    t[..4].copy_from_slice(b"IVRS");
    t[8] = 2;
    t[36..40].copy_from_slice(&0x0020_3041u32.to_le_bytes());
    for b in blocks {
        t.extend_from_slice(b);
    }
    let len = t.len() as u32;
    t[4..8].copy_from_slice(&len.to_le_bytes());
    fix_checksum(&mut t);
    t
}

/// An IVHD of type `kind` (10h: 24-byte header, 11h/40h: 40) for IOMMU 00:00.2 at `base`.
fn ivhd(kind: u8, flags: u8, devid: u16, base: u64, entries: &[u8]) -> Vec<u8> {
    let header = if kind == 0x10 { 24 } else { 40 };
    let mut b = vec![kind, flags];
    b.extend_from_slice(&((header + entries.len()) as u16).to_le_bytes());
    b.extend_from_slice(&devid.to_le_bytes());
    b.extend_from_slice(&0x40u16.to_le_bytes());
    b.extend_from_slice(&base.to_le_bytes());
    b.resize(header, 0);
    b.extend_from_slice(entries);
    b
}

/// An IVMD (32 bytes).
fn ivmd(kind: u8, flags: u8, device: u16, aux: u16, start: u64, size: u64) -> Vec<u8> {
    let mut b = vec![kind, flags, 32, 0];
    b.extend_from_slice(&device.to_le_bytes());
    b.extend_from_slice(&aux.to_le_bytes());
    b.extend_from_slice(&[0; 8]);
    b.extend_from_slice(&start.to_le_bytes());
    b.extend_from_slice(&size.to_le_bytes());
    b
}

/// Range 00:01.0..=ff:1f.6, then IOAPIC 33 and HPET 0 as 00:14.0.
const ENTRIES: [u8; 24] = [
    0x03, 0x08, 0x00, 0x00, 0x04, 0xfe, 0xff, 0x00, // range
    0x48, 0, 0, 0xd7, 33, 0xa0, 0x00, 0x01, // IOAPIC 33
    0x48, 0, 0, 0, 0, 0xa0, 0x00, 0x02, // HPET 0
];

fn defects(blocks: &[Vec<u8>]) -> Vec<Defect> {
    let t = table(blocks);
    ivrs_defects(&Ivrs::parse(&t).expect("the builder makes valid tables"))
}

fn codes(list: &[Defect]) -> Vec<(&'static str, usize, Action)> {
    list.iter().map(|d| (d.code, d.offset, d.action)).collect()
}

fn good_ivhd(kind: u8) -> Vec<u8> {
    ivhd(kind, 0x30, 2, 0xfd20_0000, &ENTRIES)
}

#[test]
fn a_clean_table_has_no_defects() {
    let unity = ivmd(0x21, 0x07, 0x60, 0, 0x7d90_0000, 0x10_0000);
    assert_eq!(defects(&[good_ivhd(0x10), good_ivhd(0x11), unity]), []);
}

#[test]
fn no_ivhd_at_all_means_lazaret_cannot_run() {
    let list = defects(&[ivmd(0x20, 0x07, 0, 0, 0x1000, 0x1000)]);
    assert_eq!(codes(&list), [("ivrs-no-ivhd", 0, Action::CannotRun)]);
    assert!(fatal(&list).is_some());
}

#[test]
fn ivhd_base_zero_ignores_the_iommu_and_none_left_is_fatal() {
    let list = defects(&[ivhd(0x10, 0x30, 2, 0, &ENTRIES)]);
    assert_eq!(
        codes(&list),
        [
            ("ivhd-base-zero", FIRST, Action::IgnoreUnit),
            ("ivrs-no-usable-ivhd", 0, Action::CannotRun)
        ]
    );
    assert_eq!(ignored_units(&list).collect::<Vec<_>>(), [FIRST]);

    // Two IOMMUs, one of them unusable: Lazaret runs with the other.
    let range_only = &ENTRIES[..8];
    let list = defects(&[
        good_ivhd(0x11),
        ivhd(0x11, 0x30, 0x42, 0xfd20_2000, range_only),
    ]);
    let second = FIRST + 40 + ENTRIES.len();
    assert_eq!(
        codes(&list),
        [("ivhd-base-unaligned", second, Action::IgnoreUnit)]
    );
}

#[test]
fn a_bad_block_lazaret_does_not_read_is_harmless() {
    // The 10h block has base 0, but the 11h block of the same IOMMU is the one read.
    let list = defects(&[ivhd(0x10, 0x30, 2, 0, &ENTRIES), good_ivhd(0x11)]);
    assert_eq!(codes(&list), [("ivhd-base-zero", FIRST, Action::Ignore)]);
    assert!(list[0].message.contains("does not read"), "{}", list[0]);
}

#[test]
fn duplicate_ivhd_types_and_bases() {
    let again = ivhd(0x11, 0x30, 2, 0xfd30_0000, &ENTRIES);
    let second = FIRST + 40 + ENTRIES.len();
    let list = defects(&[good_ivhd(0x11), again]);
    assert_eq!(
        codes(&list),
        [("ivhd-duplicate-type", second, Action::Ignore)]
    );
    assert!(list[0].message.contains("different base"), "{}", list[0]);

    let other_iommu_same_base = ivhd(0x11, 0x30, 0x42, 0xfd20_0000, &[]);
    let list = defects(&[good_ivhd(0x11), other_iommu_same_base]);
    assert_eq!(
        codes(&list),
        [("ivhd-duplicate-base", second, Action::IgnoreUnit)]
    );
}

#[test]
fn unknown_blocks_and_entries_are_skipped() {
    let block_51h = vec![0x51, 0, 8, 0, 0xaa, 0xbb, 0xcc, 0xdd];
    let unknown_entry = [0x3f, 0x10, 0x00, 0x00];
    let list = defects(&[block_51h, ivhd(0x10, 0x30, 2, 0xfd20_0000, &unknown_entry)]);
    assert_eq!(
        codes(&list),
        [
            ("ivrs-unknown-block", FIRST, Action::Ignore),
            ("ivhd-unknown-entry", FIRST + 8 + 24, Action::Ignore)
        ]
    );
    assert!(
        list[0].message.contains("type 51h (8 bytes)"),
        "{}",
        list[0]
    );
    assert!(list[1].message.contains("type 3fh"), "{}", list[1]);
}

#[test]
fn range_entries_that_do_not_pair_refuse_assignment() {
    let at = FIRST + 24;
    for (entries, code) in [
        (&[0x03u8, 0x08, 0, 0][..], "ivhd-range-without-end"),
        (
            &[0x03, 0x08, 0, 0, 0x02, 0x10, 0, 0][..],
            "ivhd-range-without-end",
        ),
        (&[0x04, 0xff, 0, 0][..], "ivhd-range-end-without-start"),
    ] {
        let list = defects(&[ivhd(0x10, 0x30, 2, 0xfd20_0000, entries)]);
        assert_eq!(codes(&list), [(code, at, Action::RefuseAssignment)]);
    }
    let inverted = [0x03, 0x10, 0, 0, 0x04, 0x08, 0, 0];
    let list = defects(&[ivhd(0x10, 0x30, 2, 0xfd20_0000, &inverted)]);
    assert_eq!(
        codes(&list),
        [("ivhd-range-inverted", at + 4, Action::RefuseAssignment)]
    );
    // In a block superseded by 11h the same mistake changes nothing.
    let list = defects(&[ivhd(0x10, 0x30, 2, 0xfd20_0000, &inverted), good_ivhd(0x11)]);
    assert_eq!(
        codes(&list),
        [("ivhd-range-inverted", at + 4, Action::Ignore)]
    );
}

#[test]
fn special_handles_reused_in_the_blocks_read() {
    let mut entries = ENTRIES.to_vec();
    entries.extend([0x48, 0, 0, 0, 33, 0x08, 0x00, 0x01]); // IOAPIC 33 again, as 00:01.0
    let list = defects(&[ivhd(0x40, 0x30, 2, 0xfd20_0000, &entries)]);
    let second = FIRST + 40 + ENTRIES.len();
    assert_eq!(
        codes(&list),
        [("ivhd-special-handle-duplicate", second, Action::Ignore)]
    );
    assert!(
        list[0]
            .message
            .starts_with("IOAPIC handle 33 is listed 2 times"),
        "{}",
        list[0]
    );
    // The 10h and 11h blocks of one IOMMU repeat the same specials: that is not a reuse.
    assert_eq!(defects(&[good_ivhd(0x10), good_ivhd(0x11)]), []);
}

#[test]
fn reserved_flag_bits_in_11h_blocks() {
    let list = defects(&[ivhd(0x10, 0xb0, 2, 0xfd20_0000, &ENTRIES)]);
    assert_eq!(list, []);
    let list = defects(&[ivhd(0x11, 0xb0, 2, 0xfd20_0000, &ENTRIES)]);
    assert_eq!(
        codes(&list),
        [("ivhd-reserved-flags", FIRST, Action::Ignore)]
    );
    assert!(
        list[0].message.contains("reserved bits 0x80"),
        "{}",
        list[0]
    );
}

#[test]
fn ivmd_ranges() {
    let at = FIRST + 24 + ENTRIES.len();
    let cases = [
        (
            ivmd(0x21, 0x07, 0x60, 0, 0x7d90_0000, 0),
            "ivmd-zero-length",
            Action::SkipRange,
        ),
        (
            ivmd(0x20, 0x07, 0, 0, u64::MAX - 0xfff, 0x2000),
            "ivmd-wraps",
            Action::SkipRange,
        ),
        (
            ivmd(0x21, 0x07, 0x60, 0, 0, 0x1000),
            "ivmd-page-zero",
            Action::SkipRange,
        ),
        (
            ivmd(0x21, 0x07, 0x60, 0, 0x7d90_0010, 0x1000),
            "ivmd-unaligned",
            Action::IdentityMapAnyway,
        ),
        (
            ivmd(0x22, 0x07, 0x0200, 0x0100, 0x7d90_0000, 0x1000),
            "ivmd-device-range-inverted",
            Action::SkipRange,
        ),
        (
            ivmd(0x21, 0x08, 0xc407, 0, 0x75e0_0000, 0x2_0000),
            "ivmd-exclusion-range",
            Action::IdentityMapAnyway,
        ),
    ];
    for (m, code, action) in cases {
        let list = defects(&[good_ivhd(0x10), m]);
        assert_eq!(codes(&list), [(code, at, action)], "{list:?}");
    }
    let exclusion = defects(&[
        good_ivhd(0x10),
        ivmd(0x21, 0x08, 0xc407, 0, 0x75e0_0000, 0x2_0000),
    ]);
    assert!(exclusion[0].message.contains("devices: c4:00.7"));
    assert!(exclusion[0]
        .message
        .contains("never uses the exclusion-range"));
}
