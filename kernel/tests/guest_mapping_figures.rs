//! What mapping a 256 MiB guest costs with 4 KiB pages and with 2 MiB pages: PTE writes and
//! table pages in its nested page tables and in each IOMMU's tables, built from one memory
//! map the way `create_domain` and the guest code build them. Every mapping is read back by
//! the drivers' reference walkers; the FIGURE lines are what `scripts/bench` reports.
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use lazaret_amd_vi::sim_device::SimAmdVi;
use lazaret_amd_vi::{AmdViUnit, DeviceTable};
use lazaret_kernel::domain::{build_nested_tables, GuestMemory, MmioMapping, Run};
use lazaret_kernel::iommu::amd::{AmdViIommu, UnitSetup};
use lazaret_kernel::iommu::vtd::{UnitConfig, VtdIommu};
use lazaret_kernel::passthrough::iommu::Vendor;
use lazaret_types::poll::StepClock;
use lazaret_types::sim::{SimFrameAllocator, SimMemory, SimRegisters};
use lazaret_types::{FrameAllocator, PhysAddr, PhysMem, PAGE_SIZE};
use lazaret_vtd::sim_device::{SimVtd, DEFAULT_CAP, DEFAULT_ECAP};

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

fn vtd(cap: u64, memory: &GuestMemory, check: impl Fn(&SimMemory, PhysAddr)) -> Cost {
    let sim = SimVtd::with_caps(cap, DEFAULT_ECAP);
    let mem = Counting {
        mem: sim.mem.clone(),
        writes: RefCell::new(Vec::new()),
    };
    let mut alloc = SimFrameAllocator::new(&sim.mem, WINDOW, WINDOW_FRAMES);
    let unit = UnitConfig {
        regs: sim.mmio(),
        segment: 0,
        register_base: PhysAddr(0xfed9_0000),
        window_bytes: 0x1000,
        include_all: true,
    };
    let clock = StepClock::default();
    let coherent = lazaret_vtd::Coherent;
    let mut iommu = VtdIommu::new(
        &mem,
        &coherent,
        clock,
        vec![unit],
        BTreeMap::new(),
        &mut alloc,
    )
    .unwrap();
    let (tables, cost) = iommu_cost(&mut iommu, &mem, &mut alloc, memory);
    check(&sim.mem, tables.root());
    cost
}

fn amd(memory: &GuestMemory, check: impl Fn(&SimMemory, PhysAddr)) -> Cost {
    let raw = Rc::new(SimMemory::new());
    let regs = SimRegisters::new();
    let _unit = SimAmdVi::install(&regs, raw.clone(), AMD_EFR);
    let mem = Counting {
        mem: raw.clone(),
        writes: RefCell::new(Vec::new()),
    };
    let mut alloc = SimFrameAllocator::new(&raw, WINDOW, WINDOW_FRAMES);
    let hw = AmdViUnit::new(regs, &*raw, &mut alloc, 1000).unwrap();
    let table = DeviceTable::new(&*raw, PhysAddr(0x80_0000), 0xff).unwrap();
    hw.set_device_table(&table);
    hw.enable(&StepClock::default()).unwrap();
    let setup = UnitSetup {
        hw,
        table,
        segment: 0,
        base: PhysAddr(0xfed8_0000),
    };
    let mut iommu =
        AmdViIommu::new(&mem, StepClock::default(), vec![setup], BTreeMap::new()).unwrap();
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
