//! The edu devices the DMA scenarios drive: found in the PCI list, BAR0 mapped uncached,
//! memory decoding and bus mastering on, probed.
use alloc::vec::Vec;

use lazaret_edu::Edu;
use lazaret_pci::{bar_address, set_bus_master, set_memory_space};
use lazaret_types::{PhysAddr, Sbdf};

use crate::arch::mmio::MmioRegion;
use crate::arch::tsc;
use crate::hypervisor::Hypervisor;
use crate::passthrough::iommu::Inspect;

pub const VENDOR: u16 = 0x1234;
pub const DEVICE: u16 = 0x11e8;
/// Every DMA waits at most this long (QEMU's edu completes ~100 ms after the command).
pub const DMA_TIMEOUT_MS: u64 = 2000;

pub struct EduDevice {
    pub sbdf: Sbdf,
    pub edu: Edu<MmioRegion>,
}

pub fn find<V: Inspect>(hv: &mut Hypervisor<V>) -> Vec<EduDevice> {
    let mut out = Vec::new();
    let sbdfs: Vec<Sbdf> = hv
        .pci
        .functions
        .iter()
        .filter(|f| f.vendor_id == VENDOR && f.device_id == DEVICE)
        .map(|f| f.sbdf)
        .collect();
    for sbdf in sbdfs {
        let Some(cfg) = hv.config.segment(sbdf.segment) else {
            continue;
        };
        let bar = match bar_address(cfg, sbdf, 0) {
            Ok((_, addr)) if addr != 0 => addr,
            other => {
                log::warn!("edu {sbdf}: BAR0 unusable ({other:?})");
                continue;
            }
        };
        let regs = match MmioRegion::map(PhysAddr(bar), 1 << 20, &mut hv.frames) {
            Ok(r) => r,
            Err(e) => {
                log::warn!("edu {sbdf}: cannot map BAR0: {e}");
                continue;
            }
        };
        if set_memory_space(cfg, sbdf, true).is_err() || set_bus_master(cfg, sbdf, true).is_err() {
            log::warn!("edu {sbdf}: cannot enable decoding / bus mastering");
            continue;
        }
        // A bridge forwards upstream DMA only with its own Bus Master Enable set (PCI-to-PCI
        // Bridge Architecture Spec rev 1.2 §3.2.5.1): enable it on every bridge above.
        let bridges: Vec<Sbdf> = hv.pci.ancestors(sbdf).map(|b| b.sbdf).collect();
        if bridges
            .iter()
            .any(|b| set_bus_master(cfg, *b, true).is_err())
        {
            log::warn!("edu {sbdf}: cannot enable bus mastering on a bridge above it");
            continue;
        }
        match Edu::probe(regs) {
            Ok(edu) => out.push(EduDevice { sbdf, edu }),
            Err(e) => log::warn!("edu {sbdf}: probe failed: {e}"),
        }
    }
    out
}

/// A deadline closure for one DMA.
pub fn deadline() -> impl FnMut() -> bool {
    let end = tsc::deadline_after_ms(DMA_TIMEOUT_MS);
    move || tsc::passed(end)
}

/// Milliseconds since kernel entry, for fault accounting.
pub fn now_ms() -> u64 {
    tsc::micros_since_entry() / 1000
}
