//! QEMU's DMAR for `-machine q35 -device intel-iommu` (hw/i386/acpi-build.c, build_dmar_q35).
//!
//! The byte arrays are real: captured from QEMU 7.2 (Debian 1:7.2+dfsg-7+deb12u18) with
//! SeaBIOS, by dumping guest RAM with the monitor's `pmemsave` and cutting out the table whose
//! signature is DMAR and whose checksum holds. QEMU 7.2 does not set INCLUDE_PCI_ALL: since
//! the `bypass_iommu` work it lists every device of bus 0 as an explicit scope (bridges as
//! sub-hierarchy scopes). Older QEMU emitted one INCLUDE_PCI_ALL unit; that form is built by
//! hand below.
mod dmar_support;

use acpi_iommu::dmar::{covering_unit, Dmar, DmarFlags, ResolvedScope, ResolvedUnit, ScopeType};
use dmar_support::{drhd, scope, table};
use lazaret_types::{Bdf, Sbdf};

/// `-device intel-iommu,aw-bits=48` (HAW field 47; with `aw-bits=39` it is 38, nothing else
/// changes but the checksum).
const QEMU72_AW48: [u8; 104] = [
    0x44, 0x4d, 0x41, 0x52, 0x68, 0x00, 0x00, 0x00, 0x01, 0x39, 0x42, 0x4f, 0x43, 0x48, 0x53, 0x20,
    0x42, 0x58, 0x50, 0x43, 0x20, 0x20, 0x20, 0x20, 0x01, 0x00, 0x00, 0x00, 0x42, 0x58, 0x50, 0x43,
    0x01, 0x00, 0x00, 0x00, 0x2f, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x38, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xd9, 0xfe, 0x00, 0x00, 0x00, 0x00,
    0x03, 0x08, 0x00, 0x00, 0x00, 0xff, 0x00, 0x00, 0x01, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x08, 0x00, 0x00, 0x00, 0x00, 0x1f, 0x00, 0x01, 0x08, 0x00, 0x00, 0x00, 0x00, 0x1f, 0x02,
    0x01, 0x08, 0x00, 0x00, 0x00, 0x00, 0x1f, 0x03,
];

/// `-machine kernel-irqchip=split -device intel-iommu,intremap=on,device-iotlb=on` (default
/// aw-bits 39): adds an ATSR with ALL_PORTS.
const QEMU72_IOTLB: [u8; 112] = [
    0x44, 0x4d, 0x41, 0x52, 0x70, 0x00, 0x00, 0x00, 0x01, 0x2f, 0x42, 0x4f, 0x43, 0x48, 0x53, 0x20,
    0x42, 0x58, 0x50, 0x43, 0x20, 0x20, 0x20, 0x20, 0x01, 0x00, 0x00, 0x00, 0x42, 0x58, 0x50, 0x43,
    0x01, 0x00, 0x00, 0x00, 0x26, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x38, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xd9, 0xfe, 0x00, 0x00, 0x00, 0x00,
    0x03, 0x08, 0x00, 0x00, 0x00, 0xff, 0x00, 0x00, 0x01, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x08, 0x00, 0x00, 0x00, 0x00, 0x1f, 0x00, 0x01, 0x08, 0x00, 0x00, 0x00, 0x00, 0x1f, 0x02,
    0x01, 0x08, 0x00, 0x00, 0x00, 0x00, 0x1f, 0x03, 0x02, 0x00, 0x08, 0x00, 0x01, 0x00, 0x00, 0x00,
];

