//! From firmware tables to a running IOMMU: which units exist, which unit covers each PCI
//! function, and which reserved ranges (RMRR) each function needs.
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use acpi_iommu::dmar::{covering_unit, ResolvedScope, ResolvedUnit};
use acpi_iommu::{defects, Dmar};
use lazaret_pci::{Enumeration, HeaderKind};
use lazaret_types::{Bdf, FrameAllocator, Sbdf, PAGE_SIZE};

use super::vtd::{UnitConfig, VtdIommu};
use crate::arch::mmio::MmioRegion;
use crate::arch::tsc::TscClock;
use crate::mm::direct_map::{CLFLUSH, DIRECT_MAP};
use crate::passthrough::iommu::{Iommu, ReservedRange};

/// What the platform's IOMMU tables gave: the IOMMU, and per function its reserved ranges.
pub struct Discovered {
    pub iommu: Box<dyn Iommu>,
    pub reserved: BTreeMap<Sbdf, Vec<ReservedRange>>,
    pub summary: Vec<String>,
}

fn bridge_buses(pci: &Enumeration, segment: u16) -> impl FnMut(Bdf) -> Option<(u8, u8)> + '_ {
    move |bdf| match pci.get(Sbdf::new(segment, bdf))?.header {
        HeaderKind::Bridge {
            secondary_bus,
            subordinate_bus,
        } => Some((secondary_bus, subordinate_bus)),
        _ => None,
    }
}

/// Brings up VT-d from the DMAR table.
pub fn vtd(
    dmar_bytes: &[u8],
    pci: &Enumeration,
    frames: &mut dyn FrameAllocator,
) -> Result<Discovered, String> {
    let dmar = Dmar::parse(dmar_bytes).map_err(|e| format!("DMAR rejected: {e}"))?;
    // The same defect checks lazaret-preflight reports, so the tool's promises hold here.
    let found = defects::dmar_defects(&dmar);
    for d in &found {
        log::warn!("dmar: [{}] {} -> {}", d.code, d.message, d.action);
    }
    if let Some(fatal) = defects::fatal(&found) {
        return Err(format!("DMAR unusable: {}", fatal.message));
    }
    let ignored: Vec<usize> = defects::ignored_units(&found).collect();
    let resolved: Vec<ResolvedUnit> = dmar
        .drhds()
        .map(|d| ResolvedUnit::resolve(d, bridge_buses(pci, d.segment)))
        .collect();
    let mut summary = Vec::new();
    let mut configs = Vec::new();
    // DRHD index in the table -> unit index among those brought up.
    let mut unit_of_drhd: Vec<Option<usize>> = Vec::new();
    let mut coherent = true;
    for r in &resolved {
        let d = &r.drhd;
        if ignored.contains(&d.offset) {
            unit_of_drhd.push(None);
            continue;
        }
        let len = PAGE_SIZE << d.size.min(8);
        let regs = MmioRegion::map(d.register_base, len, frames)
            .map_err(|e| format!("mapping DRHD registers: {e}"))?;
        let ecap = lazaret_types::Mmio::read64(&regs, 0x10);
        coherent &= ecap & 1 != 0;
        summary.push(format!(
            "DRHD {} segment {}{} with {} scope(s)",
            d.register_base,
            d.segment,
            if d.include_pci_all() {
                " INCLUDE_PCI_ALL"
            } else {
                ""
            },
            r.scopes.len()
        ));
        unit_of_drhd.push(Some(configs.len()));
        configs.push(UnitConfig {
            regs,
            segment: d.segment,
            register_base: d.register_base,
            include_all: d.include_pci_all(),
        });
    }
    let mut coverage = BTreeMap::new();
    for f in &pci.functions {
        match covering_unit(resolved.iter().map(ResolvedUnit::unit_scopes), f.sbdf)
            .and_then(|i| unit_of_drhd[i])
        {
            Some(u) => {
                coverage.insert(f.sbdf, u);
            }
            None => log::warn!(
                "vtd: no usable DRHD covers {}; it cannot be quarantined",
                f.sbdf
            ),
        }
    }
    let mut reserved: BTreeMap<Sbdf, Vec<ReservedRange>> = BTreeMap::new();
    for rmrr in dmar.rmrrs() {
        if let Some(defect) = rmrr.defect() {
            log::warn!("vtd: ignoring RMRR {}-{}: {defect}", rmrr.base, rmrr.limit);
            continue;
        }
        let range = ReservedRange {
            start: rmrr.base.as_u64(),
            end: rmrr.limit.as_u64(),
        };
        for scope in rmrr.scopes {
            let Some(target) = ResolvedScope::resolve(&scope, bridge_buses(pci, rmrr.segment))
            else {
                continue;
            };
            for f in pci
                .functions
                .iter()
                .filter(|f| f.sbdf.segment == rmrr.segment && target.covers(f.sbdf.bdf))
            {
                reserved.entry(f.sbdf).or_default().push(range);
            }
        }
    }
    let flush: &'static dyn lazaret_vtd::CacheFlush = if coherent {
        &lazaret_vtd::Coherent
    } else {
        &CLFLUSH
    };
    let iommu = VtdIommu::new(&DIRECT_MAP, flush, TscClock, configs, coverage, frames)
        .map_err(|e| format!("{e}"))?;
    summary.extend(iommu.unit_summaries());
    Ok(Discovered {
        iommu: Box::new(iommu),
        reserved,
        summary,
    })
}
