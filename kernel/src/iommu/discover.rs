//! From firmware tables to a running IOMMU: which units exist, which unit covers each PCI
//! function, which reserved ranges (RMRR) each function needs, and — on AMD-Vi, where no
//! register says so — whether a unit's interrupt remapping can be relied on (its IVHD must
//! name the IOAPICs, `acpi_iommu::ivrs::remapping_doubt`).
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use acpi_iommu::dmar::{covering_unit, ResolvedScope, ResolvedUnit};
use acpi_iommu::ivrs::{remapping_doubt, RemapDoubt};
use acpi_iommu::{defects, Dmar, Ivhd, Ivrs};
use lazaret_pci::{Enumeration, HeaderKind};
use lazaret_types::{Bdf, FrameAllocator, Sbdf, PAGE_SIZE};

use super::amd;
use super::vtd::{UnitConfig, VtdIommu};
use crate::arch::mmio::MmioRegion;
use crate::arch::tsc::TscClock;
use crate::mm::direct_map::{DirectMap, CLFLUSH, DIRECT_MAP};
use crate::mm::frames::Frames;
use crate::passthrough::iommu::{ReservedRange, INTERRUPTS_PER_DEVICE};
use lazaret_amd_vi::DeviceTable;

/// The kernel's VT-d: tables through the direct map, registers mapped uncached, TSC time.
pub type KernelVtd = VtdIommu<'static, DirectMap, MmioRegion, TscClock>;
/// The kernel's AMD-Vi, likewise.
pub type KernelAmd = amd::AmdViIommu<'static, DirectMap, MmioRegion, TscClock>;

/// What the platform's IOMMU tables gave: the IOMMU, per function its reserved ranges and the
/// extra requester IDs firmware says its DMA carries, and the functions that are IOMMUs
/// themselves (never quarantined: their own accesses are not translated).
pub struct Discovered<V> {
    pub iommu: V,
    pub reserved: BTreeMap<Sbdf, Vec<ReservedRange>>,
    pub aliases: BTreeMap<Sbdf, Vec<Bdf>>,
    pub iommu_functions: Vec<Sbdf>,
    pub summary: Vec<String>,
    /// What interrupt remapping does on this platform, for the console.
    pub intremap: Vec<String>,
}

/// The VT-d console line from (entries remapped, units without remapping).
fn vtd_intremap_line((entries, without): (u32, usize)) -> String {
    match (entries, without) {
        (_, 0) => format!(
            "interrupt remapping: on, {entries} entries, compatibility format blocked"
        ),
        (0, n) => format!(
            "interrupt remapping: OFF on all {n} unit(s): devices can raise any host interrupt; assignment is refused unless intremap=off"
        ),
        (_, n) => format!(
            "interrupt remapping: on, {entries} entries, compatibility format blocked; OFF on {n} unit(s): their devices can raise any host interrupt and are not assigned unless intremap=off"
        ),
    }
}

/// The AMD-Vi console line for one IOMMU: on, or OFF with what the IVRS lacks (QEMU's
/// amd-iommu without `intremap=on` lists no IOAPIC and does not remap MSIs).
fn amd_intremap_line(
    iommu: Sbdf,
    doubt: Option<RemapDoubt>,
    blocked: usize,
    passed: u32,
) -> String {
    match doubt {
        None => format!(
            "interrupt remapping: on (IOMMU {iommu}), per-device tables; {blocked} DeviceID(s) blocked until a device is added, {passed} IOAPIC/HPET ID(s) passed"
        ),
        Some(doubt) => format!(
            "interrupt remapping: OFF on IOMMU {iommu}: {doubt}, the unit may pass every MSI; assignment is refused unless intremap=off"
        ),
    }
}

/// The DeviceIDs an IVHD names, as a bitmap: PCI and ACPI devices and the aliases their DMA
/// carries, and separately the IOAPIC / HPET special devices, whose interrupts must pass.
struct NamedIds {
    named: Vec<u64>,
    special: Vec<u64>,
}

impl NamedIds {
    fn set(map: &mut [u64], id: u16) {
        map[usize::from(id) / 64] |= 1 << (id % 64);
    }
    fn get(map: &[u64], id: u16) -> bool {
        map[usize::from(id) / 64] & (1 << (id % 64)) != 0
    }
    /// Named and not special: blocked until a device record gives them a table.
    fn blocked_ids(&self) -> impl Iterator<Item = u16> + '_ {
        (0..=u16::MAX).filter(|id| Self::get(&self.named, *id) && !Self::get(&self.special, *id))
    }
    fn special_count(&self) -> u32 {
        self.special.iter().map(|w| w.count_ones()).sum()
    }
}

