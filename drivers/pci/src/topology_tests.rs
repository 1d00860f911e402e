//! Whole-topology tests: QEMU q35 as it boots with `-device amd-iommu -device edu`, a deep
//! PCIe hierarchy with a switch and a PCIe-to-PCI bridge, and malformed firmware.
use alloc::collections::BTreeSet;
use alloc::string::ToString;
use alloc::vec::Vec;

use lazaret_types::{Bdf, Sbdf};

use crate::cap_id::{self, MSI as CAP_ID_MSI};
use crate::fake::{FakeConfigSpace, FakeFunction};
use crate::{
    enumerate, enumerate_bounded, BarKind, CapabilityList, ConfigSpace, HeaderKind, PciError,
    PciePortType, MAX_FUNCTIONS,
};

fn at(bus: u8, device: u8, function: u8) -> Sbdf {
    Sbdf::new(0, Bdf::new(bus, device, function).unwrap())
}

fn sbdfs(functions: &[crate::PciFunction]) -> Vec<Sbdf> {
    functions.iter().map(|f| f.sbdf).collect()
}

fn edu(base: u32) -> FakeFunction {
    FakeFunction::endpoint(0x1234, 0x11e8, 0x00ff00)
        .revision(0x10)
        .command(0x0002)
        .bar_mem32(0, base, 1 << 20, false)
        .capability(CAP_ID_MSI, 0x0080, &[0, 0])
}

fn q35() -> FakeConfigSpace {
    let mut cfg = FakeConfigSpace::new();
    cfg.insert(
        at(0, 0, 0),
        FakeFunction::endpoint(0x8086, 0x29c0, 0x060000),
    );
    cfg.insert(
        at(0, 2, 0),
        FakeFunction::endpoint(0x1022, 0x1419, 0x080600).capability(0x0f, 0x0100, &[0, 0, 0]),
    );
    cfg.insert(at(0, 3, 0), edu(0xfea0_0000));
    cfg.insert(at(0, 4, 0), edu(0xfeb0_0000));
    cfg.insert(
        at(0, 0x1f, 0),
        FakeFunction::endpoint(0x8086, 0x2918, 0x060100)
            .revision(2)
            .multi_function(),
    );
    cfg.insert(
        at(0, 0x1f, 2),
        FakeFunction::endpoint(0x8086, 0x2922, 0x010601)
            .revision(2)
            .command(0x0007)
            .bar_io(4, 0xc040, 32)
            .bar_mem32(5, 0xfeb1_1000, 4096, false)
            .capability(CAP_ID_MSI, 0x0080, &[0, 0])
            .capability(0x12, 0x0010, &[0]),
    );
    cfg.insert(
        at(0, 0x1f, 3),
        FakeFunction::endpoint(0x8086, 0x2930, 0x0c0500)
            .revision(2)
            .command(0x0001)
            .bar_io(4, 0x0700, 64),
    );
    cfg
}

#[test]
fn q35_lists_every_function_with_bars_and_classes() {
    let cfg = q35();
    let found = enumerate(&cfg, 0, &[0]);
    assert_eq!(found.issues, Vec::new());
    assert_eq!(
        sbdfs(&found.functions),
        vec![
            at(0, 0, 0),
            at(0, 2, 0),
            at(0, 3, 0),
            at(0, 4, 0),
            at(0, 0x1f, 0),
            at(0, 0x1f, 2),
            at(0, 0x1f, 3)
        ]
    );
    let edu = found.get(at(0, 3, 0)).unwrap();
    assert_eq!(
        (edu.vendor_id, edu.device_id, edu.revision),
        (0x1234, 0x11e8, 0x10)
    );
    assert_eq!(edu.bars.len(), 1);
    assert_eq!(
        (edu.bars[0].kind, edu.bars[0].base, edu.bars[0].size),
        (BarKind::Mem32, 0xfea0_0000, 1 << 20)
    );
    assert_eq!(edu.capability(CAP_ID_MSI).map(|c| c.offset), Some(0x40));
    assert_eq!(edu.pcie, None);
    assert!(found.functions.iter().all(|f| f.parent_bridge.is_none()));
    let ahci = found.get(at(0, 0x1f, 2)).unwrap();
    assert_eq!(ahci.class.name(), "SATA controller (AHCI)");
    assert_eq!(
        ahci.bars
            .iter()
            .map(|b| (b.index, b.kind, b.size))
            .collect::<Vec<_>>(),
        vec![(4, BarKind::Io, 32), (5, BarKind::Mem32, 4096)]
    );
    assert_eq!(
        cfg.peek(at(0, 0x1f, 2), 0x04).map(|c| c & 0xffff),
        Some(0x0007),
        "decoding restored after sizing"
    );
}

