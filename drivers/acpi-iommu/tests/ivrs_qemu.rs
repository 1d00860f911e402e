//! The IVRS that QEMU's `-device amd-iommu` (q35 only) hands the guest, rebuilt byte for byte
//! the way hw/i386/acpi-build.c `build_amd_iommu()` writes it, and parsed.
//!
//! What QEMU emits (read from its source):
//! - up to 8.2 (Debian's 7.2 included): IVRS rev 1, IVinfo = PASize 40 only, one IVHD
//!   type 10h (flags HtTunEn|IotlbSup|PrefSup|PPRSup; the feature-reporting value
//!   `48<<30 | 48<<28 | GTSup | GASup` is written into 4 bytes, so only 0x44 survives).
//! - from 9.0: IVinfo gains EFRSup, and the same entries are emitted twice, in an IVHD 10h
//!   and an IVHD 11h (flags HtTunEn|IotlbSup, EFR image, EFR2 = 0). No 40h.
//! - entries come from a walk of every host bridge's bus: a select (02h) per function; for a
//!   PCIe bridge whose secondary bus is a leaf, a 03h/04h range over that bus; for a bridge
//!   to conventional PCI, a 43h alias range over secondary..subordinate whose alias is the
//!   bridge itself (or the secondary bus's 00.0 for a PCIe-to-PCI bridge). With no device
//!   found, a single 01h "all". With interrupt remapping on, a special entry (48h) for the
//!   IOAPIC at requester ID 00:14.0 (IOAPIC_SB_DEVID), handle 0.
use acpi_iommu::ivrs::{EntryDetail, FactKind, IvhdType, SpecialVariety};
use acpi_iommu::Ivrs;
use lazaret_types::Bdf;

/// AMDVI_BASE_ADDR.
const AMDVI_BASE: u64 = 0xfed8_0000;
/// The IOMMU's PCI function, 00:01.0 when `-device amd-iommu` comes first on the command line.
const IOMMU_DEVFN: u16 = 0x08;
/// An EFR image standing in for `amdvi_extended_feature_register()`.
const EFR: u64 = 0x0000_0000_0000_22d7;

fn bdf(bus: u8, dev: u8, func: u8) -> Bdf {
    Bdf::new(bus, dev, func).expect("valid")
}

/// A function on bus 0 as QEMU's bus walk sees it.
enum Dev {
    Endpoint(Bdf),
    /// PCIe root port whose secondary bus `sec` is a leaf.
    RootPort {
        at: Bdf,
        sec: u8,
    },
    /// PCI-to-PCI bridge to a conventional bus.
    PciBridge {
        at: Bdf,
        sec: u8,
        sub: u8,
    },
}

fn put(out: &mut Vec<u8>, value: u64, size: usize) {
    out.extend_from_slice(&value.to_le_bytes()[..size]);
}

/// The device entries of `insert_ivhd()` for `devices`, plus the IOAPIC special entry.
fn ivhd_blob(devices: &[Dev], intremap: bool) -> Vec<u8> {
    let mut blob = Vec::new();
    for d in devices {
        let at = match d {
            Dev::Endpoint(at) | Dev::RootPort { at, .. } | Dev::PciBridge { at, .. } => at,
        };
        put(&mut blob, u64::from(at.requester_id()) << 8 | 0x02, 4);
        match *d {
            Dev::Endpoint(_) => {}
            Dev::RootPort { sec, .. } => {
                put(&mut blob, u64::from(sec) << 16 | 0x03, 4);
                put(&mut blob, u64::from(sec) << 16 | 0xff << 8 | 0x04, 4);
            }
            Dev::PciBridge { at, sec, sub } => {
                let a = u64::from(sec) << 8;
                put(
                    &mut blob,
                    u64::from(at.requester_id()) << 40 | a << 8 | 0x43,
                    8,
                );
                put(&mut blob, u64::from(sub) << 16 | 0xff << 8 | 0x04, 4);
            }
        }
    }
    if blob.is_empty() {
        put(&mut blob, 0x0000_0001, 4);
    }
    if intremap {
        put(&mut blob, 1 << 56 | 0x00a0 << 40 | 0x48, 8);
    }
    blob
}

