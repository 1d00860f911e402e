//! Firmware defects in DMAR and IVRS, and what Lazaret does about each.
//!
//! The parsers reject only what cannot be read safely. Real tables that parse are still often
//! wrong: a DRHD at address 0, an RMRR covering page 0, eight HPET scopes with the same ID,
//! IVRS block types no spec documents. [`dmar_defects`] and [`ivrs_defects`] find those and
//! say, per defect, which [`Action`] the hypervisor takes, so the pre-flight tool and the
//! kernel's bring-up agree by construction: both call these functions.
//!
//! Every defect carries a stable kebab-case `code` (tools match on it), the table `offset` of
//! the structure at fault (for [`Action::IgnoreUnit`]: the offset of the DRHD/IVHD to leave
//! alone, see [`ignored_units`]) and a message with the values found.
extern crate alloc;

mod dmar_checks;
mod ivrs_checks;
mod ranges;

use alloc::string::String;
use core::fmt;

use crate::dmar::DeviceScope;
use crate::ivrs::{Ivmd, IvmdType};

pub use dmar_checks::dmar_defects;
pub use ivrs_checks::ivrs_defects;

/// What Lazaret does about a defect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Harmless: reported, nothing changes.
    Ignore,
    /// The reserved range is identity-mapped although it is malformed (rounded out to whole
    /// pages) or was asked for in a form Lazaret does not use (an AMD exclusion range).
    IdentityMapAnyway,
    /// The reserved range is not mapped for anyone.
    SkipRange,
    /// The named devices stay quarantined; assigning them to a guest is refused.
    RefuseAssignment,
    /// The IOMMU unit at the defect's offset is never programmed; the devices only it would
    /// translate get no IOMMU and cannot be assigned.
    IgnoreUnit,
    /// Lazaret cannot run on this machine.
    CannotRun,
}

impl Action {
    /// True when Lazaret cannot run at all.
    pub const fn is_fatal(self) -> bool {
        matches!(self, Action::CannotRun)
    }

    /// A stable kebab-case name, for machine-readable output.
    pub const fn name(self) -> &'static str {
        match self {
            Action::Ignore => "ignore",
            Action::IdentityMapAnyway => "identity-map-anyway",
            Action::SkipRange => "skip-range",
            Action::RefuseAssignment => "refuse-assignment",
            Action::IgnoreUnit => "ignore-unit",
            Action::CannotRun => "cannot-run",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Ignore => "ignore it (harmless)",
            Action::IdentityMapAnyway => {
                "identity-map the range for the devices named anyway (whole pages)"
            }
            Action::SkipRange => "not map the range for any device",
            Action::RefuseAssignment => {
                "keep the devices named quarantined and refuse to assign them to a guest"
            }
            Action::IgnoreUnit => {
                "leave this IOMMU unit alone; devices only it translates cannot be assigned"
            }
            Action::CannotRun => "refuse to run on this machine",
        })
    }
}

/// One firmware defect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Defect {
    /// Stable kebab-case identifier, e.g. `drhd-base-zero`.
    pub code: &'static str,
    /// Offset in the table of the structure at fault (0 for the table as a whole).
    pub offset: usize,
    /// What is wrong, with the values found.
    pub message: String,
    pub action: Action,
}

impl Defect {
    pub(crate) fn new(code: &'static str, offset: usize, message: String, action: Action) -> Self {
        Defect {
            code,
            offset,
            message,
            action,
        }
    }
}

impl fmt::Display for Defect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] @{:#x}: {}; Lazaret will {}",
            self.code, self.offset, self.message, self.action
        )
    }
}

/// The first fatal defect: when there is one, Lazaret cannot run.
pub fn fatal(defects: &[Defect]) -> Option<&Defect> {
    defects.iter().find(|d| d.action.is_fatal())
}

/// Table offsets of the DRHD/IVHD blocks Lazaret leaves alone.
pub fn ignored_units(defects: &[Defect]) -> impl Iterator<Item = usize> + '_ {
    defects
        .iter()
        .filter(|d| d.action == Action::IgnoreUnit)
        .map(|d| d.offset)
}

/// A device scope's target as `bus:dev.fn/dev.fn...` (the start bus, then each path hop).
pub struct ScopePath<'s>(pub &'s DeviceScope<'s>);

impl fmt::Display for ScopePath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:", self.0.start_bus)?;
        for (i, hop) in self.0.path().enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            write!(f, "{hop}")?;
        }
        Ok(())
    }
}

/// The devices an IVMD applies to: `all`, `00:0c.0` or `01:00.0..=01:1f.7`.
pub struct IvmdDevices<'m>(pub &'m Ivmd);

impl fmt::Display for IvmdDevices<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (first, last) = self.0.devices();
        match self.0.kind {
            IvmdType::All => f.write_str("all"),
            IvmdType::Select => write!(f, "{first}"),
            IvmdType::Range => write!(f, "{first}..={last}"),
        }
    }
}

/// `a, b, c`.
fn join<T: fmt::Display>(items: impl Iterator<Item = T>) -> String {
    use core::fmt::Write;
    let mut out = String::new();
    for (i, item) in items.enumerate() {
        let sep = if i > 0 { ", " } else { "" };
        // Writing to a String cannot fail.
        let _ = write!(out, "{sep}{item}");
    }
    out
}

/// Orders defects by table offset, fatal ones last; checks run per kind, readers want them in
/// table order.
fn sorted(mut defects: alloc::vec::Vec<Defect>) -> alloc::vec::Vec<Defect> {
    defects.sort_by_key(|d| (d.action.is_fatal(), d.offset));
    defects
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    #[test]
    fn display_names_code_offset_and_action() {
        let d = Defect::new("drhd-base-zero", 0x30, "x".to_string(), Action::IgnoreUnit);
        let text = d.to_string();
        assert!(text.starts_with("[drhd-base-zero] @0x30: x; Lazaret will leave"));
    }

    #[test]
    fn fatal_and_ignored_units_filter_by_action() {
        let list = vec![
            Defect::new("a", 0x48, String::new(), Action::IgnoreUnit),
            Defect::new("b", 0, String::new(), Action::CannotRun),
            Defect::new("c", 0x30, String::new(), Action::Ignore),
        ];
        assert_eq!(fatal(&list).map(|d| d.code), Some("b"));
        assert_eq!(ignored_units(&list).collect::<vec::Vec<_>>(), [0x48]);
        let codes: vec::Vec<_> = sorted(list).iter().map(|d| d.code).collect();
        assert_eq!(codes, ["c", "a", "b"]);
        assert!(!Action::RefuseAssignment.is_fatal());
        assert_eq!(Action::IdentityMapAnyway.name(), "identity-map-anyway");
    }
}
