//! Builder tests, every tree read back by [`crate::reference`].
use lazaret_types::sim::{SimFrameAllocator, SimMemory};
use lazaret_types::{FrameAllocator, PhysAddr, PhysMem};

use crate::reference::{leaves, translate};
use crate::*;

const POOL: PhysAddr = PhysAddr(0x4000_0000);
const MIB: u64 = 1 << 20;

fn ram(gpa: u64, hpa: u64, len: u64) -> Mapping {
    Mapping {
        gpa,
        hpa,
        len,
        writable: true,
        executable: true,
        cache: Cache::WriteBack,
    }
}

fn mmio(gpa: u64, hpa: u64, len: u64) -> Mapping {
    Mapping {
        writable: true,
        executable: false,
        cache: Cache::Uncached,
        ..ram(gpa, hpa, len)
    }
}

/// Every leaf lies inside one mapping at the right offset with the right rights, and the
/// leaves add up to the mappings: everything is mapped, and nothing else.
fn check(mem: &dyn PhysMem, t: &PageTables, maps: &[Mapping], format: Format) {
    let found = leaves(mem, t.root()).unwrap();
    let mut covered = 0;
    for l in &found {
        let m = maps
            .iter()
            .find(|m| l.va >= m.gpa && l.va + l.size <= m.gpa + m.len)
            .unwrap_or_else(|| panic!("leaf {l:x?} outside every mapping"));
        assert_eq!(l.pa, m.hpa + (l.va - m.gpa), "{l:x?}");
        assert_eq!(l.writable, m.writable, "{l:x?}");
        assert_eq!(l.no_execute, !m.executable, "{l:x?}");
        assert_eq!(l.user, format == Format::Nested, "{l:x?}");
        let uc = m.cache == Cache::Uncached;
        assert_eq!((l.pcd, l.pwt), (uc, uc), "{l:x?}");
        covered += l.size;
    }
    assert_eq!(covered, maps.iter().map(|m| m.len).sum::<u64>());
    let c = t.counts();
    let big = found.iter().filter(|l| l.size == LARGE_PAGE_SIZE).count() as u64;
    assert_eq!((c.leaves_2m, c.leaves_4k), (big, found.len() as u64 - big));
    assert_eq!(c.table_pages, t.pages().len() as u64);
    for m in maps {
        for va in [m.gpa, m.gpa + m.len - 1] {
            assert_eq!(translate(mem, t.root(), va), Some(m.hpa + (va - m.gpa)));
        }
    }
}

fn built(maps: &[Mapping], config: Config) -> (PageTables, SimMemory) {
    let mem = SimMemory::new();
    let mut alloc = SimFrameAllocator::new(&mem, POOL, 4096);
    let t = build(&mem, &mut alloc, config, maps).unwrap();
    check(&mem, &t, maps, config.format);
    let pages = t.pages().len();
    assert_eq!(alloc.frames_in_use(), pages);
    let t2 = build(&mem, &mut alloc, config, maps).unwrap();
    t2.free(&mut alloc);
    assert_eq!(alloc.frames_in_use(), pages);
    (t, mem)
}

#[test]
fn aligned_ram_gets_2m_leaves_and_three_tables() {
    let maps = [ram(0, 0x8000_0000, 8 * MIB)];
    let (t, _) = built(&maps, Config::nested(true));
    let c = t.counts();
    assert_eq!((c.leaves_2m, c.leaves_4k, c.table_pages), (4, 0, 3));
    assert_eq!(c.pte_writes, 2 + 4);
}

#[test]
fn misaligned_host_address_falls_back_to_4k() {
    let maps = [ram(0, 0x8000_1000, 8 * MIB)];
    let (t, _) = built(&maps, Config::nested(true));
    let c = t.counts();
    assert_eq!((c.leaves_2m, c.leaves_4k, c.table_pages), (0, 2048, 3 + 4));
}

#[test]
fn ragged_edges_use_4k_and_the_middle_2m() {
    // The guest's own identity map skips page 0; a run ends 12 KiB past a 2 MiB boundary.
    let maps = [ram(0x1000, 0x1000, 6 * MIB + 0x2000)];
    let (t, _) = built(&maps, Config::guest(false));
    let c = t.counts();
    assert_eq!((c.leaves_2m, c.leaves_4k), (2, 511 + 3));
}

