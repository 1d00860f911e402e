//! Boot-time IOMMU bring-up: find the IOMMU in ACPI, put every PCI function in quarantine.
use crate::passthrough::DeviceKind;
use alloc::boxed::Box;

use crate::mm::frames::Frames;
use lazaret_pci::Enumeration;

use super::acpi::Platform;
use crate::arch::tsc;
use crate::cmdline::QuarantineMode;
use crate::console::figure;
use crate::hypervisor::Passthrough;
use crate::iommu::discover;
use crate::passthrough::requester::requester_ids;
use crate::passthrough::{self, DeviceLock, State};

pub fn bring_up(
    platform: &Platform,
    pci: &Enumeration,
    frames: &mut Frames,
    mode: QuarantineMode,
) -> Option<Passthrough> {
    let discovered = match (platform.raw_table(b"DMAR"), platform.raw_table(b"IVRS")) {
        (Some(dmar), _) => discover::vtd(dmar, pci, frames),
        (None, Some(ivrs)) => discover::amd(ivrs, pci, frames),
        (None, None) => {
            log::warn!("iommu: no DMAR or IVRS table: no IOMMU, devices cannot be quarantined");
            return None;
        }
    };
    if !crate::mm::direct_map::cmpxchg16b_supported() {
        log::error!(
            "iommu: the CPU lacks cmpxchg16b; owner switches cannot be atomic, IOMMU left off"
        );
        return None;
    }
    let discovered = match discovered {
        Ok(d) => d,
        Err(e) => {
            log::error!("iommu: bring-up failed: {e}");
            return None;
        }
    };
    for line in &discovered.summary {
        log::info!("iommu: {line}");
    }
    let (reserved, aliases, iommu_functions) = (
        discovered.reserved,
        discovered.aliases,
        discovered.iommu_functions,
    );
    let lock: Passthrough = DeviceLock::new(State::new(discovered.iommu as Box<_>, mode));
    let (mut added, mut pages) = (0usize, 0usize);
    {
        let mut g = lock.lock();
        log::info!(
            "iommu: {} with {}-level tables; quarantine mode {mode}",
            g.state().iommu.name(),
            g.state().iommu.levels()
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
            match passthrough::add_device(
                &mut g,
                frames,
                f.sbdf,
                DeviceKind::of(f),
                rids.clone(),
                ranges.clone(),
            ) {
                Ok(q) => {
                    added += 1;
                    pages = pages.max(q.pages);
                    log::info!(
                        "quarantine: {} -> DomIO ({:?}, {} requester ID(s), {} reserved range(s), {} page(s), DID {})",
                        f.sbdf,
                        DeviceKind::of(f),
                        rids.len(),
                        ranges.len(),
                        q.pages,
                        q.hw_domain_id
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
    Some(lock)
}