#[test]
fn q35_table_reads_like_lspci() {
    let table = enumerate(&q35(), 0, &[0]).to_string();
    let expected = "\
0000:00:00.0 8086:29c0 [0600] host bridge
0000:00:02.0 1022:1419 [0806] IOMMU
0000:00:03.0 1234:11e8 [00ff] unclassified device  BAR0 mem32 0xfea00000 (1 MiB)
0000:00:04.0 1234:11e8 [00ff] unclassified device  BAR0 mem32 0xfeb00000 (1 MiB)
0000:00:1f.0 8086:2918 [0601] ISA bridge
0000:00:1f.2 8086:2922 [0106] SATA controller (AHCI)  BAR4 io 0xc040 (32 B)  BAR5 mem32 0xfeb11000 (4 KiB)
0000:00:1f.3 8086:2930 [0c05] SMBus  BAR4 io 0x700 (64 B)
";
    assert_eq!(table, expected);
}

#[test]
fn functions_1_to_7_are_probed_only_when_function_0_is_multi_function() {
    let mut cfg = q35();
    // A single-function device that does not decode the function number answers everywhere.
    cfg.insert(at(0, 5, 0), edu(0xfec0_0000));
    cfg.insert(at(0, 5, 1), edu(0xfec0_0000));
    // Function 0 absent: the device is absent even if function 1 answers.
    cfg.insert(at(0, 6, 1), edu(0xfed0_0000));
    let found = enumerate(&cfg, 0, &[0]);
    assert!(found.get(at(0, 5, 0)).is_some());
    assert!(found.get(at(0, 5, 1)).is_none());
    assert!(found.get(at(0, 6, 1)).is_none());
    assert!(
        found.get(at(0, 0x1f, 3)).is_some(),
        "gaps inside a multi-function device"
    );
}

/// Root port 00:1c.0 → switch (01:00.0 up, 02:00.0 and 02:01.0 down) → NVMe on bus 3 and a
/// PCIe-to-PCI bridge on bus 4 with conventional devices on bus 5; empty root port 00:1c.1.
fn deep() -> FakeConfigSpace {
    let mut cfg = FakeConfigSpace::new();
    cfg.insert(
        at(0, 0, 0),
        FakeFunction::endpoint(0x8086, 0x29c0, 0x060000),
    );
    cfg.insert(
        at(0, 0x1c, 0),
        FakeFunction::bridge(0x1b36, 0x000c, 0, 1, 5)
            .multi_function()
            .pcie(4, false),
    );
    cfg.insert(
        at(0, 0x1c, 1),
        FakeFunction::bridge(0x1b36, 0x000c, 0, 6, 6).pcie(4, false),
    );
    cfg.insert(
        at(1, 0, 0),
        FakeFunction::bridge(0x10b5, 0x8748, 1, 2, 5)
            .bar_mem32(0, 0xfe80_0000, 256 << 10, false)
            .pcie(5, false),
    );
    cfg.insert(
        at(2, 0, 0),
        FakeFunction::bridge(0x10b5, 0x8748, 2, 3, 3).pcie(6, false),
    );
    // ACS at 0x100 (version 1, end of list) on the port above the PCIe-to-PCI bridge.
    cfg.insert(
        at(2, 1, 0),
        FakeFunction::bridge(0x10b5, 0x8748, 2, 4, 5)
            .pcie(6, false)
            .raw(0x100, 0x0001_000d),
    );
    cfg.insert(
        at(3, 0, 0),
        FakeFunction::endpoint(0x144d, 0xa808, 0x010802)
            .command(0x0006)
            .bar_mem64(0, 0xfe60_0000, 16 << 10, false)
            .capability(0x01, 0x0003, &[0])
            .pcie(0, true),
    );
    cfg.insert(
        at(4, 0, 0),
        FakeFunction::bridge(0x1b36, 0x000e, 4, 5, 5)
            .bar_mem64(0, 0xfe40_0000, 256, false)
            .pcie(7, false),
    );
    cfg.insert(
        at(5, 1, 0),
        FakeFunction::endpoint(0x8086, 0x100e, 0x020000)
            .bar_mem32(0, 0xfe20_0000, 128 << 10, false)
            .bar_io(1, 0xd000, 64),
    );
    cfg.insert(
        at(5, 2, 0),
        FakeFunction::endpoint(0x8086, 0x7010, 0x010180).multi_function(),
    );
    cfg.insert(
        at(5, 2, 1),
        FakeFunction::endpoint(0x8086, 0x7020, 0x0c0300),
    );
    cfg
}

