//! DMAR defects (Intel VT-d spec rev 4.1, chapter 8).
use super::alloc::collections::BTreeSet;
use super::alloc::format;
use super::alloc::string::String;
use super::alloc::vec::Vec;

use super::ranges::{range_defects, Shape, RMRR_CODES};
use super::{join, sorted, Action, Defect, ScopePath};
use crate::dmar::{DeviceScope, Dmar, Drhd, Rmrr, ScopeType};
use crate::reader::Ascii;

/// Every defect of `dmar`, in table order (fatal ones last).
pub fn dmar_defects(dmar: &Dmar<'_>) -> Vec<Defect> {
    let mut out = unit_defects(dmar);
    out.extend(include_pci_all_defects(dmar));
    out.extend(enumeration_id_defects(
        dmar,
        ScopeType::IoApic,
        "ioapic-id-duplicate",
    ));
    out.extend(enumeration_id_defects(
        dmar,
        ScopeType::MsiCapableHpet,
        "hpet-id-duplicate",
    ));
    out.extend(rmrr_defects(dmar));
    out.extend(andd_defects(dmar));
    out.extend(structure_defects(dmar));
    sorted(out)
}

/// DRHDs Lazaret cannot program (§8.3): register base 0 or not page aligned (the register set
/// is 4 KiB pages), a base an earlier unit already has, or a unit that translates nothing. With
/// none left Lazaret has no IOMMU and cannot run.
fn unit_defects(dmar: &Dmar<'_>) -> Vec<Defect> {
    let mut out = Vec::new();
    let mut usable: Vec<u64> = Vec::new();
    let mut total = 0usize;
    for drhd in dmar.drhds() {
        total += 1;
        let base = drhd.register_base.0;
        let problem = if base == 0 {
            Some(("drhd-base-zero", String::from("register base is 0")))
        } else if !drhd.register_base.is_page_aligned() {
            Some((
                "drhd-base-unaligned",
                format!("register base {base:#x} is not 4 KiB aligned"),
            ))
        } else if usable.contains(&base) {
            Some((
                "drhd-duplicate-base",
                format!("register base {base:#x} repeats an earlier DRHD's"),
            ))
        } else if !drhd.include_pci_all() && drhd.scopes.count() == 0 {
            Some((
                "drhd-no-scope",
                String::from("no INCLUDE_PCI_ALL and no device scope: it translates nothing"),
            ))
        } else {
            None
        };
        match problem {
            Some((code, what)) => out.push(Defect::new(
                code,
                drhd.offset,
                format!("DRHD (segment {}): {what}", drhd.segment),
                Action::IgnoreUnit,
            )),
            None => usable.push(base),
        }
    }
    if total == 0 {
        out.push(Defect::new(
            "dmar-no-drhd",
            0,
            String::from("the DMAR describes no VT-d unit (no DRHD)"),
            Action::CannotRun,
        ));
    } else if usable.is_empty() {
        out.push(Defect::new(
            "dmar-no-usable-drhd",
            0,
            format!("none of the {total} DRHDs can be used"),
            Action::CannotRun,
        ));
    }
    out
}

/// §8.3: at most one INCLUDE_PCI_ALL unit per segment, and it must be the segment's last DRHD.
/// Lazaret's lookup ([`crate::covering_unit`]) lets explicit scopes win whatever the order and
/// takes the first INCLUDE_PCI_ALL unit as the segment's catch-all.
fn include_pci_all_defects(dmar: &Dmar<'_>) -> Vec<Defect> {
    let mut out = Vec::new();
    let segments: BTreeSet<u16> = dmar.drhds().map(|d| d.segment).collect();
    for segment in segments {
        let units: Vec<Drhd<'_>> = dmar.drhds().filter(|d| d.segment == segment).collect();
        let last = units.last().map(|d| d.offset);
        let mut catch_all: Option<usize> = None;
        for unit in units.iter().filter(|d| d.include_pci_all()) {
            if Some(unit.offset) != last {
                out.push(Defect::new(
                    "drhd-include-all-not-last",
                    unit.offset,
                    format!(
                        "INCLUDE_PCI_ALL DRHD is not the last DRHD of segment {segment}; \
                         explicit scopes of later units still take precedence"
                    ),
                    Action::Ignore,
                ));
            }
            match catch_all {
                None => catch_all = Some(unit.offset),
                Some(first) => out.push(Defect::new(
                    "drhd-include-all-duplicate",
                    unit.offset,
                    format!(
                        "second INCLUDE_PCI_ALL DRHD in segment {segment} (first @{first:#x}); \
                         the first is the catch-all, devices the hardware routes through this \
                         one fault instead of reaching memory"
                    ),
                    Action::Ignore,
                )),
            }
        }
    }
    out
}