fn ivhd_header(out: &mut Vec<u8>, kind: u8, flags: u8, length: usize) {
    put(out, kind.into(), 1);
    put(out, flags.into(), 1);
    put(out, length as u64, 2);
    put(out, IOMMU_DEVFN.into(), 2);
    put(out, 0x40, 2); // capability offset: the first capability in config space
    put(out, AMDVI_BASE, 8);
    put(out, 0, 2); // segment
    put(out, 0, 2); // IOMMU info
}

/// The whole IVRS; `qemu9` selects the 9.0+ layout (10h + 11h), else the 7.2 one.
fn qemu_ivrs(devices: &[Dev], intremap: bool, qemu9: bool) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(b"IVRS");
    put(&mut t, 0, 4); // length, set below
    put(&mut t, 1, 1); // revision
    put(&mut t, 0, 1); // checksum, set below
    t.extend_from_slice(b"BOCHS BXPC    ");
    put(&mut t, 1, 4);
    t.extend_from_slice(b"BXPC");
    put(&mut t, 1, 4);
    put(&mut t, 40 << 8 | u64::from(qemu9), 4); // IVinfo: PASize 40 (+ EFRSup)
    put(&mut t, 0, 8);
    let blob = ivhd_blob(devices, intremap);
    ivhd_header(&mut t, 0x10, 0xd1, 24 + blob.len());
    put(
        &mut t,
        (48u64 << 30 | 48 << 28 | 1 << 2 | 1 << 6) & 0xffff_ffff,
        4,
    );
    t.extend_from_slice(&blob);
    if qemu9 {
        ivhd_header(&mut t, 0x11, 0x11, 40 + blob.len());
        put(&mut t, 0, 4); // attributes
        put(&mut t, EFR, 8);
        put(&mut t, 0, 8); // EFR2
        t.extend_from_slice(&blob);
    }
    let len = t.len() as u32;
    t[4..8].copy_from_slice(&len.to_le_bytes());
    acpi_iommu::sdt::fix_checksum(&mut t);
    t
}

/// `-device amd-iommu -device edu -device edu -device pcie-root-port -device pci-bridge`.
fn q35_devices() -> Vec<Dev> {
    vec![
        Dev::Endpoint(bdf(0, 0, 0)),
        Dev::Endpoint(bdf(0, 1, 0)),
        Dev::Endpoint(bdf(0, 2, 0)),
        Dev::Endpoint(bdf(0, 3, 0)),
        Dev::RootPort {
            at: bdf(0, 4, 0),
            sec: 1,
        },
        Dev::PciBridge {
            at: bdf(0, 5, 0),
            sec: 2,
            sub: 2,
        },
        Dev::Endpoint(bdf(0, 0x1f, 0)),
        Dev::Endpoint(bdf(0, 0x1f, 2)),
        Dev::Endpoint(bdf(0, 0x1f, 3)),
    ]
}

#[test]
fn qemu_7_2_table_parses_into_one_ivhd_10h() {
    let table = qemu_ivrs(&q35_devices(), true, false);
    let ivrs = Ivrs::parse(&table).expect("valid");
    assert_eq!(ivrs.header.revision, 1);
    assert_eq!((ivrs.info.pa_size(), ivrs.info.efr_sup()), (40, false));
    assert_eq!(ivrs.blocks.len(), 1);
    let chosen = ivrs.selected_ivhds();
    let h = chosen[0];
    assert_eq!(h.kind, IvhdType::Fixed10);
    assert_eq!(h.iommu_bdf, bdf(0, 1, 0));
    assert_eq!(h.base_address.as_u64(), AMDVI_BASE);
    assert_eq!((h.capability_offset, h.features), (0x40, 0x44));
    assert_eq!((h.efr, h.efr2), (None, None));
    // 9 selects, a range pair, an alias range pair, the IOAPIC.
    assert_eq!(h.entries.len(), 9 + 2 + 2 + 1);

    let facts = h.device_facts().expect("consistent");
    for edu in [bdf(0, 2, 0), bdf(0, 3, 0)] {
        let f = facts.covering(edu).expect("edu covered");
        assert_eq!((f.first, f.last, f.kind), (edu, edu, FactKind::Pci));
        assert_eq!(facts.alias_of(edu), edu);
    }
    // Behind the root port: covered by the range, no alias.
    let behind_rp = bdf(1, 0, 0);
    let f = facts.covering(behind_rp).expect("covered");
    assert_eq!((f.first, f.last), (bdf(1, 0, 0), bdf(1, 0x1f, 7)));
    assert_eq!(facts.alias_of(behind_rp), behind_rp);
    // Behind the PCI bridge: DMA appears as the bridge.
    assert_eq!(facts.alias_of(bdf(2, 3, 0)), bdf(0, 5, 0));
    assert_eq!(facts.aliased_to(bdf(0, 5, 0)).count(), 1);
    // Nothing on a bus QEMU did not describe.
    assert!(facts.covering(bdf(3, 0, 0)).is_none());
    // The IOAPIC's interrupts carry 00:14.0.
    let ioapic = facts.covering(bdf(0, 0x14, 0)).expect("IOAPIC");
    assert_eq!(
        ioapic.kind,
        FactKind::Special {
            handle: 0,
            variety: SpecialVariety::IoApic
        }
    );
    let shown = ivrs.to_string();
    assert!(
        shown.contains("IVHD 10h @0x30: IOMMU 0000:00:01.0"),
        "{shown}"
    );
    assert!(
        shown.contains("43h range from 02:00.0 alias 00:05.0"),
        "{shown}"
    );
}

