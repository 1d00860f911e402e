//! What the tool says about one table: built once from the parsed table and its defects, then
//! printed for people ([`crate::text`]) or as JSON. The field names are the documented JSON
//! interface (docs/test-boxes.md, "Before you flash"): change them only together with it.
use acpi_iommu::defects::{fatal, Action, Defect};
use serde::{Deserialize, Serialize};

/// One table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableReport {
    /// The path the table was read from.
    pub file: String,
    /// "DMAR" or "IVRS".
    pub signature: String,
    pub revision: u8,
    /// The header line: OEM, length, and the table-wide facts (address width, flags, IVinfo).
    pub summary: String,
    /// The IOMMUs: every DRHD; for IVRS the one IVHD per IOMMU that Lazaret reads.
    pub units: Vec<Unit>,
    /// RMRRs and IVMDs: memory that must stay identity-mapped for some devices.
    pub reserved: Vec<Reserved>,
    /// ATSR, RHSA, ANDD, SATC, SIDP and unknown structures (DMAR only).
    pub other: Vec<Other>,
    pub warnings: Vec<Warning>,
    /// False when a warning's action is `cannot-run`.
    pub can_run: bool,
}

/// One IOMMU unit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Unit {
    /// "DRHD", or "IVHD 10h" / "IVHD 11h" / "IVHD 40h".
    pub kind: String,
    /// Offset of the DRHD/IVHD in the table.
    pub offset: usize,
    /// Register base, hex ("0xfed91000").
    pub address: String,
    pub segment: u16,
    /// The raw flags byte of the DRHD/IVHD.
    pub flags: u8,
    /// The one-line description (flags by name, register size, EFR image...).
    pub description: String,
    /// What else the table says about the unit's hardware.
    pub capabilities: Vec<String>,
    /// True when Lazaret leaves this unit alone (an `ignore-unit` warning names it).
    pub ignored: bool,
    /// DMAR: the device scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<Scope>>,
    /// DMAR: the unit also covers every device of its segment no other unit names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_pci_all: Option<bool>,
    /// IVRS: the IOMMU's own PCI function ("00:00.2").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iommu: Option<String>,
    /// IVRS: the devices, ranges, aliases and special devices of the IVHD, ranges paired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<Vec<Entry>>,
    /// IVRS: offsets of the other IVHD blocks describing the same IOMMU (not read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_blocks: Option<Vec<usize>>,
}

/// A DMAR device scope.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scope {
    /// "endpoint", "bridge", "ioapic", "hpet", "acpi" or "reserved-N".
    #[serde(rename = "type")]
    pub scope_type: String,
    /// The start bus.
    pub bus: u8,
    /// The hops from the start bus, each `[device, function]`.
    pub path: Vec<[u8; 2]>,
    /// APIC ID, HPET number or ANDD device number (IOAPIC, HPET and ACPI scopes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enumeration_id: Option<u8>,
}

/// An IVHD device entry (ranges paired: one entry per range).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// "all", "device", "range", "ioapic", "hpet", "special", "acpi"; when the entries do not
    /// pair up, the raw entry kinds ("range-start", "range-end", "unknown", ...).
    #[serde(rename = "type")]
    pub entry_type: String,
    /// First and last requester ID covered ("00:01.0").
    pub first: String,
    pub last: String,
    /// The requester ID these devices' DMA carries instead of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// IOAPIC / HPET handle of a special entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<u8>,
    pub description: String,
}

/// An RMRR or IVMD.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reserved {
    /// "RMRR", or "IVMD 20h" / "IVMD 21h" / "IVMD 22h".
    pub kind: String,
    pub offset: usize,
    /// First byte, hex.
    pub start: String,
    /// Last byte (inclusive), hex; null for an IVMD of length 0 or one that wraps.
    pub end: Option<String>,
    /// The devices: DMAR scope targets ("00:1d.0", "00:1c.0/00.0"), IVMD devices ("00:0c.0",
    /// "01:00.0..=01:1f.7", "all").
    pub devices: Vec<String>,
    pub description: String,
}

/// Any other DMAR structure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Other {
    /// "ATSR", "RHSA", "ANDD", "SATC", "SIDP" or "unknown".
    #[serde(rename = "type")]
    pub structure_type: String,
    pub offset: usize,
    pub description: String,
    /// Scope targets, as in [`Reserved::devices`].
    pub devices: Vec<String>,
}

/// One firmware defect and what Lazaret does about it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Warning {
    pub code: String,
    pub offset: usize,
    pub message: String,
    /// "ignore", "identity-map-anyway", "skip-range", "refuse-assignment", "ignore-unit",
    /// "cannot-run".
    pub action: String,
    /// The action in words ("Lazaret will: ...").
    pub action_text: String,
}

impl From<&Defect> for Warning {
    fn from(d: &Defect) -> Warning {
        Warning {
            code: d.code.to_string(),
            offset: d.offset,
            message: d.message.clone(),
            action: d.action.name().to_string(),
            action_text: d.action.to_string(),
        }
    }
}

/// The warnings, `can_run`, and whether the unit at each offset is ignored.
pub(crate) struct Verdict {
    pub warnings: Vec<Warning>,
    pub can_run: bool,
    ignored: Vec<usize>,
}

impl Verdict {
    pub fn new(defects: &[Defect]) -> Verdict {
        Verdict {
            warnings: defects.iter().map(Warning::from).collect(),
            can_run: fatal(defects).is_none(),
            ignored: acpi_iommu::defects::ignored_units(defects).collect(),
        }
    }

    pub fn ignores(&self, offset: usize) -> bool {
        self.ignored.contains(&offset)
    }
}

impl TableReport {
    /// The reason Lazaret cannot run, when it cannot.
    pub fn fatal_reason(&self) -> Option<&Warning> {
        self.warnings
            .iter()
            .find(|w| w.action == Action::CannotRun.name())
    }
}

/// `0x...` for addresses: JSON numbers lose precision above 2^53.
pub(crate) fn hex(value: u64) -> String {
    format!("{value:#x}")
}