/// `-device intel-iommu,aw-bits=48,intremap=off -device edu -device edu
/// -device pcie-root-port,id=rp1,bus=pcie.0,chassis=1 -device edu,bus=rp1`: the two edu
/// devices at 00:01.0 and 00:02.0, the root port at 00:03.0 as a bridge scope.
const QEMU72_EDU_BEHIND_ROOT_PORT: [u8; 128] = [
    0x44, 0x4d, 0x41, 0x52, 0x80, 0x00, 0x00, 0x00, 0x01, 0xe8, 0x42, 0x4f, 0x43, 0x48, 0x53, 0x20,
    0x42, 0x58, 0x50, 0x43, 0x20, 0x20, 0x20, 0x20, 0x01, 0x00, 0x00, 0x00, 0x42, 0x58, 0x50, 0x43,
    0x01, 0x00, 0x00, 0x00, 0x2f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x50, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xd9, 0xfe, 0x00, 0x00, 0x00, 0x00,
    0x03, 0x08, 0x00, 0x00, 0x00, 0xff, 0x00, 0x00, 0x01, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x08, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x08, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00,
    0x02, 0x08, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x01, 0x08, 0x00, 0x00, 0x00, 0x00, 0x1f, 0x00,
    0x01, 0x08, 0x00, 0x00, 0x00, 0x00, 0x1f, 0x02, 0x01, 0x08, 0x00, 0x00, 0x00, 0x00, 0x1f, 0x03,
];

/// QEMU's VT-d register block on q35 (Q35_HOST_BRIDGE_IOMMU_ADDR).
const QEMU_VTD_BASE: u64 = 0xfed9_0000;

fn bdf(bus: u8, device: u8, function: u8) -> Bdf {
    Bdf::new(bus, device, function).unwrap()
}

/// A fake config space: `bridges` maps a bridge to its (secondary, subordinate) buses.
fn config(bridges: &[(Bdf, (u8, u8))]) -> impl FnMut(Bdf) -> Option<(u8, u8)> + '_ {
    |b: Bdf| {
        bridges
            .iter()
            .find(|(bridge, _)| *bridge == b)
            .map(|(_, buses)| *buses)
    }
}

