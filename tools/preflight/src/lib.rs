//! `lazaret-preflight`: reads a machine's DMAR / IVRS (or table files) and says what Lazaret
//! will make of them, before anyone flashes a test box. The defect checks are the hypervisor's
//! own ([`acpi_iommu::defects`]), so the tool and the kernel cannot disagree.
//!
//! Exit status: [`EXIT_OK`] when Lazaret can run (warnings allowed), [`EXIT_CANNOT_RUN`] when a
//! table has a fatal defect, [`EXIT_BAD_INPUT`] when a table is missing, unreadable or
//! malformed (that wins over the other two).
use std::io::Write;
use std::path::{Path, PathBuf};

pub mod dmar_report;
pub mod input;
pub mod ivrs_report;
pub mod report;
pub mod text;

pub use input::{report_bytes, report_file, InputError};
pub use report::TableReport;

pub const EXIT_OK: i32 = 0;
pub const EXIT_CANNOT_RUN: i32 = 1;
pub const EXIT_BAD_INPUT: i32 = 2;

const USAGE: &str = "usage: lazaret-preflight [--json] [FILE...]
Reads DMAR / IVRS tables (raw, as from `acpidump -b`; type from the signature) or, with no
FILE, the machine's own from /sys/firmware/acpi/tables, and says what Lazaret will do.
  --json   one JSON object per table, one per line (JSON Lines)
Exit status: 0 Lazaret can run, 1 it cannot (reason printed), 2 unreadable or malformed input.";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub struct Options {
    pub json: bool,
    pub help: bool,
    pub files: Vec<PathBuf>,
}

impl Options {
    /// Parses the arguments after the program name; `Err` carries the complaint.
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let mut options = Options {
            json: false,
            help: false,
            files: Vec::new(),
        };
        let mut only_files = false;
        for arg in args {
            match arg.as_str() {
                _ if only_files => options.files.push(PathBuf::from(arg)),
                "--" => only_files = true,
                "--json" => options.json = true,
                "-h" | "--help" => options.help = true,
                flag if flag.starts_with('-') && flag.len() > 1 => {
                    return Err(format!("unknown option {flag}"))
                }
                _ => options.files.push(PathBuf::from(arg)),
            }
        }
        Ok(options)
    }
}

/// Runs the tool: `args` without the program name, tables looked up in `tables_dir` when no
/// FILE is given. Returns the exit status.
pub fn run(args: &[String], tables_dir: &Path, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let options = match Options::parse(args) {
        Ok(options) => options,
        Err(complaint) => {
            let _ = writeln!(err, "lazaret-preflight: {complaint}\n{USAGE}");
            return EXIT_BAD_INPUT;
        }
    };
    if options.help {
        let _ = writeln!(out, "{USAGE}");
        return EXIT_OK;
    }
    let files = if options.files.is_empty() {
        match input::machine_tables(tables_dir) {
            Ok(found) => found,
            Err(e) => {
                let _ = writeln!(err, "lazaret-preflight: {e}");
                return EXIT_BAD_INPUT;
            }
        }
    } else {
        options.files
    };
    let mut status = EXIT_OK;
    for file in &files {
        match report_file(file) {
            Ok(report) => {
                if let Err(e) = print_report(out, &report, options.json) {
                    let _ = writeln!(err, "lazaret-preflight: cannot write the report: {e}");
                    return EXIT_BAD_INPUT;
                }
                if !report.can_run && status == EXIT_OK {
                    status = EXIT_CANNOT_RUN;
                }
            }
            Err(e) => {
                let _ = writeln!(err, "lazaret-preflight: {e}");
                status = EXIT_BAD_INPUT;
            }
        }
    }
    if status == EXIT_CANNOT_RUN && !options.json {
        let _ = writeln!(
            err,
            "lazaret-preflight: Lazaret cannot run on this firmware (see VERDICT above)"
        );
    }
    status
}

fn print_report(out: &mut dyn Write, report: &TableReport, json: bool) -> std::io::Result<()> {
    if json {
        serde_json::to_writer(&mut *out, report)?;
        writeln!(out)
    } else {
        writeln!(out, "{}", text::render(report))
    }
}
