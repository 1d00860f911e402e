//! Nested and guest tables from a memory map, read back by a walk written from the APM
//! (vol. 2 §5.3.3, §5.4.1) here: nothing shared with `lazaret_paging`'s builder.
use alloc::vec::Vec;

use lazaret_types::sim::{SimFrameAllocator, SimMemory};
use lazaret_types::{FrameAllocator, PhysAddr, PhysMem};

use super::*;

const LAYOUT: GuestLayout = GuestLayout {
    page_tables_gpa: 0x1_0000,
    page_tables_len: 0x1_0000,
    mmio_window_gpa: 0xC000_0000,
    mmio_window_size: 0x1000_0000,
};

/// What a 4-level walk of `va` ends in: the address and the entry bits that decide rights
/// (P 0, R/W 1, U/S 2, PWT 3, PCD 4 of the leaf; R/W and U/S ANDed, NX 63 ORed over levels).
#[derive(Debug, PartialEq, Eq)]
struct Walked {
    pa: u64,
    writable: bool,
    user: bool,
    uncached: bool,
    no_execute: bool,
}

/// `table_at` turns an address found in an entry into where the table really is.
fn walk(mem: &SimMemory, root: u64, va: u64, table_at: &dyn Fn(u64) -> u64) -> Option<Walked> {
    let (mut table, mut w, mut u, mut nx) = (root, true, true, false);
    for shift in [39u32, 30, 21, 12] {
        let slot = table_at(table) + ((va >> shift) & 511) * 8;
        let e = mem.read_u64(PhysAddr(slot));
        if e & 1 == 0 {
            return None;
        }
        w &= e & 2 != 0;
        u &= e & 4 != 0;
        nx |= e >> 63 == 1;
        let page = shift == 12 || (shift == 21 && e & 0x80 != 0);
        if page {
            let offset_mask = (1u64 << shift) - 1;
            let frame = e & 0x000f_ffff_ffff_f000 & !offset_mask;
            return Some(Walked {
                pa: frame | (va & offset_mask),
                writable: w,
                user: u,
                uncached: e & 0x18 == 0x18,
                no_execute: nx,
            });
        }
        table = e & 0x000f_ffff_ffff_f000;
    }
    None
}

fn guest(mem: &SimMemory, alloc: &mut SimFrameAllocator<'_>, pages: usize) -> GuestMemory {
    let _ = mem;
    GuestMemory::allocate(alloc, pages).unwrap()
}

#[test]
fn nested_tables_map_every_ram_page_and_each_bar_uncached_and_nothing_else() {
    let mem = SimMemory::new();
    // 16 MiB aligned frames one after another: one run, 2 MiB pages.
    let mut alloc = SimFrameAllocator::new(&mem, PhysAddr(0x4000_0000), 8192);
    let memory = guest(&mem, &mut alloc, 2048 + 3);
    let bar = MmioMapping {
        gpa: 0xC000_0000,
        hpa: PhysAddr(0xFEB0_0000),
        len: 0x10_0000,
    };
    let t = build_nested_tables(&mem, &mut alloc, &memory, &[bar], true).unwrap();
    let c = t.counts();
    assert_eq!((c.leaves_2m, c.leaves_4k), (4, 3 + 256));
    let id = |a: u64| a;
    for page in 0..2051u64 {
        let gpa = page * 0x1000 + 0x18;
        let got = walk(&mem, t.root().0, gpa, &id).unwrap();
        assert_eq!(got.pa, memory.host_address(gpa).unwrap().0, "{gpa:#x}");
        assert!(got.writable && got.user && !got.uncached && !got.no_execute);
    }
    let b = walk(&mem, t.root().0, 0xC00F_F008, &id).unwrap();
    assert_eq!(b.pa, 0xFEBF_F008);
    assert!(b.uncached && b.no_execute && b.user);
    for gpa in [memory.size(), 0xBFFF_F000, 0xC010_0000, 1 << 39] {
        assert_eq!(walk(&mem, t.root().0, gpa, &id), None, "{gpa:#x}");
    }
    let in_use = alloc.frames_in_use();
    let pages = t.pages().len();
    t.free(&mut alloc);
    assert_eq!(alloc.frames_in_use(), in_use - pages);
}

#[test]
fn guest_tables_identity_map_ram_but_page_0_and_the_mmio_window() {
    let mem = SimMemory::new();
    let mut alloc = SimFrameAllocator::new(&mem, PhysAddr(0x4000_0000), 8192);
    let memory = guest(&mem, &mut alloc, 2048);
    let t = build_guest_tables(&mem, &memory, &LAYOUT).unwrap();
    assert_eq!(
        t.root(),
        PhysAddr(LAYOUT.page_tables_gpa),
        "CR3 = PAGE_TABLES_GPA"
    );
    // Table addresses in entries are guest-physical: the walk goes through the memory map.
    let through_map = |gpa: u64| memory.host_address(gpa).unwrap().0;
    assert_eq!(
        walk(&mem, t.root().0, 0x0, &through_map),
        None,
        "null guard"
    );
    assert_eq!(
        walk(&mem, t.root().0, 0xfff, &through_map),
        None,
        "null guard"
    );
    for va in (0x1000..memory.size()).step_by(0x1000).map(|v| v + 0x10) {
        let got = walk(&mem, t.root().0, va, &through_map).unwrap();
        assert_eq!(got.pa, va, "identity");
        assert!(got.writable && !got.user && !got.uncached && !got.no_execute);
    }
    assert_eq!(walk(&mem, t.root().0, memory.size(), &through_map), None);
    for va in [0xC000_0000u64, 0xCFFF_FFF8] {
        let got = walk(&mem, t.root().0, va, &through_map).unwrap();
        assert_eq!(got.pa, va);
        assert!(got.uncached && !got.no_execute);
    }
    assert_eq!(walk(&mem, t.root().0, 0xD000_0000, &through_map), None);
    assert!(t.pages().len() <= 16);
}

#[test]
fn guest_tables_need_their_area_inside_ram() {
    let mem = SimMemory::new();
    let mut alloc = SimFrameAllocator::new(&mem, PhysAddr(0x4000_0000), 64);
    let small = guest(&mem, &mut alloc, 20);
    assert_eq!(
        build_guest_tables(&mem, &small, &LAYOUT).err(),
        Some(PagingError::OutOfRange { index: 0 })
    );
    let too_big = GuestLayout {
        page_tables_len: 0x100_0000,
        ..LAYOUT
    };
    assert!(build_guest_tables(&mem, &small, &too_big).is_err());
    let _: Vec<PhysAddr> = small.frames();
}
