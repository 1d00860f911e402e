//! Shared by the pre-flight tests: the real tables, the facts their iasl decodings (`.dsl`)
//! state, scratch directories and running the binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../drivers/acpi-iommu/testdata")
}

/// Every real `.dat`, sorted.
pub fn real_tables() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(testdata())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dat"))
        .collect();
    out.sort();
    assert_eq!(out.len(), 28, "the public set has 28 tables");
    out
}

/// What the tests compare from iasl's decoding, per top-level subtable.
#[derive(Debug, Default)]
pub struct DslFacts {
    /// DMAR: DRHD register bases; IVRS: IVHD base addresses (one per block).
    pub unit_bases: Vec<u64>,
    /// IVRS: IVHD blocks (10h, 11h, 40h; iasl prints no fields of a 40h block).
    pub ivhd_blocks: usize,
    /// DMAR: device scopes inside DRHDs.
    pub unit_scopes: usize,
    /// RMRR base addresses / IVMD start addresses.
    pub reserved_starts: Vec<u64>,
}

/// Reads `Subtable Type`, `Register Base Address` / `Base Address`, `Device Scope Type` and
/// `Start Address` lines of iasl's listing (acpica-tools 20200925).
pub fn dsl_facts(dsl: &str) -> DslFacts {
    let mut facts = DslFacts::default();
    let mut current = String::new();
    for line in dsl.lines() {
        if line.starts_with("Raw Table Data") {
            break;
        }
        let Some((field, value)) = line.split_once(']').and_then(|(_, r)| r.split_once(" : "))
        else {
            continue;
        };
        let value = value.split_whitespace().next().unwrap_or("");
        let number = || u64::from_str_radix(value, 16).unwrap();
        match (field.trim(), current.as_str()) {
            ("Subtable Type", _) => {
                current = value.to_string();
                facts.ivhd_blocks += usize::from(matches!(value, "10" | "11" | "40"));
            }
            ("Register Base Address", "0000") => facts.unit_bases.push(number()),
            ("Device Scope Type", "0000") => facts.unit_scopes += 1,
            ("Base Address", "0001") => facts.reserved_starts.push(number()),
            ("Base Address", "10" | "11") => facts.unit_bases.push(number()),
            ("Start Address", "20" | "21" | "22") => facts.reserved_starts.push(number()),
            _ => {}
        }
    }
    facts
}

pub fn dsl_of(table: &Path) -> DslFacts {
    dsl_facts(&std::fs::read_to_string(table.with_extension("dsl")).unwrap())
}

/// A fresh, empty directory for one test.
pub fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lazaret-preflight-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the built binary with `args`.
pub fn run_tool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lazaret-preflight"))
        .args(args)
        .output()
        .unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}
