//! Human-readable output for the pre-flight tool: one line per structure, one indented line
//! per device scope, offsets as in iasl's listing.
use core::fmt;

use super::structures::{
    Andd, Atsr, Drhd, RemappingStructure, Rhsa, Rmrr, Satc, Sidp, UnknownStructure,
};
use super::Dmar;
use crate::reader::Ascii;

pub(super) fn table(f: &mut fmt::Formatter<'_>, dmar: &Dmar<'_>) -> fmt::Result {
    let h = &dmar.header;
    writeln!(
        f,
        "DMAR rev {} OEM {:?} {:?}, {} bytes, host address width {}, flags {}",
        h.revision,
        Ascii(&h.oem_id),
        Ascii(&h.oem_table_id),
        h.length,
        dmar.host_address_width(),
        dmar.flags
    )?;
    for structure in dmar.structures() {
        writeln!(f, "  {structure}")?;
        for scope in structure.scopes().into_iter().flatten() {
            writeln!(f, "    {scope}")?;
        }
    }
    Ok(())
}

impl fmt::Display for RemappingStructure<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemappingStructure::Drhd(s) => s.fmt(f),
            RemappingStructure::Rmrr(s) => s.fmt(f),
            RemappingStructure::Atsr(s) => s.fmt(f),
            RemappingStructure::Rhsa(s) => s.fmt(f),
            RemappingStructure::Andd(s) => s.fmt(f),
            RemappingStructure::Satc(s) => s.fmt(f),
            RemappingStructure::Sidp(s) => s.fmt(f),
            RemappingStructure::Unknown(s) => s.fmt(f),
        }
    }
}

impl fmt::Display for Drhd<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "DRHD @{:#x} segment {} registers {} ({} KiB) flags {}",
            self.offset,
            self.segment,
            self.register_base,
            self.register_set_size() / 1024,
            self.flags
        )
    }
}

impl fmt::Display for Rmrr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RMRR @{:#x} segment {} {}..={}",
            self.offset, self.segment, self.base, self.limit
        )?;
        match self.defect() {
            Some(defect) => write!(f, " (bad range: {defect})"),
            None => Ok(()),
        }
    }
}

impl fmt::Display for Atsr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ATSR @{:#x} segment {} flags {}",
            self.offset, self.segment, self.flags
        )
    }
}

impl fmt::Display for Rhsa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RHSA @{:#x} registers {} proximity domain {}",
            self.offset, self.register_base, self.proximity_domain
        )
    }
}

impl fmt::Display for Andd<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ANDD @{:#x} device {} ", self.offset, self.device_number)?;
        match self.name() {
            Some(name) => write!(f, "{name:?}"),
            None => write!(f, "{:?}", Ascii(self.raw_name)),
        }
    }
}

impl fmt::Display for Satc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SATC @{:#x} segment {} flags {}",
            self.offset, self.segment, self.flags
        )
    }
}

impl fmt::Display for Sidp<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIDP @{:#x} segment {}", self.offset, self.segment)
    }
}

impl fmt::Display for UnknownStructure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown structure type {} @{:#x}, {} bytes (skipped)",
            self.structure_type, self.offset, self.length
        )
    }
}
