//! The shared table code through both vendors' entry formats, checked with each vendor's own
//! reference walker (which shares no code with the builders).

use lazaret_amd_vi::walker::walk_tables;
use lazaret_types::sim::{SimFrameAllocator, SimMemory};
use lazaret_types::{FrameAllocator, PhysAddr, PhysMem, PAGE_SIZE};
use lazaret_vtd::walker::{walk, WalkerConfig};
use lazaret_vtd::TableMemory;

/// An allocator that breaks the "frames come zeroed" promise: the builders must not rely on
/// it for tables or scratch pages (a real allocator with a bug would otherwise leak data or
/// leave stray entries).
struct Dirty<'m> {
    mem: &'m SimMemory,
    inner: SimFrameAllocator<'m>,
}

impl<'m> Dirty<'m> {
    fn new(mem: &'m SimMemory) -> Self {
        Dirty {
            mem,
            inner: SimFrameAllocator::new(mem, PhysAddr(0x100_0000), 64),
        }
    }
}

impl FrameAllocator for Dirty<'_> {
    fn alloc_frame(&mut self) -> Option<PhysAddr> {
        let f = self.inner.alloc_frame()?;
        self.mem.write_bytes(f, &[0xa5; PAGE_SIZE as usize]);
        Some(f)
    }
    fn free_frame(&mut self, frame: PhysAddr) {
        self.inner.free_frame(frame)
    }
    fn frames_in_use(&self) -> usize {
        self.inner.frames_in_use()
    }
}

fn all_zero(mem: &SimMemory, page: PhysAddr) -> bool {
    let mut buf = [1u8; PAGE_SIZE as usize];
    mem.read_bytes(page, &mut buf);
    buf.iter().all(|b| *b == 0)
}

const IOVAS: [u64; 5] = [0, 0x1000, 0x20_0000, 0x7f_ffff_f000, 0xdead_b000];

#[test]
fn quarantine_tables_do_not_rely_on_zeroed_frames() {
    use lazaret_amd_vi::QuarantineDte;
    let mem = SimMemory::new();
    let mut a = Dirty::new(&mem);
    let vtd = lazaret_vtd::QuarantineTables::build(
        TableMemory::coherent(&mem),
        &mut a,
        lazaret_vtd::Levels::Four,
        &[],
        true,
    )
    .unwrap();
    let amd = lazaret_amd_vi::QuarantineTables::build(
        &mem,
        &mut a,
        lazaret_amd_vi::Levels::FOUR,
        &[],
        true,
    )
    .unwrap();
    let (vs, asc) = (vtd.scratch_page().unwrap(), amd.scratch_page().unwrap());
    assert!(
        all_zero(&mem, vs) && all_zero(&mem, asc),
        "scratch pages zeroed"
    );
    let vroot = vtd.root().unwrap();
    let aroot = amd.translation_root().unwrap().root();
    for iova in IOVAS {
        let leaf = walk(&WalkerConfig::PERMISSIVE, &mem, vroot, 4, iova, true).unwrap();
        assert_eq!(leaf.address(iova), vs, "vtd {iova:#x}");
        assert_eq!(
            walk_tables(&mem, aroot, 4, iova, true),
            Ok(asc),
            "amd {iova:#x}"
        );
    }
    // Basic mode with one page of identity map: everything else faults, junk or not.
    let vb = lazaret_vtd::QuarantineTables::build(
        TableMemory::coherent(&mem),
        &mut a,
        lazaret_vtd::Levels::Four,
        &[(0x5000, 0x5000)],
        false,
    )
    .unwrap();
    let ab = lazaret_amd_vi::QuarantineTables::build(
        &mem,
        &mut a,
        lazaret_amd_vi::Levels::FOUR,
        &[(0x5000, 0x5000, true, true)],
        false,
    )
    .unwrap();
    let (vr, ar) = (vb.root().unwrap(), ab.root().unwrap());
    for iova in IOVAS {
        assert!(walk(&WalkerConfig::PERMISSIVE, &mem, vr, 4, iova, false).is_err());
        assert!(walk_tables(&mem, ar, 4, iova, false).is_err());
    }
    // A one-byte range is its whole page.
    let one = walk(&WalkerConfig::PERMISSIVE, &mem, vr, 4, 0x5abc, true).unwrap();
    assert_eq!(one.address(0x5abc), PhysAddr(0x5abc));
    assert_eq!(walk_tables(&mem, ar, 4, 0x5abc, true), Ok(PhysAddr(0x5abc)));
}

