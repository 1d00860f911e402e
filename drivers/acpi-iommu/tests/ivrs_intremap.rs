//! Whether the IVRS lets interrupt remapping be relied on (`remapping_doubt`), on the real
//! tables of testdata/ and on copies with their IOAPIC entries turned into padding.
use acpi_iommu::ivrs::{entry_kind, remapping_doubt, EntryDetail, RemapDoubt, SpecialVariety};
use acpi_iommu::Ivrs;

/// Every IVRS dump in testdata/ whose name says which machine it is.
const MACHINES: [&str; 11] = [
    "asus-prime-x399-a",
    "asus-rog-strix-x670e-f",
    "asus-zenbook-s16-um5606wa",
    "biostar-a68mhe",
    "framework-laptop16",
    "hp-laptop-14-fq0",
    "lenovo-legion5-15arh05h",
    "msi-ms-7721",
    "msi-ms-7b79",
    "supermicro-h8dgu",
    "valve-jupiter-steamdeck",
];

fn dump(machine: &str) -> Vec<u8> {
    let path = format!("{}/testdata/ivrs-{machine}.dat", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The doubt for each IOMMU (most complete IVHD of each), in table order.
fn doubts(table: &[u8], madt: Option<&[u8]>) -> Vec<Option<RemapDoubt>> {
    let ivrs = Ivrs::parse(table).expect("valid");
    let units = ivrs.selected_ivhds();
    units
        .iter()
        .map(|u| remapping_doubt(u, &units, madt))
        .collect()
}

/// The IOAPIC IDs every IVHD of the table names, read from the raw entry bytes (type 48h,
/// handle at +4, variety at +7), not through the parser.
fn ioapic_ids_in_bytes(table: &[u8]) -> Vec<u8> {
    let ivrs = Ivrs::parse(table).expect("valid");
    let mut ids: Vec<u8> = ivrs
        .ivhds()
        .flat_map(|h| h.entries.iter())
        .filter(|e| e.kind == entry_kind::SPECIAL && table[e.offset + 7] == 1)
        .map(|e| table[e.offset + 4])
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// `table` with every IOAPIC special entry (48h, variety 01h) overwritten by 8-byte padding
/// (40h), length unchanged and checksum fixed: the IVRS of firmware that lists no IOAPIC.
fn without_ioapics(mut table: Vec<u8>) -> Vec<u8> {
    let offsets: Vec<usize> = Ivrs::parse(&table)
        .expect("valid")
        .ivhds()
        .flat_map(|h| h.entries.iter())
        .filter(|e| {
            matches!(
                e.detail,
                EntryDetail::Special {
                    variety: SpecialVariety::IoApic,
                    ..
                }
            )
        })
        .map(|e| e.offset)
        .collect();
    assert!(!offsets.is_empty(), "the table names an IOAPIC");
    for at in offsets {
        table[at..at + 8].copy_from_slice(&[entry_kind::PAD8, 0, 0, 0, 0, 0, 0, 0]);
    }
    acpi_iommu::sdt::fix_checksum(&mut table);
    table
}

#[test]
fn every_real_table_names_its_ioapics_so_remapping_is_relied_on() {
    for machine in MACHINES {
        let table = dump(machine);
        let ids = ioapic_ids_in_bytes(&table);
        assert!(!ids.is_empty(), "{machine}");
        for madt in [None, Some(&ids[..])] {
            let d = doubts(&table, madt);
            assert!(d.iter().all(Option::is_none), "{machine} {madt:?}: {d:?}");
        }
    }
}

#[test]
fn a_real_table_without_its_ioapic_entries_is_doubted_on_every_unit() {
    for machine in MACHINES {
        let table = without_ioapics(dump(machine));
        let ids = ioapic_ids_in_bytes(&dump(machine));
        for madt in [None, Some(&ids[..])] {
            let d = doubts(&table, madt);
            assert!(!d.is_empty(), "{machine}");
            assert!(
                d.iter().all(|d| *d == Some(RemapDoubt::NoIoapic)),
                "{machine} {madt:?}: {d:?}"
            );
        }
        // A machine without IOAPICs has nothing the IVRS must name.
        assert!(doubts(&table, Some(&[])).iter().all(Option::is_none));
    }
}

/// Two dies, two IOMMUs: the first names IOAPICs 0x80 and 0x81, the second only its own 0x82.
/// Each MADT IOAPIC is covered by one IVHD, so neither unit is doubted; an IOAPIC the MADT
/// lists and no IVHD names doubts both, as Linux turns remapping off for the whole machine.
#[test]
fn ioapics_are_covered_across_the_ivhds_of_a_two_die_machine() {
    let table = dump("asus-prime-x399-a");
    let ivrs = Ivrs::parse(&table).expect("valid");
    let units = ivrs.selected_ivhds();
    let named: Vec<Vec<u8>> = units
        .iter()
        .map(|u| u.ioapics().map(|(id, _)| id).collect())
        .collect();
    assert_eq!(named, [vec![0x80, 0x81], vec![0x82]]);
    assert_eq!(doubts(&table, Some(&[0x80, 0x81, 0x82])), [None, None]);
    let missing = Some(RemapDoubt::IoapicNotListed { id: 0x83 });
    assert_eq!(
        doubts(&table, Some(&[0x80, 0x83, 0x82])),
        [missing, missing]
    );
    assert_eq!(
        missing.map(|d| d.to_string()).as_deref(),
        Some("the MADT's IOAPIC 131 is in no IVHD")
    );
}

#[test]
fn only_the_unit_whose_ivhd_names_no_ioapic_is_doubted() {
    let mut table = dump("asus-prime-x399-a");
    // Pad out 0x82, the only IOAPIC of the second die, in both its 10h and 11h blocks.
    let offsets: Vec<usize> = Ivrs::parse(&table)
        .expect("valid")
        .ivhds()
        .flat_map(|h| h.entries.iter())
        .filter(|e| matches!(e.detail, EntryDetail::Special { handle: 0x82, .. }))
        .map(|e| e.offset)
        .collect();
    assert_eq!(offsets.len(), 2);
    for at in offsets {
        table[at] = entry_kind::PAD8;
    }
    acpi_iommu::sdt::fix_checksum(&mut table);
    assert_eq!(doubts(&table, None), [None, Some(RemapDoubt::NoIoapic)]);
    assert_eq!(RemapDoubt::NoIoapic.to_string(), "its IVRS lists no IOAPIC");
}
