//! Malformed DMAR tables: each yields a clean error naming the offending offset, never a
//! panic or a hang.
mod dmar_support;

use acpi_iommu::dmar::{Dmar, RemappingStructure, RmrrDefect, UnknownStructure};
use acpi_iommu::ParseError;
use dmar_support::{drhd, real_tables, reseal, rmrr, scope, structure, table};

/// Offset of the first remapping structure (ACPI header 36 + HAW, flags, 10 reserved).
const FIRST: usize = 48;

fn one_unit() -> Vec<u8> {
    table(
        38,
        1,
        &[drhd(1, 0, 0xfed9_0000, &[scope(3, 2, 0xf0, &[(0x1f, 0)])])],
    )
}

#[test]
fn a_well_formed_hand_built_table_parses() {
    let bytes = one_unit();
    let dmar = Dmar::parse(&bytes).unwrap();
    let unit = dmar.drhds().next().unwrap();
    assert_eq!(unit.offset, FIRST);
    assert_eq!(unit.scopes.count(), 1);
}

#[test]
fn every_truncation_is_rejected() {
    for (name, bytes) in real_tables() {
        for n in 0..bytes.len() {
            let err = Dmar::parse(&bytes[..n]).expect_err(&format!("{name} cut at {n}"));
            let expected = if n < 8 {
                matches!(err, ParseError::Truncated { .. })
            } else if n < 36 {
                matches!(
                    err,
                    ParseError::Truncated { .. } | ParseError::BadLength { .. }
                )
            } else {
                err == ParseError::BadLength {
                    declared: bytes.len(),
                    available: n,
                }
            };
            assert!(expected, "{name} cut at {n}: {err}");
        }
    }
}

/// Cut the table anywhere and repair its length and checksum: the parse now reaches the
/// structures, and succeeds only when the cut falls exactly between two structures.
#[test]
fn every_resealed_truncation_fails_inside_a_structure() {
    for (name, bytes) in real_tables() {
        let dmar = Dmar::parse(&bytes).unwrap();
        let mut ends: Vec<usize> = dmar.structures().map(|s| s.offset()).skip(1).collect();
        ends.insert(0, FIRST);
        ends.push(bytes.len());
        for n in 36..bytes.len() {
            let mut cut = bytes[..n].to_vec();
            reseal(&mut cut);
            match Dmar::parse(&cut) {
                Ok(short) => {
                    let boundary = ends.iter().position(|&e| e == n);
                    assert_eq!(
                        boundary,
                        Some(short.structures().count()),
                        "{name} cut at {n}"
                    );
                }
                Err(err) => {
                    assert!(!ends.contains(&n) || n < FIRST, "{name} cut at {n}: {err}");
                    assert!(
                        matches!(
                            err,
                            ParseError::Truncated { .. } | ParseError::BadSubtableLength { .. }
                        ),
                        "{name} cut at {n}: {err}"
                    );
                }
            }
        }
    }
}

#[test]
fn wrong_length_field_is_rejected() {
    let bytes = one_unit();
    for declared in [bytes.len() - 1, bytes.len() + 1, 0, u32::MAX as usize] {
        let mut t = bytes.clone();
        t[4..8].copy_from_slice(&(declared as u32).to_le_bytes());
        assert_eq!(
            Dmar::parse(&t).unwrap_err(),
            ParseError::BadLength {
                declared,
                available: bytes.len()
            }
        );
    }
}

#[test]
fn bad_checksum_and_signature_are_rejected() {
    let mut t = one_unit();
    t[FIRST + 8] ^= 0x10;
    assert!(matches!(
        Dmar::parse(&t),
        Err(ParseError::BadChecksum { .. })
    ));
    let mut t = one_unit();
    t[..4].copy_from_slice(b"IVRS");
    reseal(&mut t);
    assert!(matches!(
        Dmar::parse(&t),
        Err(ParseError::WrongSignature { .. })
    ));
}

#[test]
fn a_header_without_its_dmar_fields_is_truncated() {
    let full = one_unit();
    for n in 36..FIRST {
        let mut t = full[..n].to_vec();
        reseal(&mut t);
        assert!(
            matches!(Dmar::parse(&t), Err(ParseError::Truncated { .. })),
            "cut at {n}"
        );
    }
}

fn with_structure_length(length: u16) -> Result<usize, ParseError> {
    let mut t = one_unit();
    t[FIRST + 2..FIRST + 4].copy_from_slice(&length.to_le_bytes());
    reseal(&mut t);
    Dmar::parse(&t).map(|d| d.structures().count())
}

#[test]
fn zero_short_and_overlong_structure_lengths_are_rejected() {
    let actual = one_unit().len() - FIRST;
    for length in [0, 1, 4, 15, actual as u16 + 1, u16::MAX] {
        assert_eq!(
            with_structure_length(length),
            Err(ParseError::BadSubtableLength {
                offset: FIRST,
                length: length.into()
            }),
            "length {length}"
        );
    }
    // A DRHD cut short of its scope: the 16-byte fixed part alone is a valid, scope-less unit,
    // and the orphaned scope bytes (03 08 00 00 ..) then read as a structure of type 0x0803
    // and length zero, which must not loop.
    assert_eq!(
        with_structure_length(16),
        Err(ParseError::BadSubtableLength {
            offset: FIRST + 16,
            length: 0
        })
    );
}

