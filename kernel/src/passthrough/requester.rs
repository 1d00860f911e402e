//! Which requester IDs a device's DMA can carry (Xen's rules, `domain_context_mapping`):
//! its own; its phantom functions; and, for conventional PCI behind bridges, the topmost
//! conventional bridge's ID (plus its secondary bus with devfn 0 when that bridge is a
//! PCIe-to-PCI bridge) — the IDs forwarded transactions carry instead of the device's own.
use alloc::vec::Vec;

use lazaret_pci::{Enumeration, PciFunction, PciePortType};
use lazaret_types::{Bdf, Sbdf};

pub fn requester_ids(pci: &Enumeration, f: &PciFunction) -> Vec<Bdf> {
    let mut rids = alloc::vec![f.sbdf.bdf];
    rids.extend(f.phantom_functions().map(|s: Sbdf| s.bdf));
    // Conventional PCI transactions climb through conventional bridges; the topmost of that
    // chain (right below PCIe) forwards them with its own ID, or, if it is a PCIe-to-PCI
    // bridge, with (secondary bus, devfn 0) — Xen's find_upstream_bridge.
    if f.pcie.is_none() {
        let conventional = |b: &&PciFunction| {
            matches!(
                b.pcie.as_ref().map(|p| p.port_type),
                None | Some(PciePortType::PcieToPciBridge)
            )
        };
        if let Some(top) = pci.ancestors(f.sbdf).take_while(conventional).last() {
            if top.pcie.as_ref().map(|p| p.port_type) == Some(PciePortType::PcieToPciBridge) {
                if let lazaret_pci::HeaderKind::Bridge { secondary_bus, .. } = top.header {
                    rids.extend(Bdf::new(secondary_bus, 0, 0));
                }
            }
            rids.push(top.sbdf.bdf);
        }
    }
    rids.sort();
    rids.dedup();
    rids
}

#[cfg(test)]
mod tests {
    use super::*;
    use lazaret_pci::{enumerate, FakeConfigSpace, FakeFunction};

    fn at(bus: u8, dev: u8, func: u8) -> Sbdf {
        Sbdf::new(0, Bdf::new(bus, dev, func).expect("valid"))
    }

    /// Root port 00:1c.0 -> bus 1: PCIe-to-PCI bridge 01:00.0 -> bus 2: conventional 02:03.0;
    /// root port 00:1d.0 -> bus 3: PCIe endpoint 03:00.0; conventional bridge 00:1e.0 ->
    /// bus 4: conventional 04:05.0 and conventional bridge 04:06.0 -> bus 5: 05:01.0.
    fn topology() -> Enumeration {
        let mut c = FakeConfigSpace::new();
        c.insert(
            at(0, 0, 0),
            FakeFunction::endpoint(0x8086, 0x29c0, 0x06_00_00),
        );
        c.insert(
            at(0, 0x1c, 0),
            FakeFunction::bridge(0x8086, 1, 0, 1, 2).pcie(4, false),
        );
        c.insert(
            at(1, 0, 0),
            FakeFunction::bridge(0x8086, 2, 1, 2, 2).pcie(7, false),
        );
        c.insert(
            at(2, 3, 0),
            FakeFunction::endpoint(0x10ec, 0x8139, 0x02_00_00),
        );
        c.insert(
            at(0, 0x1d, 0),
            FakeFunction::bridge(0x8086, 3, 0, 3, 3).pcie(4, false),
        );
        c.insert(
            at(3, 0, 0),
            FakeFunction::endpoint(0x8086, 0x10d3, 0x02_00_00).pcie(0, true),
        );
        c.insert(
            at(0, 0x1e, 0),
            FakeFunction::bridge(0x8086, 0x244e, 0, 4, 5),
        );
        c.insert(
            at(4, 5, 0),
            FakeFunction::endpoint(0x1234, 0x11e8, 0x00_ff_00),
        );
        c.insert(at(4, 6, 0), FakeFunction::bridge(0x104c, 0xac23, 4, 5, 5));
        c.insert(
            at(5, 1, 0),
            FakeFunction::endpoint(0x1234, 0x11e8, 0x00_ff_00),
        );
        enumerate(&c, 0, &[0])
    }

    fn rids_of(pci: &Enumeration, s: Sbdf) -> Vec<Bdf> {
        requester_ids(pci, pci.get(s).expect("enumerated"))
    }

    #[test]
    fn a_pcie_endpoint_uses_only_its_own_id() {
        let pci = topology();
        assert_eq!(rids_of(&pci, at(3, 0, 0)), vec![at(3, 0, 0).bdf]);
    }

    #[test]
    fn conventional_pci_behind_a_pcie_to_pci_bridge_aliases_to_the_secondary_bus_and_the_bridge() {
        let pci = topology();
        assert_eq!(
            rids_of(&pci, at(2, 3, 0)),
            vec![at(1, 0, 0).bdf, at(2, 0, 0).bdf, at(2, 3, 0).bdf]
        );
    }

    #[test]
    fn conventional_pci_behind_a_conventional_bridge_aliases_to_the_bridge() {
        let pci = topology();
        assert_eq!(
            rids_of(&pci, at(4, 5, 0)),
            vec![at(0, 0x1e, 0).bdf, at(4, 5, 0).bdf]
        );
    }

    #[test]
    fn a_chain_of_conventional_bridges_aliases_to_the_topmost() {
        let pci = topology();
        assert_eq!(
            rids_of(&pci, at(5, 1, 0)),
            vec![at(0, 0x1e, 0).bdf, at(5, 1, 0).bdf]
        );
    }
}
