//! What mapping a 256 MiB guest costs with 4 KiB pages and with 2 MiB pages: PTE writes and
//! table pages in its nested page tables and in each IOMMU's tables, built from one memory
//! map the way `create_domain` and the guest code build them. Every mapping is read back by
//! the drivers' reference walkers; the FIGURE lines are what `scripts/bench` reports.
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use lazaret_amd_vi::sim_device::SimAmdVi;
use lazaret_amd_vi::{AmdViUnit, DeviceTable};
use lazaret_kernel::cmdline::QuarantineMode;
use lazaret_kernel::domain::{build_nested_tables, GuestMemory, MmioMapping, Run};
use lazaret_kernel::iommu::amd::{AmdViIommu, UnitSetup};
use lazaret_kernel::iommu::vtd::{UnitConfig, VtdIommu};
use lazaret_kernel::passthrough::iommu::{Inspect, PageSize, Vendor};
use lazaret_kernel::passthrough::{self, DeviceKind, DeviceLock};
use lazaret_types::poll::StepClock;
use lazaret_types::sim::{SimFrameAllocator, SimMemory, SimRegisters};
use lazaret_types::{Bdf, FrameAllocator, PhysAddr, PhysMem, Sbdf, PAGE_SIZE};
use lazaret_vtd::sim_device::{SimRef, SimVtd, DEFAULT_CAP, DEFAULT_ECAP};

const GUEST_PAGES: u64 = 256 << 8; // 256 MiB
/// CAP.SLLPS bit 0 (§10.4.2): 2 MiB second-level pages.
const SLLPS_2M: u64 = 1 << 34;
const AMD_EFR: u64 = 2 << 10;
/// Where every simulated allocator's frames come from.
const WINDOW: PhysAddr = PhysAddr(0x100_0000);
const WINDOW_FRAMES: u64 = 4096;
const BAR: MmioMapping = MmioMapping {
    gpa: 0xC000_0000,
    hpa: PhysAddr(0xFE00_0000),
    len: 0x100_0000,
};

/// The device the end-to-end test assigns: 00:01.0.
const DEVICE: Sbdf = Sbdf {
    segment: 0,
    bdf: Bdf::from_requester_id(0x08),
};

/// Simulated RAM that records the address of every 8-byte write.
struct Counting {
    mem: Rc<SimMemory>,
    writes: RefCell<Vec<u64>>,
}

impl PhysMem for Counting {
    fn read_u64(&self, a: PhysAddr) -> u64 {
        self.mem.read_u64(a)
    }
    fn write_u64(&self, a: PhysAddr, v: u64) {
        self.writes.borrow_mut().push(a.0);
        self.mem.write_u64(a, v)
    }
    fn compare_exchange_u128(&self, a: PhysAddr, c: u128, n: u128) -> Result<u128, u128> {
        self.mem.compare_exchange_u128(a, c, n)
    }
    fn zero(&self, a: PhysAddr, len: u64) {
        self.mem.zero(a, len)
    }
    fn read_bytes(&self, a: PhysAddr, buf: &mut [u8]) {
        self.mem.read_bytes(a, buf)
    }
    fn write_bytes(&self, a: PhysAddr, data: &[u8]) {
        self.mem.write_bytes(a, data)
    }
}

/// 256 MiB in one run at `hpa`: 2 MiB aligned gives 2 MiB pages, 4 KiB off gives none.
fn guest_at(hpa: u64) -> GuestMemory {
    GuestMemory::from_runs(vec![Run {
        gpa: 0,
        hpa: PhysAddr(hpa),
        pages: GUEST_PAGES,
    }])
    .unwrap()
}

#[derive(Debug, PartialEq, Eq)]
struct Cost {
    pte_writes: u64,
    table_pages: u64,
}

fn figure(name: &str, value: u64, unit: &str) {
    println!("FIGURE {name} {value} {unit}");
}