#[test]
fn several_runs_bars_and_rights_are_read_back() {
    let maps = [
        ram(0, 0x1_0000_0000, 2 * MIB),
        ram(2 * MIB, 0x2000_0000, 2 * MIB),
        Mapping {
            writable: false,
            executable: false,
            ..ram(4 * MIB, 0x3000_0000, 0x5000)
        },
        mmio(0xC000_0000, 0xFEB0_0000, 0x10_0000),
        mmio(0xC010_0000, 0xFE00_0000, 4 * MIB),
        ram(0x7fff_ffe0_0000, 0x40_0000, 2 * MIB),
    ];
    for config in [Config::nested(true), Config::guest(true)] {
        let (t, mem) = built(&maps, config);
        // Nothing between the runs.
        assert_eq!(translate(&mem, t.root(), 4 * MIB + 0x5000), None);
        assert_eq!(translate(&mem, t.root(), 0xBFFF_F000), None);
    }
}

#[test]
fn pseudo_random_maps_read_back() {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    for _ in 0..40 {
        let mut maps = std::vec::Vec::new();
        let mut gpa = next(4) * LARGE_PAGE_SIZE + next(3) * 0x1000;
        for _ in 0..1 + next(4) {
            let len = (1 + next(1200)) * 0x1000;
            let hpa = (next(64) * LARGE_PAGE_SIZE + next(2) * next(512) * 0x1000) + (1 << 32);
            let m = Mapping {
                writable: next(2) == 0,
                executable: next(2) == 0,
                cache: if next(2) == 0 {
                    Cache::WriteBack
                } else {
                    Cache::Uncached
                },
                ..ram(gpa, hpa, len)
            };
            maps.push(m);
            gpa += len + next(3) * 0x1000 + next(2) * LARGE_PAGE_SIZE;
        }
        built(&maps, Config::nested(true));
    }
}

#[test]
fn bad_lists_are_refused_and_allocate_nothing() {
    let cases = [
        (std::vec![ram(0, 0, 0)], PagingError::Empty { index: 0 }),
        (
            std::vec![ram(0x800, 0, 0x1000)],
            PagingError::Misaligned { index: 0 },
        ),
        (
            std::vec![ram(0, 0, 0x1000), ram(0x1000, 0x10, 0x1000)],
            PagingError::Misaligned { index: 1 },
        ),
        (
            std::vec![ram(0, 0, 0x1800)],
            PagingError::Misaligned { index: 0 },
        ),
        (
            std::vec![ram(1 << 48, 0, 0x1000)],
            PagingError::OutOfRange { index: 0 },
        ),
        (
            std::vec![ram((1 << 48) - 0x1000, 0, 0x2000)],
            PagingError::OutOfRange { index: 0 },
        ),
        (
            std::vec![ram(0, 1 << 52, 0x1000)],
            PagingError::OutOfRange { index: 0 },
        ),
        (
            std::vec![ram(u64::MAX - 0xfff, 0, 0x1000)],
            PagingError::OutOfRange { index: 0 },
        ),
        (
            std::vec![
                ram(0, 0, 0x3000),
                ram(0x5000, 0, 0x1000),
                ram(0x2000, 0, 0x1000)
            ],
            PagingError::Overlap {
                first: 0,
                second: 2,
            },
        ),
        (
            std::vec![ram(0x1000, 0, 0x1000), ram(0, 0, 0x2000)],
            PagingError::Overlap {
                first: 0,
                second: 1,
            },
        ),
    ];
    for (maps, want) in cases {
        let mem = SimMemory::new();
        let mut alloc = SimFrameAllocator::new(&mem, POOL, 64);
        assert_eq!(
            build(&mem, &mut alloc, Config::nested(true), &maps),
            Err(want)
        );
        assert_eq!(alloc.frames_in_use(), 0);
    }
    let mem = SimMemory::new();
    let mut alloc = SimFrameAllocator::new(&mem, POOL, 64);
    let nx = [ram(0, 0, 0x1000), mmio(0x1000, 0, 0x1000)];
    assert_eq!(
        build(&mem, &mut alloc, Config::guest(false), &nx),
        Err(PagingError::NoExecuteUnavailable { index: 1 })
    );
    // The guest's own tables stay in the lower canonical half.
    assert_eq!(
        build(
            &mem,
            &mut alloc,
            Config::guest(true),
            &[ram(1 << 47, 0, 0x1000)]
        ),
        Err(PagingError::OutOfRange { index: 0 })
    );
    assert!(build(
        &mem,
        &mut alloc,
        Config::nested(true),
        &[ram(1 << 47, 0, 0x1000)]
    )
    .is_ok());
    // Touching is not overlapping, in either order.
    let touching = [
        ram(0x2000, 0, 0x1000),
        ram(0x1000, 0, 0x1000),
        ram(0x3000, 0, 0x1000),
    ];
    assert!(build(&mem, &mut alloc, Config::nested(true), &touching).is_ok());
}

