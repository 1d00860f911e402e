//! Boot-time IOMMU bring-up: find the IOMMU in ACPI, put every PCI function in quarantine.
use alloc::string::String;

use lazaret_pci::Enumeration;

use super::acpi::Platform;
use crate::arch::tsc;
use crate::cmdline::{IntremapMode, QuarantineMode};
use crate::console::figure;
use crate::hypervisor::Passthrough;
use crate::iommu::discover::{self, Discovered};
use crate::mm::frames::Frames;
use crate::passthrough::iommu::Vendor;
use crate::passthrough::requester::requester_ids;
use crate::passthrough::{self, DeviceKind, DeviceLock};

/// The IOMMU with every PCI function quarantined; `Ok(None)` when the platform has none,
/// `Err` when it has one that could not be brought up (devices then cannot be quarantined).
/// `intremap`: whether `assign` refuses a device whose unit does not remap interrupts.
pub fn bring_up(
    platform: &Platform,
    pci: &Enumeration,
    frames: &mut Frames,
    mode: QuarantineMode,
    intremap: IntremapMode,
) -> Result<Option<Passthrough>, String> {
    let (dmar, ivrs) = (platform.raw_table(b"DMAR"), platform.raw_table(b"IVRS"));
    if dmar.is_none() && ivrs.is_none() {
        log::warn!("iommu: no DMAR or IVRS table: no IOMMU, devices cannot be quarantined");
        return Ok(None);
    }
    // Checked before any unit is touched: translation must not go on with entries that
    // cannot be switched atomically.
    if !crate::mm::direct_map::cmpxchg16b_supported() {
        return Err(
            "the CPU lacks cmpxchg16b; owner switches cannot be atomic, IOMMU left off".into(),
        );
    }
    Ok(Some(match (dmar, ivrs) {
        (Some(dmar), _) => Passthrough::Vtd(quarantine_all(
            discover::vtd(dmar, pci, frames)?,
            pci,
            frames,
            mode,
            intremap,
        )),
        (None, Some(ivrs)) => Passthrough::Amd(quarantine_all(
            discover::amd(ivrs, platform.raw_table(b"APIC"), pci, frames)?,
            pci,
            frames,
            mode,
            intremap,
        )),
        (None, None) => return Ok(None),
    }))
}

fn quarantine_all<V: Vendor>(
    discovered: Discovered<V>,
    pci: &Enumeration,
    frames: &mut Frames,
    mode: QuarantineMode,
    intremap: IntremapMode,
) -> DeviceLock<V> {
    for line in &discovered.summary {
        log::info!("iommu: {line}");
    }
    for line in &discovered.intremap {
        if line.contains("OFF") {
            log::error!("iommu: {line}");
        } else {
            log::info!("iommu: {line}");
        }
    }
    if intremap == IntremapMode::Off {
        log::warn!(
            "iommu: intremap=off: devices may be assigned behind a unit that does not remap interrupts"
        );
    }
    let Discovered {
        iommu,
        reserved,
        aliases,
        iommu_functions,
        ..
    } = discovered;
    let lock = DeviceLock::new(iommu, mode);
    let (mut added, mut pages) = (0usize, 0usize);
    {
        let mut g = lock.lock();
        g.require_interrupt_remapping(intremap == IntremapMode::Required);
        log::info!(
            "iommu: {} with {}-level tables; quarantine mode {mode}",
            g.state().iommu_name(),
            g.state().levels()
        );
        for f in pci
            .functions
            .iter()
            .filter(|f| !iommu_functions.contains(&f.sbdf))
        {
            let mut rids = requester_ids(pci, f);
            rids.extend(aliases.get(&f.sbdf).into_iter().flatten());
            rids.sort();
            rids.dedup();
            let ranges = reserved.get(&f.sbdf).cloned().unwrap_or_default();
            let (count, range_count) = (rids.len(), ranges.len());
            match passthrough::add_device(&mut g, frames, f.sbdf, DeviceKind::of(f), rids, ranges) {
                Ok(q) => {
                    added += 1;
                    pages = pages.max(q.pages);
                    let group = g.state().group_of(f.sbdf);
                    log::info!(
                        "quarantine: {} -> DomIO ({}, {count} requester ID(s), {range_count} reserved range(s), {} page(s), DID {}{})",
                        f.sbdf,
                        DeviceKind::of(f),
                        q.pages,
                        q.hw_domain_id,
                        if group.len() > 1 { " — shares a requester ID: alias group" } else { "" }
                    );
                }
                Err(e) => log::error!("quarantine: {} not quarantined: {e}", f.sbdf),
            }
        }
    }
    let us = tsc::micros_since_entry();
    log::info!(
        "quarantine: all {added} device(s) quarantined at {}.{:03} ms",
        us / 1000,
        us % 1000
    );
    figure(
        "boot-to-quarantined",
        format_args!("{}.{:03}", us / 1000, us % 1000),
        "ms",
    );
    figure("pages-per-quarantined-device", pages, "pages");
    lock
}