#[test]
fn guest_tables_do_not_rely_on_zeroed_frames_and_map_one_byte_ranges() {
    let mem = SimMemory::new();
    let mut a = Dirty::new(&mem);
    let tm = TableMemory::coherent(&mem);
    let mut vtd = lazaret_vtd::PageTable::new(tm, &mut a, lazaret_vtd::Levels::Four).unwrap();
    let mut amd =
        lazaret_amd_vi::PageTable::new(&mem, &mut a, lazaret_amd_vi::Levels::FOUR).unwrap();
    vtd.identity_map(tm, &mut a, 0x7000, 0x7000, lazaret_vtd::Perms::READ)
        .unwrap();
    amd.identity_map(&mem, &mut a, 0x7000, 0x7000, lazaret_amd_vi::Perms::READ)
        .unwrap();
    let (vr, ar) = (vtd.root(), amd.root());
    let leaf = walk(&WalkerConfig::PERMISSIVE, &mem, vr, 4, 0x7010, false).unwrap();
    assert_eq!(leaf.address(0x7010), PhysAddr(0x7010));
    assert_eq!(
        walk_tables(&mem, ar, 4, 0x7010, false),
        Ok(PhysAddr(0x7010))
    );
    // Neighbours in the same fresh leaf table, and other branches, stay unmapped.
    for iova in [0x6000, 0x8000, 0x20_0000, 0x8000_0000] {
        assert!(walk(&WalkerConfig::PERMISSIVE, &mem, vr, 4, iova, false).is_err());
        assert!(walk_tables(&mem, ar, 4, iova, false).is_err());
    }
    vtd.free(&mem, &mut a);
    amd.free(&mem, &mut a);
    assert_eq!(a.frames_in_use(), 0);
}

/// A failed identity map rolls back only what it mapped: a page that was mapped before
/// (the one it stopped at) keeps its mapping.
#[test]
fn identity_map_rollback_leaves_earlier_mappings_alone() {
    let mem = SimMemory::new();
    let mut a = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 64);
    let tm = TableMemory::coherent(&mem);
    let mut vtd = lazaret_vtd::PageTable::new(tm, &mut a, lazaret_vtd::Levels::Four).unwrap();
    let mut amd =
        lazaret_amd_vi::PageTable::new(&mem, &mut a, lazaret_amd_vi::Levels::FOUR).unwrap();
    let (rw_v, rw_a) = (
        lazaret_vtd::Perms::READ_WRITE,
        lazaret_amd_vi::Perms::READ_WRITE,
    );
    vtd.map(tm, &mut a, 0x9000, PhysAddr(0x4_0000), rw_v)
        .unwrap();
    amd.map(&mem, &mut a, 0x9000, PhysAddr(0x4_0000), rw_a)
        .unwrap();
    assert_eq!(
        vtd.identity_map(tm, &mut a, 0x8000, 0x9fff, rw_v),
        Err(lazaret_vtd::MapError::AlreadyMapped { iova: 0x9000 })
    );
    assert_eq!(
        amd.identity_map(&mem, &mut a, 0x8000, 0x9fff, rw_a),
        Err(lazaret_amd_vi::MapError::AlreadyMapped { iova: 0x9000 })
    );
    let (vr, ar) = (vtd.root(), amd.root());
    let kept = walk(&WalkerConfig::PERMISSIVE, &mem, vr, 4, 0x9008, true).unwrap();
    assert_eq!(kept.address(0x9008), PhysAddr(0x4_0008));
    assert_eq!(
        walk_tables(&mem, ar, 4, 0x9008, true),
        Ok(PhysAddr(0x4_0008))
    );
    assert!(walk(&WalkerConfig::PERMISSIVE, &mem, vr, 4, 0x8000, false).is_err());
    assert!(walk_tables(&mem, ar, 4, 0x8000, false).is_err());
    vtd.free(&mem, &mut a);
    amd.free(&mem, &mut a);
}

/// AMD allows a 1-level table (Mode 1, 2 MiB of IOVA): 4 KiB pages map, 2 MiB pages do not.
#[test]
fn a_one_level_amd_table_maps_4k_pages_only() {
    let mem = SimMemory::new();
    let mut a = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 8);
    let one = lazaret_amd_vi::Levels::new(1).unwrap();
    let mut pt = lazaret_amd_vi::PageTable::new(&mem, &mut a, one).unwrap();
    let r = lazaret_amd_vi::Perms::READ;
    pt.map(&mem, &mut a, 0x1f_f000, PhysAddr(0x3000), r)
        .unwrap();
    assert_eq!(
        walk_tables(&mem, pt.root(), 1, 0x1f_f123, false),
        Ok(PhysAddr(0x3123))
    );
    assert_eq!(a.frames_in_use(), 1, "the root is the leaf table");
    let big = lazaret_amd_vi::PageSize::Size2M;
    assert!(matches!(
        pt.map_sized(&mem, &mut a, 0, PhysAddr(0), r, big),
        Err(lazaret_amd_vi::MapError::BeyondAddressWidth { .. })
    ));
    pt.free(&mem, &mut a);
}