/// Maps `memory` into fresh tables of `vendor` as `create_domain` does; counts the writes
/// that land in table pages (not the invalidation queue) and the pages the tables took.
fn iommu_cost<V: Vendor>(
    vendor: &mut V,
    mem: &Counting,
    alloc: &mut SimFrameAllocator<'_>,
    memory: &GuestMemory,
) -> (V::Tables, Cost) {
    // Pages already in use (queues, device table) are not the guest's tables.
    let window = (0..WINDOW_FRAMES).map(|i| WINDOW.0 + i * PAGE_SIZE);
    let before: BTreeSet<u64> = window
        .filter(|p| alloc.is_allocated(PhysAddr(*p)))
        .collect();
    mem.writes.borrow_mut().clear();
    let in_use = alloc.frames_in_use();
    let mut tables = vendor.create_tables(alloc).unwrap();
    for (gpa, hpa, size) in memory.iommu_pages() {
        vendor
            .map_sized(&mut tables, alloc, &[1], gpa, hpa, size, true)
            .unwrap();
    }
    let pages: BTreeSet<u64> = mem
        .writes
        .borrow()
        .iter()
        .map(|a| a & !(PAGE_SIZE - 1))
        .filter(|p| alloc.is_allocated(PhysAddr(*p)) && !before.contains(p))
        .collect();
    let table_pages = (alloc.frames_in_use() - in_use) as u64;
    let pte_writes = mem
        .writes
        .borrow()
        .iter()
        .filter(|a| pages.contains(&(*a & !(PAGE_SIZE - 1))))
        .count() as u64;
    (
        tables,
        Cost {
            pte_writes,
            table_pages,
        },
    )
}

type Vtd<'a> = VtdIommu<'a, Counting, SimRef<'a>, StepClock>;
type Amd<'a> = AmdViIommu<'a, Counting, SimRegisters, StepClock>;

fn counting(mem: &Rc<SimMemory>) -> Counting {
    Counting {
        mem: mem.clone(),
        writes: RefCell::new(Vec::new()),
    }
}

fn vtd_iommu<'a>(sim: &'a SimVtd, mem: &'a Counting, alloc: &mut SimFrameAllocator<'a>) -> Vtd<'a> {
    let unit = UnitConfig {
        regs: sim.mmio(),
        segment: 0,
        register_base: PhysAddr(0xfed9_0000),
        window_bytes: 0x1000,
        include_all: true,
    };
    let clock = StepClock::default();
    let coherent = &lazaret_vtd::Coherent;
    VtdIommu::new(mem, coherent, clock, vec![unit], BTreeMap::new(), alloc).unwrap()
}

/// The simulated unit lives on in the write hook `install` puts on the registers.
fn amd_iommu<'a>(mem: &'a Counting, alloc: &mut SimFrameAllocator<'a>) -> Amd<'a> {
    let regs = SimRegisters::new();
    let _unit = SimAmdVi::install(&regs, mem.mem.clone(), AMD_EFR);
    let raw: &SimMemory = &mem.mem;
    let hw = AmdViUnit::new(regs, raw, alloc, 1000).unwrap();
    let table = DeviceTable::new(raw, PhysAddr(0x80_0000), 0xff).unwrap();
    hw.set_device_table(&table);
    hw.enable(&StepClock::default()).unwrap();
    let setup = UnitSetup {
        hw,
        table,
        segment: 0,
        base: PhysAddr(0xfed8_0000),
        interrupt_remapping: true,
    };
    let coverage = [(DEVICE, 0)].into_iter().collect();
    AmdViIommu::new(mem, StepClock::default(), vec![setup], coverage).unwrap()
}

fn vtd(cap: u64, memory: &GuestMemory, check: impl Fn(&SimMemory, PhysAddr)) -> Cost {
    let sim = SimVtd::with_caps(cap, DEFAULT_ECAP);
    let mem = counting(&sim.mem);
    let mut alloc = SimFrameAllocator::new(&sim.mem, WINDOW, WINDOW_FRAMES);
    let mut iommu = vtd_iommu(&sim, &mem, &mut alloc);
    let (tables, cost) = iommu_cost(&mut iommu, &mem, &mut alloc, memory);
    check(&sim.mem, tables.root());
    cost
}

fn amd(memory: &GuestMemory, check: impl Fn(&SimMemory, PhysAddr)) -> Cost {
    let raw = Rc::new(SimMemory::new());
    let mem = counting(&raw);
    let mut alloc = SimFrameAllocator::new(&raw, WINDOW, WINDOW_FRAMES);
    let mut iommu = amd_iommu(&mem, &mut alloc);
    let (tables, cost) = iommu_cost(&mut iommu, &mem, &mut alloc, memory);
    check(&raw, tables.root());
    cost
}

