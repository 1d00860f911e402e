use alloc::vec::Vec;

use lazaret_types::{Bdf, Sbdf};

use crate::bar::{probe_bars, slot_count, Bar};
use crate::capability::{extended_capabilities, Capabilities, Capability, ExtendedCapability};
use crate::pcie::PcieInfo;
use crate::regs;
use crate::{ClassCode, ConfigSpace, PciError};

/// The header layout (Header Type bits 6:0, PCI Local Bus Spec 3.0 §6.2.1; PCI-to-PCI Bridge
/// Spec 1.2 §3.2.5 for the bus numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderKind {
    /// Type 0.
    Endpoint,
    /// Type 1 PCI-to-PCI bridge, with the bus numbers firmware programmed.
    Bridge {
        secondary_bus: u8,
        subordinate_bus: u8,
    },
    /// Type 2; the cards behind it are not scanned.
    CardBus,
    /// 0x03–0x7f: kept so the function is still quarantined, but nothing past 0x10 is read.
    Unknown(u8),
}

/// Everything enumeration learned about one function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciFunction {
    pub sbdf: Sbdf,
    pub vendor_id: u16,
    pub device_id: u16,
    pub revision: u8,
    pub class: ClassCode,
    pub header: HeaderKind,
    /// Implemented BARs, in slot order.
    pub bars: Vec<Bar>,
    /// The capability list, in list order.
    pub capabilities: Vec<Capability>,
    /// `None` for conventional PCI functions.
    pub pcie: Option<PcieInfo>,
    /// The extended capability list (ACS, ARI, ATS, SR-IOV, ...); walked for PCI Express
    /// functions only, as conventional ones have no extended space.
    pub extended_capabilities: Vec<ExtendedCapability>,
    /// The bridge whose secondary bus this function sits on; `None` on a root bus. Requester-ID
    /// aliasing (conventional PCI behind a PCIe-to-PCI bridge) follows this chain.
    pub parent_bridge: Option<Sbdf>,
}

impl PciFunction {
    /// The first recorded capability with `id`.
    pub fn capability(&self, id: u8) -> Option<Capability> {
        self.capabilities.iter().copied().find(|c| c.id == id)
    }

    /// The first recorded extended capability with `id`.
    pub fn extended_capability(&self, id: u16) -> Option<ExtendedCapability> {
        self.extended_capabilities
            .iter()
            .copied()
            .find(|c| c.id == id)
    }

    /// The phantom-function requester IDs this function may also emit (see
    /// [`PcieInfo::phantom_functions`]); empty for most functions.
    pub fn phantom_functions(&self) -> impl Iterator<Item = Sbdf> + '_ {
        let bdf = self.sbdf.bdf;
        self.pcie
            .into_iter()
            .flat_map(move |p| p.phantom_functions(bdf.function()))
            .filter_map(move |f| Bdf::new(bdf.bus(), bdf.device(), f))
            .map(move |b| Sbdf::new(self.sbdf.segment, b))
    }

    /// `(secondary, subordinate)` bus numbers of a PCI-to-PCI bridge.
    pub fn bridged_buses(&self) -> Option<(u8, u8)> {
        match self.header {
            HeaderKind::Bridge {
                secondary_bus,
                subordinate_bus,
            } => Some((secondary_bus, subordinate_bus)),
            _ => None,
        }
    }

    /// Reads one function's header, sizes its BARs and walks its capabilities. `None` when
    /// nothing answers; anything malformed is appended to `issues`.
    pub(crate) fn probe<C: ConfigSpace + ?Sized>(
        cfg: &C,
        sbdf: Sbdf,
        parent_bridge: Option<Sbdf>,
        issues: &mut Vec<PciError>,
    ) -> Option<PciFunction> {
        let id = cfg.read32(sbdf, regs::ID);
        let vendor_id = id as u16;
        if vendor_id == regs::VENDOR_ABSENT {
            return None;
        }
        let class_revision = cfg.read32(sbdf, regs::CLASS_REVISION);
        let class = ClassCode::from_class_revision(class_revision);
        let layout = header_type(cfg, sbdf) & regs::HEADER_LAYOUT_MASK;
        let header = match layout {
            0 => HeaderKind::Endpoint,
            1 => {
                let buses = cfg.read32(sbdf, regs::BRIDGE_BUS_NUMBERS);
                HeaderKind::Bridge {
                    secondary_bus: (buses >> 8) as u8,
                    subordinate_bus: (buses >> 16) as u8,
                }
            }
            2 => HeaderKind::CardBus,
            other => {
                issues.push(PciError::UnknownHeaderType {
                    function: sbdf,
                    header_type: other,
                });
                HeaderKind::Unknown(other)
            }
        };
        let bars = probe_bars(
            cfg,
            sbdf,
            slot_count(layout),
            class.is_host_bridge(),
            issues,
        );
        let capabilities = collect(Capabilities::new(cfg, sbdf, layout), issues);
        let pcie = capabilities
            .iter()
            .find(|c| c.id == regs::CAP_ID_PCI_EXPRESS)
            .map(|c| PcieInfo::read(cfg, sbdf, c.offset));
        let extended_capabilities = match pcie {
            Some(_) => collect(extended_capabilities(cfg, sbdf), issues),
            None => Vec::new(),
        };
        Some(PciFunction {
            sbdf,
            vendor_id,
            device_id: (id >> 16) as u16,
            revision: class_revision as u8,
            class,
            header,
            bars,
            capabilities,
            pcie,
            extended_capabilities,
            parent_bridge,
        })
    }
}

/// The entries of a capability walk, with the error that ended it (if any) moved to `issues`.
fn collect<T>(
    walk: impl Iterator<Item = Result<T, PciError>>,
    issues: &mut Vec<PciError>,
) -> Vec<T> {
    let mut entries = Vec::new();
    for entry in walk {
        match entry {
            Ok(entry) => entries.push(entry),
            Err(error) => issues.push(error),
        }
    }
    entries
}

/// The whole Header Type byte, multi-function bit included.
pub(crate) fn header_type<C: ConfigSpace + ?Sized>(cfg: &C, sbdf: Sbdf) -> u8 {
    cfg.read8(sbdf, regs::HEADER_DWORD + 2)
}