/// Identity ranges grant what they say in both directions: an RMRR is read/write, and
/// overlapping AMD unity ranges add up (a read-only and a write-only range on one page).
#[test]
fn identity_ranges_grant_both_directions_and_overlaps_add_up() {
    use lazaret_amd_vi::QuarantineDte;
    let mem = SimMemory::new();
    let mut a = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 64);
    let vtd = lazaret_vtd::QuarantineTables::build(
        TableMemory::coherent(&mem),
        &mut a,
        lazaret_vtd::Levels::Four,
        &[(0x5000, 0x5fff)],
        true,
    )
    .unwrap();
    let overlapping = [(0x5000, 0x5fff, true, false), (0x5800, 0x5800, false, true)];
    let amd = lazaret_amd_vi::QuarantineTables::build(
        &mem,
        &mut a,
        lazaret_amd_vi::Levels::FOUR,
        &overlapping,
        true,
    )
    .unwrap();
    let (vr, ar) = (vtd.root().unwrap(), amd.translation_root().unwrap().root());
    for write in [false, true] {
        let leaf = walk(&WalkerConfig::PERMISSIVE, &mem, vr, 4, 0x5010, write).unwrap();
        assert_eq!(leaf.address(0x5010), PhysAddr(0x5010), "vtd write={write}");
        assert_eq!(
            walk_tables(&mem, ar, 4, 0x5010, write),
            Ok(PhysAddr(0x5010)),
            "amd write={write}"
        );
    }
}

/// Overlapping AMD unity ranges add up in either order and never grant more than one of them
/// does: write-only then read-only is read/write, read-only twice stays read-only.
#[test]
fn overlapping_unity_ranges_add_exactly_their_rights() {
    use lazaret_amd_vi::QuarantineDte;
    let mem = SimMemory::new();
    let mut a = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 64);
    let ranges = [
        (0x5000, 0x5fff, false, true),
        (0x5000, 0x5000, true, false),
        (0x8000, 0x8fff, true, false),
        (0x8800, 0x8800, true, false),
    ];
    let q = lazaret_amd_vi::QuarantineTables::build(
        &mem,
        &mut a,
        lazaret_amd_vi::Levels::FOUR,
        &ranges,
        false,
    )
    .unwrap();
    let r = q.translation_root().unwrap().root();
    for write in [false, true] {
        assert_eq!(walk_tables(&mem, r, 4, 0x5010, write), Ok(PhysAddr(0x5010)));
    }
    assert_eq!(walk_tables(&mem, r, 4, 0x8010, false), Ok(PhysAddr(0x8010)));
    assert!(
        walk_tables(&mem, r, 4, 0x8010, true).is_err(),
        "read-only twice"
    );
}

/// An AMD entry whose NextLevel skips a level was not built by these tables: map refuses to
/// follow it, and freeing the tree does not descend into it.
#[test]
fn amd_entries_that_skip_levels_are_foreign() {
    let mem = SimMemory::new();
    let mut a = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 64);
    let mut pt =
        lazaret_amd_vi::PageTable::new(&mem, &mut a, lazaret_amd_vi::Levels::FOUR).unwrap();
    let r = lazaret_amd_vi::Perms::READ;
    pt.map(&mem, &mut a, 0, PhysAddr(0x3000), r).unwrap();
    // Root entry 0: NextLevel (bits 11:9, AMD §2.2.3) 3 → 2.
    let e = mem.read_u64(pt.root());
    mem.write_u64(pt.root(), (e & !(7 << 9)) | (2 << 9));
    assert_eq!(
        pt.map(&mem, &mut a, 0x1000, PhysAddr(0x4000), r),
        Err(lazaret_amd_vi::MapError::Foreign {
            iova: 0x1000,
            level: 4
        })
    );
    let before = a.frames_in_use();
    pt.free(&mem, &mut a);
    assert_eq!(
        before - a.frames_in_use(),
        1,
        "only the root: the rest is not followed"
    );
}