#[test]
fn qemu_9_table_repeats_the_entries_in_11h_and_11h_is_selected() {
    let table = qemu_ivrs(&q35_devices(), true, true);
    let ivrs = Ivrs::parse(&table).expect("valid");
    assert!(ivrs.info.efr_sup());
    let all: Vec<_> = ivrs.ivhds().collect();
    assert_eq!(all.len(), 2);
    let details = |i: usize| -> Vec<_> {
        all[i]
            .entries
            .iter()
            .map(|e| (e.kind, e.device_id, e.detail))
            .collect()
    };
    assert_eq!(details(0), details(1));
    let chosen = ivrs.selected_ivhds();
    assert_eq!(chosen.len(), 1);
    assert_eq!(chosen[0].kind, IvhdType::Fixed11);
    assert_eq!((chosen[0].efr, chosen[0].efr2), (Some(EFR), Some(0)));
    assert_eq!(chosen[0].offset, 48 + usize::from(all[0].length));
    let facts = chosen[0].device_facts().expect("consistent");
    assert_eq!(facts.alias_of(bdf(2, 0x1f, 7)), bdf(0, 5, 0));
}

#[test]
fn qemu_with_no_devices_falls_back_to_select_all() {
    let table = qemu_ivrs(&[], false, false);
    let ivrs = Ivrs::parse(&table).expect("valid");
    let h = ivrs.selected_ivhds()[0];
    assert_eq!(h.entries.len(), 1);
    assert_eq!(h.entries[0].detail, EntryDetail::All);
    let facts = h.device_facts().expect("consistent");
    assert!(facts.covering(bdf(0xff, 0x1f, 7)).is_some());
    assert!(facts.covering(bdf(0, 0, 0)).is_some());
}

/// QEMU names the IOAPIC exactly when `intremap=on`; without it, its amd-iommu does not remap
/// MSIs whatever the DTE says, and the IVRS shows it: no IOAPIC, remapping doubted.
#[test]
fn qemu_without_intremap_lists_no_ioapic_and_its_remapping_is_doubted() {
    use acpi_iommu::ivrs::{remapping_doubt, RemapDoubt};
    for qemu9 in [false, true] {
        for (intremap, want) in [(true, None), (false, Some(RemapDoubt::NoIoapic))] {
            let table = qemu_ivrs(&q35_devices(), intremap, qemu9);
            let ivrs = Ivrs::parse(&table).expect("valid");
            let units = ivrs.selected_ivhds();
            assert_eq!(units.len(), 1);
            let ioapics: Vec<_> = units[0].ioapics().collect();
            let named = if intremap {
                vec![(0, bdf(0, 0x14, 0))]
            } else {
                vec![]
            };
            assert_eq!(ioapics, named, "qemu9 {qemu9} intremap {intremap}");
            // QEMU's MADT has one IOAPIC, ID 0.
            for madt in [None, Some(&[0u8][..])] {
                assert_eq!(
                    remapping_doubt(units[0], &units, madt),
                    want,
                    "qemu9 {qemu9} intremap {intremap} madt {madt:?}"
                );
            }
        }
    }
}