#[test]
fn each_type_needs_its_fixed_part() {
    for (structure_type, fixed_len) in [
        (0u16, 16usize),
        (1, 24),
        (2, 8),
        (3, 20),
        (4, 8),
        (5, 8),
        (6, 8),
    ] {
        let short = structure(structure_type, &vec![0; fixed_len - 5], &[]);
        let t = table(38, 0, &[short]);
        assert_eq!(
            Dmar::parse(&t).unwrap_err(),
            ParseError::BadSubtableLength {
                offset: FIRST,
                length: fixed_len - 1
            },
            "type {structure_type}"
        );
        let exact = table(
            38,
            0,
            &[structure(structure_type, &vec![0; fixed_len - 4], &[])],
        );
        let dmar = Dmar::parse(&exact).unwrap();
        assert_eq!(
            dmar.structures().next().unwrap().structure_type(),
            structure_type
        );
    }
}

#[test]
fn trailing_bytes_too_short_for_a_structure_header_are_truncated() {
    for extra in 1..4 {
        let mut t = one_unit();
        t.extend(vec![0u8; extra]);
        reseal(&mut t);
        // The type (2 bytes) or the length (the next 2) is what runs out.
        let at = if extra < 2 {
            t.len() - extra
        } else {
            t.len() - extra + 2
        };
        assert!(
            matches!(Dmar::parse(&t), Err(ParseError::Truncated { offset, .. }) if offset == at),
            "{extra} trailing bytes"
        );
    }
}

fn with_scope(scope_bytes: Vec<u8>) -> Result<(), ParseError> {
    let t = table(
        38,
        0,
        &[drhd(
            0,
            0,
            0xfed9_0000,
            &[scope(1, 0, 0, &[(2, 0)]), scope_bytes],
        )],
    );
    Dmar::parse(&t).map(|_| ())
}

#[test]
fn bad_scope_lengths_are_rejected() {
    let second = FIRST + 16 + 8;
    let bad = |length: usize| {
        Err(ParseError::BadSubtableLength {
            offset: second,
            length,
        })
    };
    // Zero, shorter than the 6-byte header, odd path, past the end of the DRHD.
    assert_eq!(with_scope(vec![1, 0, 0, 0, 0, 0, 2, 0]), bad(0));
    assert_eq!(with_scope(vec![1, 5, 0, 0, 0, 0, 2, 0]), bad(5));
    assert_eq!(with_scope(vec![1, 7, 0, 0, 0, 0, 2, 0]), bad(7));
    assert_eq!(with_scope(vec![1, 9, 0, 0, 0, 0, 2, 0, 0]), bad(9));
    assert_eq!(with_scope(vec![1, 10, 0, 0, 0, 0, 2, 0]), bad(10));
    // One byte left in the DRHD: not even a scope header.
    let truncated = with_scope(vec![1]);
    assert!(
        matches!(truncated, Err(ParseError::Truncated { offset, .. }) if offset == second + 1),
        "{truncated:?}"
    );
    // A header with an empty path names no device.
    assert_eq!(
        with_scope(vec![1, 6, 0, 0, 0, 0]),
        Err(ParseError::InvalidField {
            offset: second,
            what: "device scope with an empty path"
        })
    );
}

#[test]
fn bad_scopes_are_caught_in_every_scope_bearing_structure() {
    let bad_scope = vec![1u8, 7, 0, 0, 0, 0, 2];
    for (structure_type, fixed_len) in [(0u16, 12usize), (1, 20), (2, 4), (5, 4), (6, 4)] {
        let t = table(
            38,
            0,
            &[structure(
                structure_type,
                &vec![0; fixed_len],
                std::slice::from_ref(&bad_scope),
            )],
        );
        assert_eq!(
            Dmar::parse(&t).unwrap_err(),
            ParseError::BadSubtableLength {
                offset: FIRST + 4 + fixed_len,
                length: 7
            },
            "type {structure_type}"
        );
    }
}

#[test]
fn unknown_types_are_skipped_by_length_and_reported() {
    let t = table(
        38,
        0,
        &[
            structure(7, &[0xaa; 8], &[]),
            drhd(1, 0, 0xfed9_0000, &[]),
            structure(0x1234, &[], &[]),
        ],
    );
    let dmar = Dmar::parse(&t).unwrap();
    let unknown: Vec<UnknownStructure> = dmar.unknown_structures().collect();
    assert_eq!(
        unknown,
        [
            UnknownStructure {
                structure_type: 7,
                offset: FIRST,
                length: 12
            },
            UnknownStructure {
                structure_type: 0x1234,
                offset: FIRST + 12 + 16,
                length: 4
            },
        ]
    );
    assert_eq!(dmar.drhds().next().unwrap().offset, FIRST + 12);
    let listing = dmar.to_string();
    assert!(
        listing.contains("unknown structure type 4660 @0x4c, 4 bytes (skipped)"),
        "{listing}"
    );
}

#[test]
fn rmrr_range_defects_are_reported_not_rejected() {
    let endpoint = scope(1, 0, 0, &[(0x14, 0)]);
    let t = table(
        38,
        0,
        &[
            rmrr(0, 0x8000_0000, 0x7fff_ffff, std::slice::from_ref(&endpoint)),
            rmrr(0, 0x1000_0800, 0x1000_ffff, std::slice::from_ref(&endpoint)),
            rmrr(0, 0x1000_0000, 0x1000_0fff, std::slice::from_ref(&endpoint)),
            rmrr(0, 0x1000_0000, 0x1000_0ffe, &[endpoint]),
        ],
    );
    let dmar = Dmar::parse(&t).unwrap();
    let defects: Vec<Option<RmrrDefect>> = dmar.rmrrs().map(|r| r.defect()).collect();
    assert_eq!(
        defects,
        [
            Some(RmrrDefect::LimitBelowBase),
            Some(RmrrDefect::BaseNotPageAligned),
            None,
            Some(RmrrDefect::LimitNotPageEnd)
        ]
    );
    assert!(dmar.to_string().contains("(bad range: limit below base)"));
    assert!(matches!(
        dmar.structures().next(),
        Some(RemappingStructure::Rmrr(_))
    ));
}
