//! `scenario=fault-storm` (quarantine=basic): one device DMAs in a loop into nothing; every
//! DMA faults; the device's fault score crosses the threshold and Lazaret clears its Bus
//! Master Enable, after which its DMA stops and no further faults arrive.
use lazaret_pci::read_command;

use super::checks::{Checks, YesNo};
use super::edu;
use crate::cmdline::QuarantineMode;
use crate::hypervisor::Hypervisor;
use crate::passthrough::iommu::Inspect;
use crate::passthrough::{drain_faults, faults};

/// More than enough DMAs to cross the threshold.
const MAX_DMAS: usize = 3 * faults::THRESHOLD as usize;

pub fn run<V: Inspect>(hv: &mut Hypervisor<V>, checks: &mut Checks) {
    if hv.options.quarantine != QuarantineMode::Basic {
        checks.check(
            "fault-storm",
            false,
            format_args!(
                "needs quarantine=basic (DMA must fault), have {}",
                hv.options.quarantine
            ),
        );
        return;
    }
    let devices = edu::find(hv);
    let (Some(d), Some(lock)) = (devices.first(), hv.passthrough.as_ref()) else {
        checks.check(
            "fault-storm",
            false,
            format_args!("needs an edu device and an IOMMU"),
        );
        return;
    };
    let Some(cfg) = hv.config.segment(d.sbdf.segment) else {
        return;
    };
    let mut disabled_after = None;
    let mut total_faults = 0;
    for n in 0..MAX_DMAS {
        let _ = d
            .edu
            .dma_to_ram(0x1000 * (n as u64 % 16), 0, 64, edu::deadline());
        let mut g = lock.lock();
        let report = drain_faults(&mut g, edu::now_ms(), &mut |sbdf| {
            lazaret_pci::set_bus_master(cfg, sbdf, false).is_ok()
        });
        total_faults += report.faults;
        if report.disabled.contains(&d.sbdf) {
            disabled_after = Some(n + 1);
            break;
        }
    }
    let bme_off = read_command(cfg, d.sbdf).is_ok_and(|c| c & 0x4 == 0);
    checks.check(
        "fault-storm-disable",
        disabled_after.is_some() && bme_off,
        format_args!(
            "{}: {total_faults} fault(s); bus mastering {} (threshold {} faults); Bus Master Enable off in the command register {}",
            d.sbdf,
            match disabled_after {
                Some(n) => alloc::format!("cleared after {n} DMA(s)"),
                None => alloc::format!("NOT cleared after {MAX_DMAS} DMA(s)"),
            },
            faults::THRESHOLD,
            YesNo(bme_off)
        ),
    );
    // With bus mastering off the device's DMA goes nowhere: no new fault.
    let _ = d.edu.dma_to_ram(0x1000, 0, 64, edu::deadline());
    let quiet = {
        let mut g = lock.lock();
        drain_faults(&mut g, edu::now_ms(), &mut |_| false).faults == 0
    };
    checks.check(
        "fault-storm-quiet",
        quiet,
        format_args!("{}: after BME cleared, its DMA raises no fault", d.sbdf),
    );
}