/// Samples of guest-physical addresses across the guest, its last byte included.
fn samples() -> impl Iterator<Item = u64> {
    (0..GUEST_PAGES)
        .step_by(397)
        .map(|p| p * PAGE_SIZE + 0x18)
        .chain([GUEST_PAGES * PAGE_SIZE - 8])
}

fn vtd_check(memory: &GuestMemory) -> impl Fn(&SimMemory, PhysAddr) + '_ {
    move |mem, root| {
        for gpa in samples() {
            let cfg = lazaret_vtd::WalkerConfig::PERMISSIVE;
            let leaf = lazaret_vtd::walker::walk(&cfg, mem, root, 4, gpa, true).unwrap();
            assert_eq!(
                Some(leaf.address(gpa)),
                memory.host_address(gpa),
                "{gpa:#x}"
            );
        }
        let beyond = GUEST_PAGES * PAGE_SIZE;
        let cfg = lazaret_vtd::WalkerConfig::PERMISSIVE;
        assert!(lazaret_vtd::walker::walk(&cfg, mem, root, 4, beyond, false).is_err());
    }
}

fn amd_check(memory: &GuestMemory) -> impl Fn(&SimMemory, PhysAddr) + '_ {
    move |mem, root| {
        for gpa in samples() {
            let pa = lazaret_amd_vi::walker::walk_tables(mem, root, 4, gpa, true).unwrap();
            assert_eq!(Some(pa), memory.host_address(gpa), "{gpa:#x}");
        }
        let beyond = GUEST_PAGES * PAGE_SIZE;
        assert!(lazaret_amd_vi::walker::walk_tables(mem, root, 4, beyond, false).is_err());
    }
}

fn nested(memory: &GuestMemory) -> Cost {
    let mem = SimMemory::new();
    let mut alloc = SimFrameAllocator::new(&mem, WINDOW, WINDOW_FRAMES);
    let t = build_nested_tables(&mem, &mut alloc, memory, &[BAR], true).unwrap();
    let c = t.counts();
    assert_eq!(c.table_pages, alloc.frames_in_use() as u64);
    Cost {
        pte_writes: c.pte_writes,
        table_pages: c.table_pages,
    }
}

#[test]
fn mapping_a_256_mib_guest_with_4k_and_2m_pages() {
    let aligned = guest_at(0x4000_0000);
    let ragged = guest_at(0x4000_1000);
    // 4-level tables: 1 root + 1 level-3 + 1 level-2 table; 128 PDEs; or 128 leaf tables
    // of 512 PTEs each under the 128 PDEs.
    let small = Cost {
        pte_writes: 2 + 128 + GUEST_PAGES,
        table_pages: 3 + 128,
    };
    let large = Cost {
        pte_writes: 2 + 128,
        table_pages: 3,
    };
    let cases = [
        (
            "vtd",
            "4k",
            vtd(DEFAULT_CAP | SLLPS_2M, &ragged, vtd_check(&ragged)),
            &small,
        ),
        (
            "vtd",
            "2m",
            vtd(DEFAULT_CAP | SLLPS_2M, &aligned, vtd_check(&aligned)),
            &large,
        ),
        (
            "vtd-no-sllps",
            "2m",
            vtd(DEFAULT_CAP, &aligned, vtd_check(&aligned)),
            &small,
        ),
        ("amd-vi", "4k", amd(&ragged, amd_check(&ragged)), &small),
        ("amd-vi", "2m", amd(&aligned, amd_check(&aligned)), &large),
    ];
    for (what, size, cost, want) in &cases {
        assert_eq!(cost, *want, "{what} {size}");
        if *what != "vtd-no-sllps" {
            figure(
                &format!("guest-256m-{what}-{size}-pte-writes"),
                cost.pte_writes,
                "writes",
            );
            figure(
                &format!("guest-256m-{what}-{size}-table-pages"),
                cost.table_pages,
                "pages",
            );
        }
    }
    // Nested tables also map a 16 MiB BAR (2 MiB aligned: 8 leaves in a second PD).
    let npt = [("4k", nested(&ragged)), ("2m", nested(&aligned))];
    assert_eq!(
        npt[1].1,
        Cost {
            pte_writes: 2 + 128 + 1 + 8,
            table_pages: 4
        }
    );
    assert_eq!(npt[0].1.table_pages, 4 + 128);
    for (size, cost) in &npt {
        figure(
            &format!("guest-256m-npt-{size}-pte-writes"),
            cost.pte_writes,
            "writes",
        );
        figure(
            &format!("guest-256m-npt-{size}-table-pages"),
            cost.table_pages,
            "pages",
        );
    }
}

