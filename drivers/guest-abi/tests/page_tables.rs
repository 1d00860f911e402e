//! The guest's page tables read back by a walker with its own bit definitions (SDM vol. 3A
//! §4.5: P = bit 0, R/W = bit 1, PCD = bit 4, PS = bit 7, address 51:12).
use std::collections::BTreeMap;

use lazaret_guest_abi::layout::*;
use lazaret_guest_abi::{build_page_tables, PageTableError};

fn build(memory: u64) -> (BTreeMap<u64, u8>, u64) {
    let mut ram = BTreeMap::new();
    let built = build_page_tables(memory, &mut |gpa, bytes| {
        assert!(
            gpa >= PAGE_TABLES_GPA
                && gpa + bytes.len() as u64 <= PAGE_TABLES_GPA + PAGE_TABLES_SIZE
        );
        for (i, b) in bytes.iter().enumerate() {
            ram.insert(gpa + i as u64, *b);
        }
        Ok::<(), ()>(())
    })
    .unwrap();
    assert_eq!(built.cr3, PAGE_TABLES_GPA);
    (ram, built.cr3)
}

fn read(ram: &BTreeMap<u64, u8>, at: u64) -> u64 {
    let b: Vec<u8> = (at..at + 8)
        .map(|a| *ram.get(&a).expect("table byte written"))
        .collect();
    u64::from_le_bytes(b.try_into().unwrap())
}

/// (physical address, uncached) of `va`, or None when not present.
fn walk(ram: &BTreeMap<u64, u8>, cr3: u64, va: u64) -> Option<(u64, bool)> {
    let mut table = cr3;
    for shift in [39u32, 30, 21, 12] {
        let e = read(ram, table + ((va >> shift) & 511) * 8);
        if e & 1 == 0 {
            return None;
        }
        assert_ne!(e & 2, 0, "writable at every level");
        let addr = e & 0x000f_ffff_ffff_f000;
        if shift == 12 || (shift == 21 && e & 0x80 != 0) {
            let offset = va & ((1u64 << shift) - 1);
            return Some((addr + offset, e & 0x10 != 0));
        }
        assert_eq!(e & 0x80, 0, "no 1 GiB pages");
        table = addr;
    }
    unreachable!()
}

#[test]
fn identity_maps_ram_but_page_0_and_the_window_uncached() {
    for memory in [
        DEFAULT_MEMORY_SIZE,
        (8 << 20) + 0x3000,
        256 << 20,
        3 << 30,
        0x3000,
    ] {
        let (ram, cr3) = build(memory);
        assert_eq!(walk(&ram, cr3, 0), None, "null guard");
        assert_eq!(walk(&ram, cr3, 0xfff), None, "null guard");
        let step = if memory > 64 << 20 { 0x1f_f000 } else { 0x1000 };
        let mut gpa = 0x1000;
        while gpa < memory {
            assert_eq!(
                walk(&ram, cr3, gpa + 8),
                Some((gpa + 8, false)),
                "{gpa:#x} of {memory:#x}"
            );
            gpa += step;
        }
        assert_eq!(walk(&ram, cr3, memory - 1), Some((memory - 1, false)));
        if memory < MMIO_WINDOW_GPA {
            assert_eq!(walk(&ram, cr3, memory), None, "nothing past RAM");
        }
        for gpa in [
            MMIO_WINDOW_GPA,
            MMIO_WINDOW_GPA + 0x12_3458,
            MMIO_WINDOW_GPA + MMIO_WINDOW_SIZE - 8,
        ] {
            assert_eq!(walk(&ram, cr3, gpa), Some((gpa, true)), "{gpa:#x}");
        }
        assert_eq!(walk(&ram, cr3, MMIO_WINDOW_GPA + MMIO_WINDOW_SIZE), None);
        assert_eq!(walk(&ram, cr3, 0xfed9_0000), None, "no host MMIO");
    }
}

#[test]
fn uses_2m_pages_where_aligned() {
    let (ram, cr3) = build(DEFAULT_MEMORY_SIZE);
    let pd = read(&ram, read(&ram, cr3) & !0xfff) & !0xfff;
    assert_eq!(
        read(&ram, pd) & 0x80,
        0,
        "first 2 MiB in 4 KiB pages (page 0 left out)"
    );
    for i in 1..4 {
        assert_eq!(read(&ram, pd + i * 8), (i << 21) | 0x83, "2 MiB page {i}");
    }
}

#[test]
fn refuses_ram_it_cannot_map() {
    for m in [0, 0x1000, 0x1800, MMIO_WINDOW_GPA + 0x1000] {
        let r = build_page_tables(m, &mut |_, _| Ok::<(), ()>(()));
        assert_eq!(r, Err(PageTableError::BadMemorySize(m)));
    }
    let r = build_page_tables(DEFAULT_MEMORY_SIZE, &mut |gpa, _| {
        if gpa > PAGE_TABLES_GPA {
            Err("full")
        } else {
            Ok(())
        }
    });
    assert!(matches!(
        r,
        Err(PageTableError::Write { error: "full", .. })
    ));
}
