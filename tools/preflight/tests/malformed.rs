//! Malformed tables through the binary: exit 2 with the file and the parser's reason, never a
//! panic or a hang.
mod support;

use acpi_iommu::sdt::fix_checksum;
use lazaret_preflight::EXIT_BAD_INPUT;
use support::{run_tool, scratch_dir, testdata, text};

/// Writes `bytes` into a scratch file, runs the tool on it, and checks the failure names the
/// file and says `why`.
fn assert_rejected(dir: &std::path::Path, name: &str, bytes: &[u8], why: &str) {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    for args in [
        vec![path.to_str().unwrap()],
        vec!["--json", path.to_str().unwrap()],
    ] {
        let output = run_tool(&args);
        assert_eq!(output.status.code(), Some(EXIT_BAD_INPUT), "{name}");
        assert!(output.stdout.is_empty(), "{name}");
        let err = text(&output.stderr);
        assert!(
            err.contains(&format!("{}: malformed table: {why}", path.display())),
            "{name}: {err}"
        );
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
}

/// Sets the table's length field to its size and fixes the checksum.
fn reseal(bytes: &mut [u8]) {
    let len = bytes.len() as u32;
    bytes[4..8].copy_from_slice(&len.to_le_bytes());
    fix_checksum(bytes);
}

#[test]
fn dmar_variants() {
    let dir = scratch_dir("malformed-dmar");
    // XPS 13: first structure a DRHD at 0x30, 24 bytes long.
    let table = std::fs::read(testdata().join("dmar-dell-xps13-9350.dat")).unwrap();
    assert_rejected(
        &dir,
        "truncated.dat",
        &table[..100],
        "header length 240 does not match the 100 bytes supplied",
    );
    let mut wrong_length = table.clone();
    wrong_length[4] = 0xf8;
    assert_rejected(&dir, "length.dat", &wrong_length, "header length 248");
    let mut checksum = table.clone();
    checksum[0x40] ^= 0x20;
    assert_rejected(&dir, "checksum.dat", &checksum, "bad checksum");
    let mut past_end = table.clone();
    past_end[0x32] = 0xff;
    reseal(&mut past_end);
    assert_rejected(
        &dir,
        "past-end.dat",
        &past_end,
        "subtable at offset 0x30 has impossible length 255",
    );
    let mut zero = table.clone();
    zero[0x32] = 0;
    reseal(&mut zero);
    assert_rejected(
        &dir,
        "zero.dat",
        &zero,
        "subtable at offset 0x30 has impossible length 0",
    );
    let mut cut = table[..0x40].to_vec();
    reseal(&mut cut);
    assert_rejected(
        &dir,
        "cut.dat",
        &cut,
        "subtable at offset 0x30 has impossible length 24",
    );
    let mut header_only = table[..20].to_vec();
    reseal(&mut header_only);
    assert_rejected(&dir, "header.dat", &header_only, "truncated at offset 0x");
}

#[test]
fn ivrs_variants() {
    let dir = scratch_dir("malformed-ivrs");
    // Zenbook: first block an IVHD 10h at 0x30; its first entry at 0x48.
    let table = std::fs::read(testdata().join("ivrs-asus-zenbook-s16-um5606wa.dat")).unwrap();
    assert_rejected(
        &dir,
        "truncated.dat",
        &table[..300],
        "header length 496 does not match the 300 bytes supplied",
    );
    let mut checksum = table.clone();
    checksum[0x100] ^= 1;
    assert_rejected(&dir, "checksum.dat", &checksum, "bad checksum");
    let mut zero = table.clone();
    zero[0x32..0x34].fill(0);
    reseal(&mut zero);
    assert_rejected(
        &dir,
        "zero.dat",
        &zero,
        "subtable at offset 0x30 has impossible length 0",
    );
    let mut past_end = table.clone();
    past_end[0x32..0x34].copy_from_slice(&0x4000u16.to_le_bytes());
    reseal(&mut past_end);
    assert_rejected(
        &dir,
        "past-end.dat",
        &past_end,
        "subtable at offset 0x30 has impossible length 16384",
    );
    let mut unknown_variable = table.clone();
    unknown_variable[0x48] = 0xc7;
    reseal(&mut unknown_variable);
    assert_rejected(
        &dir,
        "entry.dat",
        &unknown_variable,
        "invalid field at offset 0x48",
    );
}
