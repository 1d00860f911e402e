//! Shared helpers for the DMAR integration tests: the real tables in `testdata/`, and a
//! builder for hand-made tables (VT-d spec §8 layouts).
#![allow(dead_code)]

pub mod iasl_dsl;
pub mod sources_tsv;

use std::path::PathBuf;

use acpi_iommu::sdt::{fix_checksum, SDT_HEADER_LEN};

pub fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

/// `(name without extension, bytes)` of every `dmar-*.dat`, sorted by name.
pub fn real_tables() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(testdata())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.starts_with("dmar-") && name.ends_with(".dat")
        })
        .map(|p| {
            let stem = p.file_stem().unwrap().to_str().unwrap().to_string();
            (stem, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    assert_eq!(out.len(), 17, "the public set has 17 DMAR tables");
    out
}

/// A device scope entry (§8.3.1): type, length, flags, reserved, enumeration ID, start bus,
/// path.
pub fn scope(scope_type: u8, enumeration_id: u8, start_bus: u8, path: &[(u8, u8)]) -> Vec<u8> {
    let mut s = vec![
        scope_type,
        (6 + 2 * path.len()) as u8,
        0,
        0,
        enumeration_id,
        start_bus,
    ];
    for &(device, function) in path {
        s.extend([device, function]);
    }
    s
}

/// A remapping structure: type, length, then `fixed` (the type-specific fixed fields) and
/// the scope entries.
pub fn structure(structure_type: u16, fixed: &[u8], scopes: &[Vec<u8>]) -> Vec<u8> {
    let mut s = structure_type.to_le_bytes().to_vec();
    s.extend([0, 0]);
    s.extend_from_slice(fixed);
    for scope in scopes {
        s.extend_from_slice(scope);
    }
    let length = s.len() as u16;
    s[2..4].copy_from_slice(&length.to_le_bytes());
    s
}

/// DRHD (§8.3): flags, size, segment, register base.
pub fn drhd(flags: u8, segment: u16, base: u64, scopes: &[Vec<u8>]) -> Vec<u8> {
    let mut fixed = vec![flags, 0];
    fixed.extend(segment.to_le_bytes());
    fixed.extend(base.to_le_bytes());
    structure(0, &fixed, scopes)
}

/// RMRR (§8.4): reserved, segment, base, limit.
pub fn rmrr(segment: u16, base: u64, limit: u64, scopes: &[Vec<u8>]) -> Vec<u8> {
    let mut fixed = vec![0, 0];
    fixed.extend(segment.to_le_bytes());
    fixed.extend(base.to_le_bytes());
    fixed.extend(limit.to_le_bytes());
    structure(1, &fixed, scopes)
}

/// A whole DMAR: ACPI header (OEM "LAZRET"), HAW field, flags, 10 reserved bytes, structures;
/// length and checksum filled in.
pub fn table(haw_field: u8, flags: u8, structures: &[Vec<u8>]) -> Vec<u8> {
    let mut t = vec![0u8; SDT_HEADER_LEN];
    t[..4].copy_from_slice(b"DMAR");
    t[8] = 1;
    t[10..16].copy_from_slice(b"LAZRET");
    t.extend([haw_field, flags]);
    t.extend([0u8; 10]);
    for s in structures {
        t.extend_from_slice(s);
    }
    let length = t.len() as u32;
    t[4..8].copy_from_slice(&length.to_le_bytes());
    fix_checksum(&mut t);
    t
}

/// Rewrites the length field and checksum after a test edited `t`.
pub fn reseal(t: &mut [u8]) {
    let length = t.len() as u32;
    t[4..8].copy_from_slice(&length.to_le_bytes());
    fix_checksum(t);
}