/// A simulated allocator with 2 MiB blocks as well, from a second, 2 MiB aligned window.
struct Blocks<'m> {
    small: SimFrameAllocator<'m>,
    large: SimFrameAllocator<'m>,
}

const BLOCKS: PhysAddr = PhysAddr(0x4000_0000);

impl<'m> Blocks<'m> {
    fn new(mem: &'m SimMemory, small: SimFrameAllocator<'m>) -> Blocks<'m> {
        let large = SimFrameAllocator::new(mem, BLOCKS, 4 * 512);
        Blocks { small, large }
    }
}

impl FrameAllocator for Blocks<'_> {
    fn alloc_frame(&mut self) -> Option<PhysAddr> {
        self.small.alloc_frame()
    }
    fn free_frame(&mut self, frame: PhysAddr) {
        if frame >= BLOCKS {
            self.large.free_frame(frame)
        } else {
            self.small.free_frame(frame)
        }
    }
    fn frames_in_use(&self) -> usize {
        self.small.frames_in_use() + self.large.frames_in_use()
    }
    /// Whole blocks only, one after another (freed frames come back last-freed first, so a
    /// block is taken only from a window with nothing freed in it).
    fn alloc_contiguous(&mut self, pages: usize) -> Option<PhysAddr> {
        assert_eq!(pages, 512);
        let first = self.large.alloc_frame()?;
        for i in 1..512 {
            let f = self.large.alloc_frame()?;
            assert_eq!(f.0, first.0 + i * PAGE_SIZE);
        }
        assert_eq!(first.0 % (2 << 20), 0);
        Some(first)
    }
}

/// Through the core: a guest created from consecutive frames gets 2 MiB IOMMU pages where its
/// run allows; its device's DMA to every page lands in its memory and nowhere past it;
/// destroy gives every frame back.
fn create_assign_destroy<V: Inspect>(iommu: V, alloc: &mut dyn FrameAllocator) {
    let lock = DeviceLock::new(iommu, QuarantineMode::Scratch);
    let mut g = lock.lock();
    let rids = vec![DEVICE.bdf];
    passthrough::add_device(
        &mut g,
        alloc,
        DEVICE,
        DeviceKind::PcieEndpoint,
        rids,
        vec![],
    )
    .unwrap();
    let in_use = alloc.frames_in_use();
    // 2 MiB blocks, then 4 KiB frames (the run after the blocks is not 2 MiB aligned).
    let dom = passthrough::create_domain(&mut g, alloc, "big", 1026).unwrap();
    // Tables: root, level 3, level 2 (two 2 MiB leaves) and one leaf table for the last 8 KiB.
    assert_eq!(alloc.frames_in_use() - in_use - 1026, 4);
    passthrough::assign(&mut g, alloc, dom, DEVICE).unwrap();
    let memory = &g.state().domains().get(dom).unwrap().memory;
    let large = memory
        .iommu_pages()
        .filter(|p| p.2 == PageSize::Size2M)
        .count();
    assert_eq!(large, 2, "{:x?}", memory.runs());
    for gpa in (0..memory.size())
        .step_by(PAGE_SIZE as usize)
        .map(|p| p + 0x28)
    {
        let want = memory.host_address(gpa).unwrap();
        assert_eq!(g.state().translate(DEVICE, gpa, true), Ok(want), "{gpa:#x}");
    }
    let past = g.state().translate(DEVICE, memory.size(), false);
    assert!(past.is_err() || past == g.state().scratch_page(DEVICE).ok_or(String::new()));
    passthrough::destroy_domain(&mut g, alloc, dom).unwrap();
    assert_eq!(alloc.frames_in_use(), in_use);
}

