//! PCI enumeration at boot: every ECAM window from MCFG (port 0xCF8 when there is none),
//! printed as an lspci-like table; problems the scan met are logged, never fatal.
use alloc::vec::Vec;

use lazaret_pci::{ecam_window, enumerate, ConfigSpace, Ecam, Enumeration, PortIo};
use lazaret_types::{FrameAllocator, PhysAddr};

use super::acpi::EcamWindow;
use crate::arch::mmio::MmioRegion;

/// How the kernel reaches configuration space, one entry per segment.
pub enum ConfigAccess {
    Ecam(Vec<Ecam<MmioRegion>>),
    Port(PortIo),
}

impl ConfigAccess {
    /// Configuration space of `segment`.
    pub fn segment(&self, segment: u16) -> Option<&dyn ConfigSpace> {
        match self {
            ConfigAccess::Ecam(ecams) => ecams
                .iter()
                .find(|e| e.segment() == segment)
                .map(|e| e as &dyn ConfigSpace),
            ConfigAccess::Port(port) => (segment == 0).then_some(port as &dyn ConfigSpace),
        }
    }
}

pub fn discover(
    windows: &[EcamWindow],
    frames: &mut dyn FrameAllocator,
) -> (ConfigAccess, Enumeration) {
    let mut ecams = Vec::new();
    for w in windows {
        let Some((base, len)) = ecam_window(PhysAddr(w.base), w.bus_start, w.bus_end) else {
            log::warn!("pci: MCFG window {w:?} is impossible; skipped");
            continue;
        };
        match MmioRegion::map(base, len, frames)
            .map_err(|e| alloc::format!("{e}"))
            .and_then(|m| {
                Ecam::new(m, w.segment, w.bus_start, w.bus_end).map_err(|e| alloc::format!("{e}"))
            }) {
            Ok(e) => ecams.push(e),
            Err(e) => log::warn!("pci: ECAM segment {} unusable: {e}", w.segment),
        }
    }
    if ecams.is_empty() {
        log::info!("pci: no ECAM; using port 0xCF8 (segment 0, 256-byte config space)");
        // SAFETY: the kernel runs at CPL0 and is the only user of ports 0xCF8-0xCFF; all
        // configuration accesses go through the ConfigAccess returned here.
        let port = unsafe { PortIo::new() };
        let found = enumerate(&port, 0, &[0]);
        return (ConfigAccess::Port(port), found);
    }
    let mut found: Option<Enumeration> = None;
    for e in &ecams {
        let (start, _) = e.bus_range();
        let more = enumerate(e, e.segment(), &[start]);
        match found.as_mut() {
            Some(f) => f.append(more),
            None => found = Some(more),
        }
    }
    (ConfigAccess::Ecam(ecams), found.unwrap_or_default())
}
