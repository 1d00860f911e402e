//! The report for a DMAR (Intel VT-d spec rev 4.1, chapter 8).
use acpi_iommu::defects::{dmar_defects, ScopePath};
use acpi_iommu::dmar::{DeviceScope, DeviceScopes, Drhd, RemappingStructure, ScopeType};
use acpi_iommu::Dmar;

use crate::report::{hex, Other, Reserved, Scope, TableReport, Unit, Verdict};

/// Builds the report for `dmar`, read from `file`.
pub fn dmar_report(file: &str, dmar: &Dmar<'_>) -> TableReport {
    let verdict = Verdict::new(&dmar_defects(dmar));
    // The table's own listing starts with the header line.
    let listing = dmar.to_string();
    let summary = listing.lines().next().unwrap_or_default().to_string();
    let mut reserved = Vec::new();
    let mut other = Vec::new();
    for s in dmar.structures() {
        match s {
            RemappingStructure::Drhd(_) => {}
            RemappingStructure::Rmrr(r) => reserved.push(Reserved {
                kind: "RMRR".to_string(),
                offset: r.offset,
                start: hex(r.base.0),
                end: Some(hex(r.limit.0)),
                devices: targets(r.scopes),
                description: s.to_string(),
            }),
            _ => other.push(Other {
                structure_type: other_type(&s).to_string(),
                offset: s.offset(),
                description: s.to_string(),
                devices: s.scopes().map(targets).unwrap_or_default(),
            }),
        }
    }
    TableReport {
        file: file.to_string(),
        signature: "DMAR".to_string(),
        revision: dmar.header.revision,
        summary,
        units: dmar
            .drhds()
            .map(|d| unit(dmar, &d, verdict.ignores(d.offset)))
            .collect(),
        reserved,
        other,
        can_run: verdict.can_run,
        warnings: verdict.warnings,
    }
}

fn unit(dmar: &Dmar<'_>, drhd: &Drhd<'_>, ignored: bool) -> Unit {
    let mut capabilities = vec![format!(
        "register set {} KiB",
        drhd.register_set_size() / 1024
    )];
    for rhsa in dmar.rhsas() {
        if rhsa.register_base == drhd.register_base {
            capabilities.push(format!("NUMA proximity domain {}", rhsa.proximity_domain));
        }
    }
    if dmar.intr_remap() {
        capabilities.push("interrupt remapping (table-wide INTR_REMAP)".to_string());
    }
    Unit {
        kind: "DRHD".to_string(),
        offset: drhd.offset,
        address: hex(drhd.register_base.0),
        segment: drhd.segment,
        flags: drhd.flags.bits(),
        description: drhd.to_string(),
        capabilities,
        ignored,
        scopes: Some(drhd.scopes.map(|s| scope(&s)).collect()),
        include_pci_all: Some(drhd.include_pci_all()),
        iommu: None,
        entries: None,
        superseded_blocks: None,
    }
}

fn scope(s: &DeviceScope<'_>) -> Scope {
    let (scope_type, has_id) = match s.scope_type {
        ScopeType::PciEndpoint => ("endpoint".to_string(), false),
        ScopeType::PciSubHierarchy => ("bridge".to_string(), false),
        ScopeType::IoApic => ("ioapic".to_string(), true),
        ScopeType::MsiCapableHpet => ("hpet".to_string(), true),
        ScopeType::AcpiNamespaceDevice => ("acpi".to_string(), true),
        ScopeType::Reserved(code) => (format!("reserved-{code}"), false),
    };
    Scope {
        scope_type,
        bus: s.start_bus,
        path: s.path().map(|hop| [hop.device, hop.function]).collect(),
        enumeration_id: has_id.then_some(s.enumeration_id),
    }
}

fn targets(scopes: DeviceScopes<'_>) -> Vec<String> {
    scopes.map(|s| ScopePath(&s).to_string()).collect()
}

fn other_type(s: &RemappingStructure<'_>) -> &'static str {
    match s {
        RemappingStructure::Drhd(_) => "DRHD",
        RemappingStructure::Rmrr(_) => "RMRR",
        RemappingStructure::Atsr(_) => "ATSR",
        RemappingStructure::Rhsa(_) => "RHSA",
        RemappingStructure::Andd(_) => "ANDD",
        RemappingStructure::Satc(_) => "SATC",
        RemappingStructure::Sidp(_) => "SIDP",
        RemappingStructure::Unknown(_) => "unknown",
    }
}