/// The index of the unit that translates `device`.
fn unit_for(units: &[ResolvedUnit<'_>], device: Sbdf) -> Option<usize> {
    covering_unit(units.iter().map(ResolvedUnit::unit_scopes), device)
}

#[test]
fn qemu_7_2_lists_bus_zero_explicitly() {
    let dmar = Dmar::parse(&QEMU72_AW48).unwrap();
    assert_eq!(&dmar.header.oem_id, b"BOCHS ");
    assert_eq!(dmar.host_address_width(), 48);
    assert_eq!(dmar.flags, DmarFlags(DmarFlags::INTR_REMAP));
    let units: Vec<_> = dmar.drhds().collect();
    assert_eq!(units.len(), 1);
    let unit = units[0];
    assert_eq!((unit.segment, unit.register_base.0), (0, QEMU_VTD_BASE));
    assert!(!unit.include_pci_all());
    assert_eq!(unit.register_set_size(), 4096);
    let scopes: Vec<(ScopeType, u8, Option<Bdf>)> = unit
        .scopes
        .map(|s| (s.scope_type, s.enumeration_id, s.resolve_direct()))
        .collect();
    assert_eq!(
        scopes,
        [
            // The IOAPIC on QEMU's pseudo platform bus 0xff (Q35_PSEUDO_BUS_PLATFORM).
            (ScopeType::IoApic, 0, Some(bdf(0xff, 0, 0))),
            (ScopeType::PciEndpoint, 0, Some(bdf(0, 0, 0))),
            (ScopeType::PciEndpoint, 0, Some(bdf(0, 0x1f, 0))),
            (ScopeType::PciEndpoint, 0, Some(bdf(0, 0x1f, 2))),
            (ScopeType::PciEndpoint, 0, Some(bdf(0, 0x1f, 3))),
        ]
    );
    assert_eq!(dmar.rmrrs().count(), 0);
    assert_eq!(dmar.structures().count(), 1);
}

#[test]
fn qemu_7_2_device_iotlb_adds_an_all_ports_atsr() {
    let dmar = Dmar::parse(&QEMU72_IOTLB).unwrap();
    assert_eq!(dmar.host_address_width(), 39);
    assert!(dmar.intr_remap() && !dmar.x2apic_opt_out() && !dmar.dma_ctrl_platform_opt_in());
    let atsrs: Vec<_> = dmar.atsrs().collect();
    assert_eq!(atsrs.len(), 1);
    assert!(atsrs[0].all_ports());
    assert_eq!(atsrs[0].segment, 0);
    assert_eq!(atsrs[0].scopes.count(), 0);
}

#[test]
fn qemu_7_2_edu_devices_find_their_unit_through_the_root_port() {
    let dmar = Dmar::parse(&QEMU72_EDU_BEHIND_ROOT_PORT).unwrap();
    assert!(!dmar.intr_remap());
    let units = dmar.resolve_units(config(&[(bdf(0, 3, 0), (1, 1))]));
    assert_eq!(units.len(), 1);
    assert!(units[0].unresolved.is_empty());
    assert!(units[0].scopes.contains(&ResolvedScope::Bridge {
        bridge: bdf(0, 3, 0),
        buses: 1..=1
    }));
    let seg0 = |b: Bdf| Sbdf::new(0, b);
    assert_eq!(
        unit_for(&units, seg0(bdf(0, 1, 0))),
        Some(0),
        "edu on bus 0"
    );
    assert_eq!(
        unit_for(&units, seg0(bdf(0, 2, 0))),
        Some(0),
        "edu on bus 0"
    );
    assert_eq!(
        unit_for(&units, seg0(bdf(0, 3, 0))),
        Some(0),
        "the root port itself"
    );
    assert_eq!(
        unit_for(&units, seg0(bdf(1, 0, 0))),
        Some(0),
        "edu behind the root port"
    );
    // Not listed, no INCLUDE_PCI_ALL: not translated by any unit.
    assert_eq!(unit_for(&units, seg0(bdf(0, 4, 0))), None);
    assert_eq!(unit_for(&units, seg0(bdf(2, 0, 0))), None);
    assert_eq!(unit_for(&units, Sbdf::new(1, bdf(0, 1, 0))), None);

    // If the root port cannot be read, its scope is reported unresolved and covers nothing.
    let units = dmar.resolve_units(config(&[]));
    assert_eq!(units[0].unresolved.len(), 1);
    assert_eq!(units[0].unresolved[0].to_string(), "bridge 00:03.0");
    assert_eq!(unit_for(&units, seg0(bdf(1, 0, 0))), None);
    assert_eq!(unit_for(&units, seg0(bdf(0, 1, 0))), Some(0));
}

/// What QEMU before 6.0 emitted: one INCLUDE_PCI_ALL unit whose only scope is the IOAPIC.
fn qemu_legacy(haw_field: u8) -> Vec<u8> {
    table(
        haw_field,
        1,
        &[drhd(1, 0, QEMU_VTD_BASE, &[scope(3, 0, 0xff, &[(0, 0)])])],
    )
}

#[test]
fn legacy_qemu_include_pci_all_covers_every_device_of_segment_zero() {
    for (haw_field, width) in [(38, 39), (47, 48)] {
        let bytes = qemu_legacy(haw_field);
        let dmar = Dmar::parse(&bytes).unwrap();
        assert_eq!(dmar.host_address_width(), width);
        let unit = dmar.drhds().next().unwrap();
        assert!(unit.include_pci_all());
        assert_eq!(unit.register_base.0, QEMU_VTD_BASE);
        let units = dmar.resolve_units(config(&[]));
        for device in [bdf(0, 1, 0), bdf(0, 0x1f, 7), bdf(5, 0, 0), bdf(0xff, 0, 0)] {
            assert_eq!(unit_for(&units, Sbdf::new(0, device)), Some(0), "{device}");
        }
        assert_eq!(unit_for(&units, Sbdf::new(1, bdf(0, 1, 0))), None);
    }
}
