//! Which requester IDs a device's DMA can carry (Xen's rules, `domain_context_mapping`):
//! its own; its phantom functions; and, behind a PCIe-to-PCI bridge, the bridge's secondary
//! bus with devfn 0 and the bridge itself — conventional PCI transactions forwarded by such
//! a bridge carry one of those instead of the device's own ID.
use alloc::vec::Vec;

use lazaret_pci::{Enumeration, PciFunction, PciePortType};
use lazaret_types::{Bdf, Sbdf};

pub fn requester_ids(pci: &Enumeration, f: &PciFunction) -> Vec<Bdf> {
    let mut rids = alloc::vec![f.sbdf.bdf];
    rids.extend(f.phantom_functions().map(|s: Sbdf| s.bdf));
    // The nearest PCIe-to-PCI (or conventional PCI-to-PCI with no PCIe capability) bridge
    // above a conventional device rewrites its requester ID.
    if f.pcie.is_none() {
        for bridge in pci.ancestors(f.sbdf) {
            match bridge.pcie.as_ref().map(|p| p.port_type) {
                Some(PciePortType::PcieToPciBridge) => {
                    if let lazaret_pci::HeaderKind::Bridge { secondary_bus, .. } = bridge.header {
                        if let Some(alias) = Bdf::new(secondary_bus, 0, 0) {
                            rids.push(alias);
                        }
                    }
                    rids.push(bridge.sbdf.bdf);
                    break;
                }
                None => {
                    rids.push(bridge.sbdf.bdf);
                    break;
                }
                Some(_) => break,
            }
        }
    }
    rids.sort();
    rids.dedup();
    rids
}
