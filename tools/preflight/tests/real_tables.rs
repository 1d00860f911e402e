//! Every real table in drivers/acpi-iommu/testdata through the tool: no crash, and what it
//! reports agrees with iasl's decoding of the same bytes.
mod support;

use std::collections::BTreeSet;

use lazaret_preflight::{report_file, EXIT_OK};
use support::{dsl_of, real_tables, run_tool, text};

fn hex(s: &str) -> u64 {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap()
}

#[test]
fn every_table_reports_what_iasl_decodes() {
    for path in real_tables() {
        let name = path.display().to_string();
        let report = report_file(&path).unwrap_or_else(|e| panic!("{e}"));
        let dsl = dsl_of(&path);
        let bases: Vec<u64> = report.units.iter().map(|u| hex(&u.address)).collect();
        let starts: Vec<u64> = report.reserved.iter().map(|r| hex(&r.start)).collect();
        assert_eq!(starts, dsl.reserved_starts, "{name}: reserved regions");
        assert!(report.can_run, "{name}");
        if report.signature == "DMAR" {
            assert_eq!(bases, dsl.unit_bases, "{name}: DRHDs");
            let scopes: usize = report
                .units
                .iter()
                .flat_map(|u| &u.scopes)
                .flatten()
                .count();
            assert_eq!(scopes, dsl.unit_scopes, "{name}: DRHD scopes");
        } else {
            // One unit per IOMMU, however many IVHD blocks describe it.
            let distinct: BTreeSet<u64> = dsl.unit_bases.iter().copied().collect();
            assert_eq!(bases.len(), distinct.len(), "{name}: IOMMUs");
            assert_eq!(
                bases.iter().copied().collect::<BTreeSet<_>>(),
                distinct,
                "{name}"
            );
            let blocks: usize = report
                .units
                .iter()
                .map(|u| 1 + u.superseded_blocks.as_ref().map_or(0, Vec::len))
                .sum();
            assert_eq!(blocks, dsl.ivhd_blocks, "{name}: IVHD blocks");
            for unit in &report.units {
                assert!(!unit.entries.as_ref().unwrap().is_empty(), "{name}");
            }
        }
    }
}

#[test]
fn text_output_lists_units_reserved_memory_warnings_and_verdict() {
    for path in real_tables() {
        let report = report_file(&path).unwrap();
        let out = lazaret_preflight::text::render(&report);
        let name = path.display();
        assert!(
            out.starts_with(&format!("== {name}: {}", report.signature)),
            "{out}"
        );
        assert!(
            out.contains(&format!("IOMMU units ({}):", report.units.len())),
            "{out}"
        );
        for unit in &report.units {
            assert!(out.contains(&unit.description), "{name}");
        }
        for reserved in &report.reserved {
            assert!(out.contains(&reserved.description), "{name}");
        }
        for warning in &report.warnings {
            assert!(out.contains(&format!("[{}]", warning.code)), "{name}");
            assert!(out.contains(&format!("Lazaret will: {}", warning.action_text)));
        }
        assert!(out.contains("VERDICT: Lazaret can run"), "{out}");
    }
}

#[test]
fn the_binary_reads_several_tables_at_once() {
    let tables = real_tables();
    let picked: Vec<String> = [
        "dmar-dell-latitude-e6420",
        "dmar-ms-surface-pro",
        "ivrs-asus-zenbook-s16-um5606wa",
    ]
    .iter()
    .map(|stem| {
        let path = tables
            .iter()
            .find(|p| p.ends_with(format!("{stem}.dat")))
            .unwrap();
        path.display().to_string()
    })
    .collect();
    let args: Vec<&str> = picked.iter().map(String::as_str).collect();
    let output = run_tool(&args);
    assert_eq!(output.status.code(), Some(EXIT_OK));
    let out = text(&output.stdout);
    assert_eq!(out.matches("VERDICT: Lazaret can run").count(), 3, "{out}");
    for (code, lazaret_will) in [
        ("hpet-id-duplicate", "ignore it"),
        ("andd-name-padded", "ignore it"),
        ("ivmd-exclusion-range", "identity-map the range"),
    ] {
        let at = out
            .find(&format!("[{code}]"))
            .unwrap_or_else(|| panic!("{code}: {out}"));
        let next = out[at..].lines().nth(1).unwrap();
        assert!(
            next.contains(&format!("Lazaret will: {lazaret_will}")),
            "{next}"
        );
    }
    assert!(text(&output.stderr).is_empty());
}
