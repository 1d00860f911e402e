//! The report for an IVRS (AMD IOMMU spec rev 3.x, §5.2).
use acpi_iommu::defects::{ivrs_defects, IvmdDevices};
use acpi_iommu::ivrs::{
    DeviceEntry, DeviceFact, EntryDetail, FactKind, IvhdFlags, IvhdType, SpecialVariety,
};
use acpi_iommu::{Ivhd, Ivmd, Ivrs};
use lazaret_types::Bdf;

use crate::report::{hex, Entry, Reserved, TableReport, Unit, Verdict};

/// Builds the report for `ivrs`, read from `file`.
pub fn ivrs_report(file: &str, ivrs: &Ivrs<'_>) -> TableReport {
    let verdict = Verdict::new(&ivrs_defects(ivrs));
    // The table's own listing starts with the header line and the IVinfo line.
    let listing = ivrs.to_string();
    let summary = listing.lines().take(2).collect::<Vec<_>>().join(", ");
    TableReport {
        file: file.to_string(),
        signature: "IVRS".to_string(),
        revision: ivrs.header.revision,
        summary,
        units: ivrs
            .selected_ivhds()
            .into_iter()
            .map(|h| unit(ivrs, h, verdict.ignores(h.offset)))
            .collect(),
        reserved: ivrs.ivmds().map(reserved).collect(),
        other: Vec::new(),
        can_run: verdict.can_run,
        warnings: verdict.warnings,
    }
}

fn unit(ivrs: &Ivrs<'_>, h: &Ivhd<'_>, ignored: bool) -> Unit {
    let entries = match h.device_facts() {
        Ok(facts) => facts.as_slice().iter().map(fact_entry).collect(),
        // The entries do not pair up (a warning says so): list them one by one.
        Err(_) => h.entries.iter().filter_map(raw_entry).collect(),
    };
    Unit {
        kind: format!("IVHD {:02x}h", h.kind.raw()),
        offset: h.offset,
        address: hex(h.base_address.as_u64()),
        segment: h.segment,
        flags: h.flags.0,
        description: h.to_string().lines().next().unwrap_or_default().to_string(),
        capabilities: capabilities(h),
        ignored,
        scopes: None,
        include_pci_all: None,
        iommu: Some(h.iommu_bdf.to_string()),
        entries: Some(entries),
        superseded_blocks: Some(
            ivrs.ivhds()
                .filter(|o| o.iommu() == h.iommu() && o.offset != h.offset)
                .map(|o| o.offset)
                .collect(),
        ),
    }
}

/// The IVHD flags by name (bits 7:6 in 10h only), the MSI number, and the feature words as
/// given.
fn capabilities(h: &Ivhd<'_>) -> Vec<String> {
    let named = if h.kind == IvhdType::Fixed10 { 8 } else { 6 };
    let mut out: Vec<String> = [
        (IvhdFlags::HT_TUN_EN, "HtTunEn"),
        (IvhdFlags::PASS_PW, "PassPW"),
        (IvhdFlags::RES_PASS_PW, "ResPassPW"),
        (IvhdFlags::ISOC, "Isoc"),
        (IvhdFlags::IOTLB_SUP, "IotlbSup"),
        (IvhdFlags::COHERENT, "Coherent"),
        (IvhdFlags::PREF_SUP, "PrefSup"),
        (IvhdFlags::PPR_SUP, "PPRSup"),
    ]
    .iter()
    .take(named)
    .filter(|(bit, _)| h.flags.has(*bit))
    .map(|(_, name)| name.to_string())
    .collect();
    out.push(format!("MSI number {}", h.iommu_info.msi_num()));
    out.push(format!("feature word {:#010x}", h.features));
    if let Some(efr) = h.efr {
        out.push(format!("EFR image {efr:#018x}"));
    }
    out
}

fn fact_entry(f: &DeviceFact<'_>) -> Entry {
    let everything =
        f.first == Bdf::from_requester_id(0) && f.last == Bdf::from_requester_id(u16::MAX);
    let (entry_type, handle) = match f.kind {
        FactKind::Pci if everything => ("all", None),
        FactKind::Pci if f.first == f.last => ("device", None),
        FactKind::Pci => ("range", None),
        FactKind::Special { handle, variety } => (special_type(variety), Some(handle)),
        FactKind::Acpi(_) => ("acpi", None),
    };
    Entry {
        entry_type: entry_type.to_string(),
        first: f.first.to_string(),
        last: f.last.to_string(),
        alias: f.alias.map(|a| a.to_string()),
        handle,
        description: f.to_string(),
    }
}

/// One raw entry, for an IVHD whose entries do not pair up; padding is left out.
fn raw_entry(e: &DeviceEntry<'_>) -> Option<Entry> {
    let (entry_type, alias, handle, id) = match e.detail {
        EntryDetail::Pad => return None,
        EntryDetail::All => ("all", None, None, e.device_id),
        EntryDetail::Select | EntryDetail::ExtendedSelect { .. } => {
            ("device", None, None, e.device_id)
        }
        EntryDetail::RangeStart | EntryDetail::ExtendedRangeStart { .. } => {
            ("range-start", None, None, e.device_id)
        }
        EntryDetail::RangeEnd => ("range-end", None, None, e.device_id),
        EntryDetail::AliasSelect { alias } => ("device", Some(alias), None, e.device_id),
        EntryDetail::AliasRangeStart { alias } => ("range-start", Some(alias), None, e.device_id),
        EntryDetail::Special {
            handle,
            source,
            variety,
        } => (special_type(variety), None, Some(handle), source),
        EntryDetail::AcpiHid(_) => ("acpi", None, None, e.device_id),
        EntryDetail::Unknown { .. } => ("unknown", None, None, e.device_id),
    };
    Some(Entry {
        entry_type: entry_type.to_string(),
        first: id.to_string(),
        last: id.to_string(),
        alias: alias.map(|a| a.to_string()),
        handle,
        description: e.to_string(),
    })
}

fn special_type(variety: SpecialVariety) -> &'static str {
    match variety {
        SpecialVariety::IoApic => "ioapic",
        SpecialVariety::Hpet => "hpet",
        SpecialVariety::Other(_) => "special",
    }
}

fn reserved(m: &Ivmd) -> Reserved {
    let end = m
        .size
        .checked_sub(1)
        .and_then(|extra| m.start.as_u64().checked_add(extra));
    Reserved {
        kind: format!("IVMD {:02x}h", m.kind as u8),
        offset: m.offset,
        start: hex(m.start.as_u64()),
        end: end.map(hex),
        devices: vec![IvmdDevices(m).to_string()],
        description: m.to_string(),
    }
}