/// Several IOAPIC (or HPET) scopes with the same enumeration ID (§8.3.1): the ID is the APIC ID
/// (HPET number) interrupt remapping keys on, so only one source ID can belong to it. Seen on
/// Sandy Bridge laptops: eight HPET scopes, all ID 0. Lazaret uses the first, as Linux does.
fn enumeration_id_defects(
    dmar: &Dmar<'_>,
    scope_type: ScopeType,
    code: &'static str,
) -> Vec<Defect> {
    let scopes: Vec<DeviceScope<'_>> = dmar
        .drhds()
        .flat_map(|d| d.scopes)
        .filter(|s| s.scope_type == scope_type)
        .collect();
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for scope in &scopes {
        if !seen.insert(scope.enumeration_id) {
            continue;
        }
        let same: Vec<&DeviceScope<'_>> = scopes
            .iter()
            .filter(|s| s.enumeration_id == scope.enumeration_id)
            .collect();
        if let [first, second, ..] = same[..] {
            out.push(Defect::new(
                code,
                second.offset,
                format!(
                    "{} {scope_type} scopes share enumeration ID {}: {}; the first ({}) is used",
                    same.len(),
                    scope.enumeration_id,
                    join(same.iter().copied().map(ScopePath)),
                    ScopePath(first)
                ),
                Action::Ignore,
            ));
        }
    }
    out
}

/// RMRR ranges (§8.4) and how their devices share them.
fn rmrr_defects(dmar: &Dmar<'_>) -> Vec<Defect> {
    let rmrrs: Vec<Rmrr<'_>> = dmar.rmrrs().collect();
    let mut out = Vec::new();
    for rmrr in &rmrrs {
        let raw = format!("{}..={} (segment {})", rmrr.base, rmrr.limit, rmrr.segment);
        let shape = Shape::from_base_limit(rmrr.base.0, rmrr.limit.0);
        out.extend(range_defects(&RMRR_CODES, rmrr.offset, &raw, shape));
        out.extend(rmrr_sharing(dmar, rmrr, &raw));
    }
    // The same device named by several RMRRs is fine: each range is mapped for it.
    for (i, rmrr) in rmrrs.iter().enumerate() {
        let earlier = rmrrs.get(..i).unwrap_or_default();
        let repeats: Vec<String> = rmrr
            .scopes
            .filter_map(|scope| {
                let first = earlier.iter().find(|r| {
                    let mut scopes = r.scopes;
                    r.segment == rmrr.segment && scopes.any(|s| same_target(&s, &scope))
                })?;
                Some(format!("{} (also @{:#x})", ScopePath(&scope), first.offset))
            })
            .collect();
        if !repeats.is_empty() {
            out.push(Defect::new(
                "rmrr-device-in-several",
                rmrr.offset,
                format!(
                    "RMRR names devices an earlier RMRR names too: {}; every range is \
                     identity-mapped for each of them",
                    repeats.join(", ")
                ),
                Action::Ignore,
            ));
        }
    }
    out
}

