//! Command line, table discovery and exit status: 0 Lazaret can run, 1 it cannot (with the
//! reason), 2 missing, unreadable or unknown input.
mod support;

use std::path::Path;

use acpi_iommu::sdt::fix_checksum;
use lazaret_preflight::{run, Options, EXIT_BAD_INPUT, EXIT_CANNOT_RUN, EXIT_OK};
use support::{run_tool, scratch_dir, testdata, text};

/// Runs the library entry point; returns (status, stdout, stderr).
fn run_lib(args: &[&str], tables_dir: &Path) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let status = run(&args, tables_dir, &mut out, &mut err);
    (status, text(&out), text(&err))
}

fn real(stem: &str) -> Vec<u8> {
    std::fs::read(testdata().join(format!("{stem}.dat"))).unwrap()
}

#[test]
fn options() {
    let parse =
        |args: &[&str]| Options::parse(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>());
    let o = parse(&["--json", "a.dat", "--", "--b.dat"]).unwrap();
    assert!(o.json && !o.help);
    assert_eq!(o.files, [Path::new("a.dat"), Path::new("--b.dat")]);
    assert_eq!(parse(&["--jsn"]), Err("unknown option --jsn".to_string()));
    assert!(parse(&["-h"]).unwrap().help);
}

#[test]
fn no_tables_on_the_machine_is_exit_2_with_the_reason() {
    let dir = scratch_dir("no-tables");
    let (status, out, err) = run_lib(&[], &dir);
    assert_eq!(status, EXIT_BAD_INPUT);
    assert!(out.is_empty());
    assert_eq!(
        err.trim_end(),
        "lazaret-preflight: no DMAR or IVRS table: this machine has no IOMMU described by ACPI, \
         or the tables are unreadable (run as root)"
    );
}

#[test]
fn the_machine_tables_are_read_from_the_tables_directory() {
    let dir = scratch_dir("machine");
    std::fs::write(dir.join("DMAR"), real("dmar-intel-nuc7i5bnh")).unwrap();
    let (status, out, _) = run_lib(&[], &dir);
    assert_eq!(status, EXIT_OK);
    assert!(out.starts_with(&format!("== {}: DMAR rev 1", dir.join("DMAR").display())));
    std::fs::write(dir.join("IVRS"), real("ivrs-msi-ms-7721")).unwrap();
    let (status, out, _) = run_lib(&["--json"], &dir);
    assert_eq!(status, EXIT_OK);
    assert_eq!(out.lines().count(), 2, "one JSON line per table");
}

#[test]
fn help_and_unknown_options() {
    let dir = scratch_dir("help");
    let (status, out, _) = run_lib(&["--help"], &dir);
    assert_eq!(status, EXIT_OK);
    assert!(out.starts_with("usage: lazaret-preflight [--json] [FILE...]"));
    let (status, _, err) = run_lib(&["--frobnicate"], &dir);
    assert_eq!(status, EXIT_BAD_INPUT);
    assert!(err.contains("unknown option --frobnicate"), "{err}");
}

#[test]
fn missing_and_foreign_files_are_exit_2_naming_the_file() {
    let dir = scratch_dir("foreign");
    let missing = dir.join("nope.dat");
    let foreign = dir.join("facp.dat");
    std::fs::write(&foreign, b"FACP\x10\0\0\0").unwrap();
    let tiny = dir.join("tiny.dat");
    std::fs::write(&tiny, b"DM").unwrap();
    for (path, why) in [
        (&missing, "cannot read"),
        (&foreign, "not a DMAR or IVRS table (signature \"FACP\")"),
        (&tiny, "not a DMAR or IVRS table (signature \"DM\")"),
    ] {
        let output = run_tool(&[path.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(EXIT_BAD_INPUT));
        let err = text(&output.stderr);
        assert!(err.contains(&format!("{}: {why}", path.display())), "{err}");
    }
}

#[test]
fn a_good_table_is_still_reported_next_to_a_bad_one() {
    let dir = scratch_dir("mixed");
    let bad = dir.join("bad.dat");
    let mut bytes = real("dmar-apple-macmini6-2");
    bytes[40] ^= 1;
    std::fs::write(&bad, &bytes).unwrap();
    let good = testdata().join("dmar-apple-macmini6-2.dat");
    let output = run_tool(&[bad.to_str().unwrap(), good.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(EXIT_BAD_INPUT));
    assert!(text(&output.stdout).contains("VERDICT: Lazaret can run"));
    assert!(text(&output.stderr).contains("bad checksum"));
}

#[test]
fn a_fatal_defect_is_exit_1_with_the_reason() {
    // The ASRock's only DRHD (at 0x30), its register base (8 bytes in) set to 0.
    let mut bytes = real("dmar-asrock-h510m-hdv");
    bytes[0x38..0x40].fill(0);
    fix_checksum(&mut bytes);
    let dir = scratch_dir("fatal");
    let path = dir.join("dmar-base-zero.dat");
    std::fs::write(&path, &bytes).unwrap();
    let output = run_tool(&[path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(EXIT_CANNOT_RUN));
    let out = text(&output.stdout);
    assert!(out.contains("[drhd-base-zero] @0x30"), "{out}");
    assert!(
        out.contains("VERDICT: Lazaret cannot run: none of the 1 DRHDs can be used"),
        "{out}"
    );
    assert!(out.contains("  [IGNORED]"), "{out}");
    assert!(text(&output.stderr).contains("Lazaret cannot run on this firmware"));
}