#[test]
fn deep_hierarchy_is_walked_depth_first_with_parents() {
    let found = enumerate(&deep(), 0, &[0]);
    assert_eq!(found.issues, Vec::new());
    assert_eq!(
        sbdfs(&found.functions),
        vec![
            at(0, 0, 0),
            at(0, 0x1c, 0),
            at(1, 0, 0),
            at(2, 0, 0),
            at(3, 0, 0),
            at(2, 1, 0),
            at(4, 0, 0),
            at(5, 1, 0),
            at(5, 2, 0),
            at(5, 2, 1),
            at(0, 0x1c, 1),
        ]
    );
    let port_types: Vec<_> = found
        .functions
        .iter()
        .map(|f| f.pcie.map(|p| p.port_type))
        .collect();
    assert_eq!(
        port_types,
        vec![
            None,
            Some(PciePortType::RootPort),
            Some(PciePortType::UpstreamSwitchPort),
            Some(PciePortType::DownstreamSwitchPort),
            Some(PciePortType::Endpoint),
            Some(PciePortType::DownstreamSwitchPort),
            Some(PciePortType::PcieToPciBridge),
            None,
            None,
            None,
            Some(PciePortType::RootPort),
        ]
    );
    let nvme = found.get(at(3, 0, 0)).unwrap();
    assert_eq!(nvme.phantom_functions().count(), 0);
    assert_eq!(nvme.pcie.map(|p| (p.offset, p.flr)), Some((0x48, true)));
    assert_eq!(nvme.parent_bridge, Some(at(2, 0, 0)));
    assert_eq!(
        found.get(at(0, 0x1c, 0)).unwrap().header,
        HeaderKind::Bridge {
            secondary_bus: 1,
            subordinate_bus: 5
        }
    );
}

#[test]
fn conventional_devices_know_the_pcie_to_pci_bridge_above_them() {
    let found = enumerate(&deep(), 0, &[0]);
    let path: Vec<_> = found.ancestors(at(5, 2, 1)).map(|f| f.sbdf).collect();
    assert_eq!(
        path,
        vec![at(4, 0, 0), at(2, 1, 0), at(1, 0, 0), at(0, 0x1c, 0)]
    );
    let acs = found
        .get(at(2, 1, 0))
        .unwrap()
        .extended_capability(cap_id::EXT_ACS);
    assert_eq!(acs.map(|c| (c.offset, c.version)), Some((0x100, 1)));
    assert!(found
        .functions
        .iter()
        .filter(|f| f.sbdf != at(2, 1, 0))
        .all(|f| f.extended_capabilities.is_empty()));
    let alias_bridge = found
        .ancestors(at(5, 2, 1))
        .find(|f| f.pcie.map(|p| p.port_type) == Some(PciePortType::PcieToPciBridge));
    assert_eq!(alias_bridge.map(|f| f.sbdf), Some(at(4, 0, 0)));
    let behind: Vec<_> = found.children(at(4, 0, 0)).map(|f| f.sbdf).collect();
    assert_eq!(behind, vec![at(5, 1, 0), at(5, 2, 0), at(5, 2, 1)]);
    assert_eq!(found.ancestors(at(0, 0x1c, 1)).count(), 0);
}

#[test]
fn deep_table_marks_bridges_and_pcie_roles() {
    let table = enumerate(&deep(), 0, &[0]).to_string();
    let lines: Vec<_> = table.lines().collect();
    assert_eq!(
        lines[1],
        "0000:00:1c.0 1b36:000c [0604] PCI bridge  bridge [01-05]  pcie:root-port"
    );
    assert_eq!(
        lines[4],
        "0000:03:00.0 144d:a808 [0108] NVMe controller  pcie:endpoint flr  BAR0 mem64 0xfe600000 (16 KiB)"
    );
    assert_eq!(
        lines[6],
        "0000:04:00.0 1b36:000e [0604] PCI bridge  bridge [05-05]  pcie:pcie-to-pci-bridge  BAR0 mem64 0xfe400000 (256 B)"
    );
}

