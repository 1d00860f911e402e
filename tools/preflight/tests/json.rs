//! `--json`: one object per table, one per line (JSON Lines), with the field names
//! docs/test-boxes.md documents; it parses back into the report the library builds.
mod support;

use lazaret_preflight::{report_file, TableReport, EXIT_OK};
use serde_json::Value;
use support::{real_tables, run_tool, text};

fn keys(v: &Value) -> Vec<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

fn has(v: &Value, fields: &[&str]) {
    let present = keys(v);
    for f in fields {
        assert!(present.contains(f), "missing {f} in {v}");
    }
}

#[test]
fn every_real_table_as_json_lines() {
    let tables = real_tables();
    let args: Vec<String> = std::iter::once("--json".to_string())
        .chain(tables.iter().map(|p| p.display().to_string()))
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = run_tool(&args);
    assert_eq!(output.status.code(), Some(EXIT_OK));
    let out = text(&output.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), tables.len());
    for (line, path) in lines.iter().zip(&tables) {
        let v: Value = serde_json::from_str(line).unwrap();
        has(
            &v,
            &[
                "file",
                "signature",
                "units",
                "reserved",
                "warnings",
                "can_run",
            ],
        );
        assert_eq!(v["file"], path.display().to_string());
        let dmar = v["signature"] == "DMAR";
        for unit in v["units"].as_array().unwrap() {
            has(unit, &["address", "segment", "flags", "kind", "ignored"]);
            assert!(unit["address"].as_str().unwrap().starts_with("0x"));
            if dmar {
                for scope in unit["scopes"].as_array().unwrap() {
                    has(scope, &["type", "bus", "path"]);
                    for hop in scope["path"].as_array().unwrap() {
                        assert_eq!(hop.as_array().unwrap().len(), 2, "[dev, fn]");
                    }
                }
            } else {
                has(unit, &["iommu", "entries"]);
                for entry in unit["entries"].as_array().unwrap() {
                    has(entry, &["type", "first", "last"]);
                }
            }
        }
        for r in v["reserved"].as_array().unwrap() {
            has(r, &["start", "end", "devices"]);
        }
        for w in v["warnings"].as_array().unwrap() {
            has(w, &["code", "message", "action"]);
        }
        // The typed view round-trips to exactly what the library reports.
        let typed: TableReport = serde_json::from_str(line).unwrap();
        assert_eq!(typed, report_file(path).unwrap());
    }
}

#[test]
fn json_values_say_what_the_table_says() {
    let tables = real_tables();
    let find = |stem: &str| {
        tables
            .iter()
            .find(|p| p.ends_with(format!("{stem}.dat")))
            .unwrap()
    };
    let output = run_tool(&["--json", find("dmar-dell-xps13-9350").to_str().unwrap()]);
    let v: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(v["units"][0]["address"], "0xfed90000");
    assert_eq!(v["units"][0]["scopes"][0]["type"], "endpoint");
    assert_eq!(
        v["units"][0]["scopes"][0]["path"],
        serde_json::json!([[2, 0]])
    );
    assert_eq!(v["units"][1]["include_pci_all"], true);
    assert_eq!(v["units"][1]["scopes"][2]["enumeration_id"], 1);
    assert_eq!(v["reserved"][1]["start"], "0x7b800000");
    assert_eq!(v["reserved"][1]["end"], "0x7fffffff");
    assert_eq!(v["reserved"][1]["devices"], serde_json::json!(["00:02.0"]));
    assert_eq!(v["warnings"][0]["code"], "andd-name-padded");
    assert_eq!(v["warnings"][0]["action"], "ignore");

    let output = run_tool(&[
        "--json",
        find("ivrs-asus-zenbook-s16-um5606wa").to_str().unwrap(),
    ]);
    let v: Value = serde_json::from_slice(&output.stdout).unwrap();
    let unit = &v["units"][0];
    assert_eq!(
        (unit["kind"].as_str(), unit["iommu"].as_str()),
        (Some("IVHD 40h"), Some("00:00.2"))
    );
    assert_eq!(unit["entries"][1]["type"], "range");
    assert_eq!(unit["entries"][1]["first"], "ff:00.0");
    assert_eq!(unit["entries"][1]["alias"], "00:14.5");
    assert_eq!(v["reserved"][1]["end"], "0x75e1ffff");
    assert_eq!(v["warnings"][0]["action"], "identity-map-anyway");
}