#[test]
fn every_allocation_failure_gives_back_every_page() {
    let maps = [
        ram(0, 0x1000, 3 * MIB),
        mmio(0xC000_0000, 0xFE00_0000, 4 * MIB),
        ram(1 << 40, 0, 0x1000),
    ];
    let mem = SimMemory::new();
    let mut alloc = SimFrameAllocator::new(&mem, POOL, 256);
    let needed = build(&mem, &mut alloc, Config::nested(true), &maps).unwrap();
    let n = needed.pages().len();
    needed.free(&mut alloc);
    assert_eq!(alloc.frames_in_use(), 0);
    for fail in 0..n {
        alloc.fail_allocation(fail);
        assert_eq!(
            build(&mem, &mut alloc, Config::nested(true), &maps),
            Err(PagingError::OutOfMemory),
            "failing allocation {fail}"
        );
        assert_eq!(alloc.frames_in_use(), 0, "failing allocation {fail}");
    }
    alloc.fail_allocation(n);
    build(&mem, &mut alloc, Config::nested(true), &maps).unwrap();
}

#[test]
fn guest_tables_live_in_the_area_with_guest_physical_pointers() {
    const AREA_GPA: u64 = 0x1_0000;
    let mem = SimMemory::new();
    // Scattered host frames behind the area.
    let frames: std::vec::Vec<PhysAddr> = (0..16u64)
        .map(|i| PhysAddr(0x9000_0000 + i * 0x3000))
        .collect();
    let mut area = TableArea::new(AREA_GPA, &frames).unwrap();
    let maps = [
        ram(0x1000, 0x1000, 8 * MIB - 0x1000),
        mmio(0xC000_0000, 0xC000_0000, 0x1000_0000),
    ];
    let gmem = area.mem(&mem);
    let t = build(&gmem, &mut area, Config::guest(true), &maps).unwrap();
    assert_eq!(
        t.root(),
        PhysAddr(AREA_GPA),
        "the root is the area's first page: CR3"
    );
    assert!(t.pages().iter().all(|p| area.host_address(p.0).is_some()));
    check(&gmem, &t, &maps, Format::Guest);
    // Through host memory: the root's first entry names a gpa inside the area, not a host frame.
    let pml4e = mem.read_u64(frames[0]);
    assert!(
        area.host_address(pml4e & 0x000f_ffff_ffff_f000).is_some(),
        "{pml4e:#x}"
    );
    t.free(&mut area);
    assert_eq!(area.frames_in_use(), 0);
}

#[test]
fn a_full_area_is_out_of_memory_with_nothing_kept() {
    let mem = SimMemory::new();
    let frames = [
        PhysAddr(0x9000_0000),
        PhysAddr(0x9000_1000),
        PhysAddr(0x9000_2000),
    ];
    let mut area = TableArea::new(0x1_0000, &frames).unwrap();
    let maps = [ram(0x1000, 0x1000, 0x1000)];
    let gmem = area.mem(&mem);
    assert_eq!(
        build(&gmem, &mut area, Config::guest(true), &maps),
        Err(PagingError::OutOfMemory)
    );
    assert_eq!(area.frames_in_use(), 0);
    assert_eq!(area.host_address(0x1_3000), None);
    assert_eq!(area.host_address(0x1_2008), Some(PhysAddr(0x9000_2008)));
    assert!(TableArea::new(0x1_0800, &frames).is_err());
    assert!(TableArea::new(0x1_0000, &[]).is_err());
}