/// An RMRR with no device, one shared by several devices (a guest given one of them could
/// reach memory the others rely on: assignment refused, as Xen does unless relaxed), or one
/// whose devices sit under different VT-d units.
fn rmrr_sharing(dmar: &Dmar<'_>, rmrr: &Rmrr<'_>, raw: &str) -> Option<Defect> {
    let devices: Vec<(DeviceScope<'_>, Option<usize>)> = rmrr
        .scopes
        .map(|d| (d, covering_drhd(dmar, rmrr.segment, &d)))
        .collect();
    let units: BTreeSet<Option<usize>> = devices.iter().map(|(_, unit)| *unit).collect();
    if devices.is_empty() {
        Some(Defect::new(
            "rmrr-no-scope",
            rmrr.offset,
            format!("RMRR {raw} names no device, so nothing is mapped for it"),
            Action::Ignore,
        ))
    } else if units.len() > 1 {
        let under = join(devices.iter().map(|(d, unit)| match unit {
            Some(unit) => format!("{} under DRHD @{unit:#x}", ScopePath(d)),
            None => format!("{} under no unit", ScopePath(d)),
        }));
        Some(Defect::new(
            "rmrr-spans-units",
            rmrr.offset,
            format!("RMRR {raw} names devices under different VT-d units: {under}"),
            Action::RefuseAssignment,
        ))
    } else if devices.len() > 1 {
        Some(Defect::new(
            "rmrr-shared",
            rmrr.offset,
            format!(
                "RMRR {raw} is shared by {} devices ({}); assigning one needs the relaxed RMRR policy",
                devices.len(),
                join(devices.iter().map(|(d, _)| ScopePath(d)))
            ),
            Action::RefuseAssignment,
        ))
    } else {
        None
    }
}

/// The DRHD (by offset) that translates the device `scope` names, judged from the table alone:
/// a unit scope naming the same path, or a bridge scope on the way to it, else the segment's
/// first INCLUDE_PCI_ALL unit. Bridges' bus numbers are unknown without PCI config space, so a
/// scope that starts on a bridge's secondary bus is only matched by INCLUDE_PCI_ALL.
fn covering_drhd(dmar: &Dmar<'_>, segment: u16, scope: &DeviceScope<'_>) -> Option<usize> {
    let in_segment = || dmar.drhds().filter(move |d| d.segment == segment);
    in_segment()
        .find(|d| {
            let mut unit_scopes = d.scopes;
            unit_scopes.any(|s| unit_scope_covers(&s, scope))
        })
        .or_else(|| in_segment().find(Drhd::include_pci_all))
        .map(|d| d.offset)
}

fn unit_scope_covers(unit: &DeviceScope<'_>, device: &DeviceScope<'_>) -> bool {
    if unit.start_bus != device.start_bus {
        return false;
    }
    match unit.scope_type {
        ScopeType::PciEndpoint => unit.path().eq(device.path()),
        ScopeType::PciSubHierarchy => {
            unit.path().len() <= device.path().len()
                && unit.path().zip(device.path()).all(|(a, b)| a == b)
        }
        _ => false,
    }
}

fn same_target(a: &DeviceScope<'_>, b: &DeviceScope<'_>) -> bool {
    a.start_bus == b.start_bus && a.path().eq(b.path())
}

/// ANDD object names (§8.7) are NUL-terminated ASCII; firmware pads them with extra NULs or
/// fills them with garbage. Lazaret does not use ACPI namespace devices yet, so none of this
/// stops it, but scopes naming an unreadable or missing ANDD are ignored.
fn andd_defects(dmar: &Dmar<'_>) -> Vec<Defect> {
    let mut out = Vec::new();
    for andd in dmar.andds() {
        let raw = andd.raw_name;
        let shown = Ascii(raw);
        let at = |code, what: String| {
            Defect::new(
                code,
                andd.offset,
                format!("ANDD device {} name {shown:?}: {what}", andd.device_number),
                Action::Ignore,
            )
        };
        let terminator = raw.iter().position(|&b| b == 0);
        let name = raw.get(..terminator.unwrap_or(raw.len())).unwrap_or(raw);
        let after = terminator.and_then(|end| raw.get(end + 1..)).unwrap_or(&[]);
        if name.is_empty() || !name.iter().all(u8::is_ascii_graphic) {
            out.push(at(
                "andd-name-invalid",
                String::from("not a printable ASCII name"),
            ));
        } else if terminator.is_none() {
            out.push(at(
                "andd-name-unterminated",
                String::from("no NUL terminator"),
            ));
        } else if after.iter().any(|&b| b != 0) {
            out.push(at(
                "andd-name-invalid",
                String::from("bytes other than NUL after the terminator"),
            ));
        } else if !after.is_empty() {
            out.push(at(
                "andd-name-padded",
                format!("{} NUL padding bytes after the terminator", after.len()),
            ));
        }
    }
    for scope in dmar.drhds().flat_map(|d| d.scopes) {
        let is_acpi = scope.scope_type == ScopeType::AcpiNamespaceDevice;
        if is_acpi
            && !dmar
                .andds()
                .any(|a| a.device_number == scope.enumeration_id)
        {
            out.push(Defect::new(
                "andd-missing",
                scope.offset,
                format!(
                    "ACPI device scope {} names ANDD device {}, which the table lacks",
                    ScopePath(&scope),
                    scope.enumeration_id
                ),
                Action::Ignore,
            ));
        }
    }
    out
}

/// Unknown structure types (skipped by length), reserved scope types and paths that name no
/// PCI function (ignored scopes), RHSAs about a unit no DRHD describes.
fn structure_defects(dmar: &Dmar<'_>) -> Vec<Defect> {
    let mut out = Vec::new();
    for unknown in dmar.unknown_structures() {
        out.push(Defect::new(
            "dmar-unknown-structure",
            unknown.offset,
            format!(
                "structure type {} ({} bytes) is not in the VT-d spec; skipped by its length",
                unknown.structure_type, unknown.length
            ),
            Action::Ignore,
        ));
    }
    for scope in dmar
        .structures()
        .flat_map(|s| s.scopes().into_iter().flatten())
    {
        if let ScopeType::Reserved(code) = scope.scope_type {
            out.push(Defect::new(
                "scope-type-reserved",
                scope.offset,
                format!("device scope type {code} is reserved; the scope is ignored"),
                Action::Ignore,
            ));
        } else if scope.path().any(|hop| hop.on_bus(0).is_none()) {
            out.push(Defect::new(
                "scope-path-invalid",
                scope.offset,
                format!(
                    "{} scope path {} names no PCI function (device > 31 or function > 7); ignored",
                    scope.scope_type,
                    ScopePath(&scope)
                ),
                Action::Ignore,
            ));
        }
    }
    for rhsa in dmar.rhsas() {
        if !dmar.drhds().any(|d| d.register_base == rhsa.register_base) {
            out.push(Defect::new(
                "rhsa-unknown-unit",
                rhsa.offset,
                format!(
                    "RHSA gives proximity domain {} to registers {}, which no DRHD has",
                    rhsa.proximity_domain, rhsa.register_base
                ),
                Action::Ignore,
            ));
        }
    }
    out
}