#[test]
fn bridge_loops_and_doubly_claimed_buses_are_reported_not_followed() {
    let mut cfg = FakeConfigSpace::new();
    cfg.insert(at(0, 1, 0), FakeFunction::bridge(0x1b36, 1, 0, 1, 1));
    cfg.insert(at(0, 2, 0), FakeFunction::bridge(0x1b36, 1, 0, 1, 1));
    cfg.insert(at(1, 0, 0), FakeFunction::bridge(0x1b36, 1, 1, 1, 1));
    cfg.insert(at(1, 1, 0), FakeFunction::bridge(0x1b36, 1, 1, 0, 0));
    cfg.insert(at(1, 2, 0), edu(0xfea0_0000));
    let found = enumerate(&cfg, 0, &[0, 1]);
    assert_eq!(
        sbdfs(&found.functions),
        vec![
            at(0, 1, 0),
            at(1, 0, 0),
            at(1, 1, 0),
            at(1, 2, 0),
            at(0, 2, 0)
        ]
    );
    assert_eq!(
        found.get(at(1, 2, 0)).unwrap().parent_bridge,
        Some(at(0, 1, 0))
    );
    assert_eq!(
        found.issues,
        vec![
            PciError::BridgeLoop {
                bridge: at(1, 0, 0),
                secondary: 1
            },
            PciError::BusVisitedTwice { segment: 0, bus: 1 },
            PciError::BusVisitedTwice { segment: 0, bus: 1 },
        ]
    );
    let table = found.to_string();
    assert!(table.ends_with("! 0000:01: bus reached twice, not rescanned\n"));
}

#[test]
fn malformed_functions_are_still_listed_for_quarantine() {
    let mut cfg = FakeConfigSpace::new();
    cfg.insert(
        at(0, 1, 0),
        FakeFunction::endpoint(0x1234, 0x0bad, 0x00ff00)
            .bar_mem32(0, 0xfea0_0000, 4096, false)
            .capability(CAP_ID_MSI, 0, &[0])
            .capability(0x09, 0, &[])
            .capability_next(0x48, 0x40),
    );
    cfg.insert(
        at(0, 2, 0),
        FakeFunction::endpoint(0x1234, 0x0bad, 0x00ff00).header_type(0x7e),
    );
    let found = enumerate(&cfg, 0, &[0]);
    assert_eq!(found.functions.len(), 2);
    let looping = &found.functions[0];
    assert_eq!(looping.capabilities.len(), 48);
    assert_eq!(looping.bars.len(), 1);
    assert_eq!(found.functions[1].header, HeaderKind::Unknown(0x7e));
    assert!(found.functions[1].bars.is_empty());
    assert_eq!(
        found.issues,
        vec![
            PciError::CapabilityLoop {
                function: at(0, 1, 0),
                list: CapabilityList::Standard
            },
            PciError::UnknownHeaderType {
                function: at(0, 2, 0),
                header_type: 0x7e
            },
        ]
    );
    assert_eq!(
        found.functions[1].to_string(),
        "0000:00:02.0 1234:0bad [00ff] unclassified device  header 0x7e"
    );
}

#[test]
fn the_function_bound_stops_the_scan() {
    let found = enumerate_bounded(&q35(), 0, &[0], 3);
    assert_eq!(found.functions.len(), 3);
    assert_eq!(found.issues, vec![PciError::FunctionLimit { limit: 3 }]);
}

/// A configuration space that answers at every address with a multi-function bridge whose
/// secondary bus is the next one: the worst a broken ECAM window can look like.
struct BridgesEverywhere;

impl ConfigSpace for BridgesEverywhere {
    fn read32(&self, addr: Sbdf, offset: u16) -> u32 {
        let bus = u32::from(addr.bdf.bus());
        match offset {
            0x00 => 0x0001_8086,
            0x08 => 0x0604_0000,
            0x0c => 0x0081_0000,
            0x18 => bus | (((bus + 1) & 0xff) << 8) | (0xff << 16),
            _ => 0,
        }
    }

    fn write32(&self, _: Sbdf, _: u16, _: u32) {}
}

#[test]
fn a_configuration_space_that_answers_everywhere_is_bounded() {
    let found = enumerate(&BridgesEverywhere, 0, &[0]);
    assert_eq!(found.functions.len(), MAX_FUNCTIONS);
    assert_eq!(
        found.issues.last(),
        Some(&PciError::FunctionLimit {
            limit: MAX_FUNCTIONS
        })
    );
    // Depth first: the first bridge of every bus leads straight down to bus 255 ...
    let descent: Vec<_> = found.functions[..256]
        .iter()
        .map(|f| f.sbdf.bdf.bus())
        .collect();
    assert_eq!(descent, (0..=255).collect::<Vec<u8>>());
    // ... and no bus is scanned twice, so no function is listed twice.
    let distinct: BTreeSet<_> = found.functions.iter().map(|f| f.sbdf).collect();
    assert_eq!(distinct.len(), found.functions.len());
}

#[test]
fn pcie_capability_id_is_exported_for_lookups() {
    let found = enumerate(&deep(), 0, &[0]);
    let root = found.get(at(0, 0x1c, 0)).unwrap();
    assert_eq!(
        root.capability(cap_id::PCI_EXPRESS).map(|c| c.offset),
        root.pcie.map(|p| p.offset)
    );
}
