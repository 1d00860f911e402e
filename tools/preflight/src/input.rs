//! Where tables come from (files given, or the running machine's sysfs) and turning their bytes
//! into a report, by signature.
use std::fmt;
use std::path::{Path, PathBuf};

use acpi_iommu::reader::Ascii;
use acpi_iommu::{Dmar, Ivrs, ParseError};

use crate::dmar_report::dmar_report;
use crate::ivrs_report::ivrs_report;
use crate::report::TableReport;

/// Where Linux exposes the firmware's ACPI tables (readable by root only).
pub const SYSFS_TABLES: &str = "/sys/firmware/acpi/tables";

/// Why a table gave no report.
#[derive(Debug)]
pub enum InputError {
    /// Neither DMAR nor IVRS exists in the tables directory.
    NoTables,
    Unreadable {
        file: String,
        error: std::io::Error,
    },
    NotIommuTable {
        file: String,
        signature: Vec<u8>,
    },
    Unparsable {
        file: String,
        error: ParseError,
    },
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputError::NoTables => f.write_str(
                "no DMAR or IVRS table: this machine has no IOMMU described by ACPI, \
                 or the tables are unreadable (run as root)",
            ),
            InputError::Unreadable { file, error } => write!(f, "{file}: cannot read: {error}"),
            InputError::NotIommuTable { file, signature } => write!(
                f,
                "{file}: not a DMAR or IVRS table (signature {:?})",
                Ascii(signature)
            ),
            InputError::Unparsable { file, error } => write!(f, "{file}: malformed table: {error}"),
        }
    }
}

impl std::error::Error for InputError {}

/// The machine's DMAR and IVRS in `dir` (normally [`SYSFS_TABLES`]), whichever exist.
pub fn machine_tables(dir: &Path) -> Result<Vec<PathBuf>, InputError> {
    let found: Vec<PathBuf> = ["DMAR", "IVRS"]
        .iter()
        .map(|name| dir.join(name))
        .filter(|p| p.exists())
        .collect();
    if found.is_empty() {
        Err(InputError::NoTables)
    } else {
        Ok(found)
    }
}

/// Reads `path` and reports on it.
pub fn report_file(path: &Path) -> Result<TableReport, InputError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|error| InputError::Unreadable {
        file: file.clone(),
        error,
    })?;
    report_bytes(&file, &bytes)
}

/// Reports on the raw table `bytes` (acpidump -b output), named `file` in messages; the type
/// comes from the signature.
pub fn report_bytes(file: &str, bytes: &[u8]) -> Result<TableReport, InputError> {
    let unparsable = |error| InputError::Unparsable {
        file: file.to_string(),
        error,
    };
    match bytes.get(..4) {
        Some(b"DMAR") => Dmar::parse(bytes)
            .map(|dmar| dmar_report(file, &dmar))
            .map_err(unparsable),
        Some(b"IVRS") => Ivrs::parse(bytes)
            .map(|ivrs| ivrs_report(file, &ivrs))
            .map_err(unparsable),
        other => Err(InputError::NotIommuTable {
            file: file.to_string(),
            signature: other.unwrap_or(bytes).to_vec(),
        }),
    }
}