#[test]
fn create_domain_maps_its_runs_with_2m_iommu_pages_on_both_vendors() {
    let sim = SimVtd::with_caps(DEFAULT_CAP | SLLPS_2M, DEFAULT_ECAP);
    let mem = counting(&sim.mem);
    let mut alloc = SimFrameAllocator::new(&sim.mem, WINDOW, WINDOW_FRAMES);
    let iommu = vtd_iommu(&sim, &mem, &mut alloc);
    create_assign_destroy(iommu, &mut Blocks::new(&sim.mem, alloc));

    let raw = Rc::new(SimMemory::new());
    let mem = counting(&raw);
    let mut alloc = SimFrameAllocator::new(&raw, WINDOW, WINDOW_FRAMES);
    let iommu = amd_iommu(&mem, &mut alloc);
    create_assign_destroy(iommu, &mut Blocks::new(&raw, alloc));
}

/// A 2 MiB map and unmap through the seam: every 4 KiB of it reachable, then none, whether
/// the unit holds one large leaf or (VT-d without SLLPS) 512 small ones; a 4 KiB unmap inside
/// a large leaf is refused and changes nothing.
fn map_unmap_2m<V: Vendor>(
    v: &mut V,
    alloc: &mut SimFrameAllocator<'_>,
    reach: impl Fn(&V::Tables, u64) -> Option<PhysAddr>,
    large_leaf: bool,
) {
    let (iova, pa) = (0x4060_0000, PhysAddr(0x8_0000_0000));
    let mut t = v.create_tables(alloc).unwrap();
    v.map_sized(&mut t, alloc, &[1], iova, pa, PageSize::Size2M, true)
        .unwrap();
    let offsets = [0u64, 0x1000, 0x1f_f000];
    for o in offsets {
        assert_eq!(reach(&t, iova + o), Some(PhysAddr(pa.0 + o)));
    }
    if large_leaf {
        assert!(v.unmap(&mut t, &[1], iova + 0x1000).is_err());
        assert_eq!(reach(&t, iova + 0x1000), Some(PhysAddr(pa.0 + 0x1000)));
    }
    assert_eq!(
        v.unmap_sized(&mut t, &[1], iova, PageSize::Size2M),
        Ok(Some(pa))
    );
    for o in offsets {
        assert_eq!(reach(&t, iova + o), None, "{o:#x}");
    }
    assert_eq!(
        v.unmap_sized(&mut t, &[1], iova, PageSize::Size2M),
        Ok(None)
    );
    v.free_tables(alloc, t);
}

#[test]
fn a_2m_unmap_through_the_seam_removes_every_4k_of_it() {
    for cap in [DEFAULT_CAP | SLLPS_2M, DEFAULT_CAP] {
        let sim = SimVtd::with_caps(cap, DEFAULT_ECAP);
        let mem = counting(&sim.mem);
        let mut alloc = SimFrameAllocator::new(&sim.mem, WINDOW, WINDOW_FRAMES);
        let mut iommu = vtd_iommu(&sim, &mem, &mut alloc);
        let cfg = lazaret_vtd::WalkerConfig::PERMISSIVE;
        let reach = |t: &lazaret_vtd::PageTable, iova: u64| {
            let leaf = lazaret_vtd::walker::walk(&cfg, &*sim.mem, t.root(), 4, iova, true);
            leaf.ok().map(|l| l.address(iova))
        };
        map_unmap_2m(&mut iommu, &mut alloc, reach, cap & SLLPS_2M != 0);
    }
    let raw = Rc::new(SimMemory::new());
    let mem = counting(&raw);
    let mut alloc = SimFrameAllocator::new(&raw, WINDOW, WINDOW_FRAMES);
    let mut iommu = amd_iommu(&mem, &mut alloc);
    let reach = |t: &lazaret_amd_vi::PageTable, iova: u64| {
        lazaret_amd_vi::walker::walk_tables(&*raw, t.root(), 4, iova, true).ok()
    };
    map_unmap_2m(&mut iommu, &mut alloc, reach, true);
}