fn named_device_ids(facts: &[acpi_iommu::ivrs::DeviceFact<'_>]) -> NamedIds {
    let words = (usize::from(u16::MAX) + 1) / 64;
    let mut ids = NamedIds {
        named: vec![0; words],
        special: vec![0; words],
    };
    for f in facts {
        let (first, last) = (f.first.requester_id(), f.last.requester_id());
        let map = match f.kind {
            acpi_iommu::ivrs::FactKind::Special { .. } => &mut ids.special,
            _ => &mut ids.named,
        };
        (first..=last).for_each(|id| NamedIds::set(map, id));
        if let Some(alias) = f.alias {
            NamedIds::set(&mut ids.named, alias.requester_id());
        }
    }
    ids
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
) -> Result<Discovered<KernelVtd>, String> {
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
            window_bytes: len,
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
        let range = ReservedRange::read_write(rmrr.base.as_u64(), rmrr.limit.as_u64());
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
    let intremap = vec![vtd_intremap_line(iommu.interrupt_entries())];
    Ok(Discovered {
        iommu,
        reserved,
        aliases: BTreeMap::new(),
        iommu_functions: Vec::new(),
        summary,
        intremap,
    })
}

/// Brings up AMD-Vi from the IVRS table: per IOMMU (the most complete IVHD of each), its
/// device table sized to the largest requester ID the IVRS or PCI names, the command buffer
/// and event log, then translation on with every entry blocking. `madt_bytes` (the raw
/// MADT) lets the interrupt-remapping check also demand that every IOAPIC it lists is
/// named by some IVHD; unreadable or absent, IOAPICs are assumed and only each IVHD's own
/// entries are checked.
pub fn amd(
    ivrs_bytes: &[u8],
    madt_bytes: Option<&[u8]>,
    pci: &Enumeration,
    frames: &mut Frames,
) -> Result<Discovered<KernelAmd>, String> {
    let ivrs = Ivrs::parse(ivrs_bytes).map_err(|e| format!("IVRS rejected: {e}"))?;
    let madt_ioapics = madt_bytes.and_then(|m| {
        acpi_iommu::madt::ioapic_ids(m)
            .map_err(|e| log::warn!("amd-vi: MADT unreadable ({e}); IOAPICs assumed"))
            .ok()
    });
    let found = defects::ivrs_defects(&ivrs);
    for d in &found {
        log::warn!("ivrs: [{}] {} -> {}", d.code, d.message, d.action);
    }
    if let Some(fatal) = defects::fatal(&found) {
        return Err(format!("IVRS unusable: {}", fatal.message));
    }
    let ignored: Vec<usize> = defects::ignored_units(&found).collect();
    let mut setups = Vec::new();
    let mut coverage = BTreeMap::new();
    let mut aliases: BTreeMap<Sbdf, Vec<Bdf>> = BTreeMap::new();
    let mut iommu_functions = Vec::new();
    let mut summary = Vec::new();
    let mut intremap_lines = Vec::new();
    let units: Vec<&Ivhd<'_>> = ivrs
        .selected_ivhds()
        .into_iter()
        .filter(|h| !ignored.contains(&h.offset))
        .collect();
    for &ivhd in &units {
        let facts = ivhd
            .device_facts()
            .map_err(|e| format!("IVHD at {:#x}: {e}", ivhd.offset))?;
        // Every ID a device's DMA may carry needs an entry: the IVHD's own ranges and aliases
        // as well as what PCI enumeration found, whichever is larger.
        let max_rid = facts
            .as_slice()
            .iter()
            .flat_map(|f| [f.last, f.alias.unwrap_or(f.last)])
            .map(|b| b.requester_id())
            .chain(
                pci.functions
                    .iter()
                    .filter(|f| f.sbdf.segment == ivhd.segment)
                    .map(|f| (u16::from(f.sbdf.bdf.bus()) << 8) | 0xff),
            )
            .max()
            .unwrap_or(0xff);
        let regs = MmioRegion::map(ivhd.base_address, AMD_VI_MMIO_LEN, frames)
            .map_err(|e| format!("mapping IOMMU registers: {e}"))?;
        let pages = (DeviceTable::bytes_for(max_rid) / PAGE_SIZE) as usize;
        let base = frames
            .alloc_contiguous(pages)
            .ok_or("no contiguous memory for the device table")?;
        let table = DeviceTable::new(&DIRECT_MAP, base, max_rid)
            .map_err(|e| format!("device table: {e}"))?;
        let named = named_device_ids(facts.as_slice());
        // Blocked even on a unit whose remapping is doubted: whatever it does honour of the
        // DTE then blocks too.
        let blocked =
            amd::block_interrupts_before_enable(&table, &DIRECT_MAP, named.blocked_ids())?;
        // Doubted, the unit's `interrupt_remapping` is false and the core refuses assignment
        // behind it as on VT-d without IR.
        let doubt = remapping_doubt(ivhd, &units, madt_ioapics.as_deref());
        intremap_lines.push(amd_intremap_line(
            Sbdf::new(ivhd.segment, ivhd.iommu_bdf),
            doubt,
            blocked,
            named.special_count(),
        ));
        let mut setup = amd::bring_up(
            regs,
            &DIRECT_MAP,
            frames,
            table,
            ivhd.segment,
            ivhd.base_address,
            &TscClock,
        )?;
        setup.interrupt_remapping = doubt.is_none();
        let unit = setups.len();
        let own = Sbdf::new(ivhd.segment, ivhd.iommu_bdf);
        iommu_functions.push(own);
        for f in pci
            .functions
            .iter()
            .filter(|f| f.sbdf.segment == ivhd.segment && f.sbdf != own)
        {
            if facts.covering(f.sbdf.bdf).is_some() {
                coverage.insert(f.sbdf, unit);
                let alias = facts.alias_of(f.sbdf.bdf);
                if alias != f.sbdf.bdf {
                    aliases.entry(f.sbdf).or_default().push(alias);
                }
            }
        }
        summary.push(format!(
            "IVHD {:02x}h IOMMU {own} registers {} segment {}: {} device fact(s)",
            ivhd.kind as u8,
            ivhd.base_address,
            ivhd.segment,
            facts.as_slice().len()
        ));
        setups.push(setup);
    }
    for f in &pci.functions {
        if !coverage.contains_key(&f.sbdf) && !iommu_functions.contains(&f.sbdf) {
            log::warn!(
                "amd-vi: no IVHD covers {}; it cannot be quarantined",
                f.sbdf
            );
        }
    }
    // IVMD unity ranges (exclusion ranges too: Lazaret never programs the exclusion registers
    // and identity-maps them instead, per device).
    let mut reserved: BTreeMap<Sbdf, Vec<ReservedRange>> = BTreeMap::new();
    for m in ivrs
        .ivmds()
        .filter(|m| m.flags.unity() || m.flags.exclusion())
    {
        let (Some(end), true) = (m.end(), m.size > 0) else {
            continue;
        };
        let range = ReservedRange {
            start: m.start.as_u64(),
            end: end.as_u64() - 1,
            // Exclusion ranges bypass translation entirely on hardware: full access.
            read: m.flags.read() || m.flags.exclusion(),
            write: m.flags.write() || m.flags.exclusion(),
        };
        let (first, last) = m.devices();
        for f in pci
            .functions
            .iter()
            .filter(|f| f.sbdf.segment == m.segment && (first..=last).contains(&f.sbdf.bdf))
        {
            reserved.entry(f.sbdf).or_default().push(range);
        }
    }
    let iommu = amd::AmdViIommu::new(&DIRECT_MAP, TscClock, setups, coverage)?;
    summary.extend(iommu.unit_summaries());
    let format = iommu.irte_format().map_or("no", |f| match f {
        lazaret_amd_vi::IrteFormat::Legacy32 => "32-bit",
        lazaret_amd_vi::IrteFormat::Ga128 => "128-bit",
    });
    intremap_lines.push(format!(
        "interrupt remapping: {format} IRTEs, {INTERRUPTS_PER_DEVICE} entry per device, pass-through bits off"
    ));
    Ok(Discovered {
        iommu,
        reserved,
        aliases,
        iommu_functions,
        summary,
        intremap: intremap_lines,
    })
}

/// The AMD-Vi MMIO block Lazaret uses: registers up to the event-log head/tail and status
/// at 0x2000-0x2020 (AMD IOMMU spec §3.4), in 16 KiB.
const AMD_VI_MMIO_LEN: u64 = 16 * 1024;
