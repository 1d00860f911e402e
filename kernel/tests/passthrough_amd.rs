//! Ring 1 for the passthrough core on a simulated AMD-Vi unit: the same tests as VT-d, read
//! back by the AMD-Vi reference walker (device table → I/O page tables).
mod common;

use lazaret_kernel::passthrough::DeviceKind;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use common::{device, new_alloc, sbdf, Uncounted, Vendor, RMRR, SAMPLES};
use lazaret_amd_vi::sim_device::SimAmdVi;
use lazaret_amd_vi::{AmdViUnit, DeviceTable};
use lazaret_kernel::cmdline::QuarantineMode;
use lazaret_kernel::iommu::amd::{block_interrupts_before_enable, AmdViIommu, UnitSetup};
use lazaret_kernel::passthrough::iommu::IommuError;
use lazaret_kernel::passthrough::{self, DeviceLock};
use lazaret_types::poll::StepClock;
use lazaret_types::sim::{SimFrameAllocator, SimMemory, SimRegisters};
use lazaret_types::{Bdf, FrameAllocator, PhysAddr, PhysMem};

/// HATS = 10b (6 levels), as QEMU's amd-iommu reports.
const EFR: u64 = 2 << 10;

struct Amd;

struct Sim {
    mem: Rc<SimMemory>,
    /// Moves into the one `AmdViUnit` built from this simulation.
    regs: RefCell<Option<SimRegisters>>,
    unit: SimAmdVi,
}

impl Vendor for Amd {
    type Sim = Sim;
    type Unit<'a> = AmdViIommu<'a, SimMemory, Uncounted<SimRegisters>, StepClock>;

    fn sim() -> Sim {
        let mem = Rc::new(SimMemory::new());
        let regs = SimRegisters::new();
        let unit = SimAmdVi::install(&regs, mem.clone(), EFR);
        Sim {
            mem,
            regs: RefCell::new(Some(regs)),
            unit,
        }
    }

    fn mem(sim: &Sim) -> &SimMemory {
        &sim.mem
    }

    fn iommu<'a>(sim: &'a Self::Sim, alloc: &mut SimFrameAllocator<'a>) -> Self::Unit<'a> {
        let mem = Self::mem(sim);
        let regs = sim
            .regs
            .borrow_mut()
            .take()
            .expect("one IOMMU per simulated unit");
        let hw = AmdViUnit::new(Uncounted(regs), mem, alloc, 1000).expect("unit");
        let table = DeviceTable::new(mem, PhysAddr(0x80_0000), 0xff).expect("device table");
        // As the kernel's bring-up: every DeviceID's interrupts aborted (IV = 1, IntCtl = 00b)
        // before the unit is enabled — an IV = 0 DTE passes MSIs through untranslated.
        block_interrupts_before_enable(&table, mem, 0..=0xff).expect("interrupts blocked");
        hw.set_device_table(&table);
        hw.enable(&StepClock::default()).expect("enable");
        let coverage: BTreeMap<_, _> = (1..=5).map(|i| (sbdf(i), 0)).collect();
        let setup = UnitSetup {
            hw,
            table,
            segment: 0,
            base: PhysAddr(0xfed8_0000),
            interrupt_remapping: true,
        };
        AmdViIommu::new(mem, StepClock::default(), vec![setup], coverage).expect("bring-up")
    }

    fn dma(sim: &Sim, rid: Bdf, iova: u64, write: bool) -> Result<PhysAddr, String> {
        let dma = || sim.unit.dma(rid.requester_id(), iova, write);
        // The unit's event log write on a refused DMA is the hardware's, not counted.
        common::heap_count::uncounted(dma).map_err(|f| f.to_string())
    }

    fn set_seed(sim: &Sim, seed: u64) {
        sim.unit.set_seed(seed);
    }

    fn set_dma_during_invalidation(sim: &Sim, dma: Option<(Bdf, u64, bool)>) {
        let dma = dma.map(|(rid, iova, write)| (rid.requester_id(), iova, write));
        sim.unit.set_dma_during_invalidation(dma);
    }

    fn take_dmas_during_invalidation(sim: &Sim) -> Vec<Result<PhysAddr, String>> {
        let landed = sim.unit.take_dmas_during_invalidation();
        landed
            .into_iter()
            .map(|r| r.map_err(|f| f.to_string()))
            .collect()
    }

    fn msi(sim: &Sim, rid: Bdf, address: u64, data: u32) -> Result<u8, String> {
        sim.unit
            .msi(rid.requester_id(), address, data)
            .map(|i| i.vector)
            .map_err(|f| format!("{f:?}"))
    }

    /// Each DeviceID's DTE names its own interrupt table (§2.2.5): only the device's own IDs.
    fn may_use(rids: &[Bdf], rid: Bdf) -> bool {
        rids.contains(&rid)
    }
}

// VT-d: device context-cache + domain IOTLB descriptors; AMD-Vi: INVALIDATE_DEVTAB_ENTRY, a
// fencing COMPLETION_WAIT, INVALIDATE_IOMMU_PAGES and the polled COMPLETION_WAIT.
// Back to quarantine: one INVALIDATE_INTERRUPT_TABLE per DeviceID of the device.
vendor_tests!(Amd, commands_per_switch: 4, interrupt_commands: 1);

#[test]
fn basic_mode_has_an_empty_root_and_none_mode_blocks() {
    for (mode, pages) in [(QuarantineMode::Basic, 1), (QuarantineMode::None, 0)] {
        let sim = Amd::sim();
        let mut alloc = new_alloc(Amd::mem(&sim));
        let lock = DeviceLock::new(Amd::iommu(&sim, &mut alloc), mode);
        let mut g = lock.lock();
        let (s, rids, rr) = device(1);
        let q = passthrough::add_device(&mut g, &mut alloc, s, DeviceKind::PcieEndpoint, rids, rr)
            .expect("add");
        assert_eq!(q.pages, pages, "{mode}");
        assert!(
            SAMPLES
                .iter()
                .all(|i| g.state().translate(s, *i, true).is_err()),
            "{mode}"
        );
    }
}

#[test]
fn unity_ranges_are_mapped_in_basic_mode_unlike_xen() {
    let sim = Amd::sim();
    let mut alloc = new_alloc(Amd::mem(&sim));
    let lock = DeviceLock::new(Amd::iommu(&sim, &mut alloc), QuarantineMode::Basic);
    let mut g = lock.lock();
    let (s, rids, rr) = device(3);
    passthrough::add_device(&mut g, &mut alloc, s, DeviceKind::PcieEndpoint, rids, rr)
        .expect("add");
    assert_eq!(
        g.state().translate(s, RMRR.start + 0x40, true),
        Ok(PhysAddr(RMRR.start + 0x40))
    );
}

#[test]
fn an_alias_beyond_the_device_table_is_refused_before_any_entry_is_written() {
    let sim = Amd::sim();
    let mem = Amd::mem(&sim);
    let mut alloc = new_alloc(mem);
    let lock = DeviceLock::new(Amd::iommu(&sim, &mut alloc), QuarantineMode::Scratch);
    let mut g = lock.lock();
    // The simulated table holds requester IDs 0x00-0xff; 01:00.0 (0x100) lies beyond it.
    let s = sbdf(1);
    let beyond = lazaret_types::Bdf::new(1, 0, 0).expect("valid");
    // The DTE of the device's own ID as bring-up left it, read from the table's memory.
    let own = PhysAddr(0x80_0000 + u64::from(s.bdf.requester_id()) * 32);
    let before = (mem.read_u128(own), alloc.frames_in_use());
    let r = passthrough::add_device(
        &mut g,
        &mut alloc,
        s,
        DeviceKind::PcieEndpoint,
        vec![s.bdf, beyond],
        vec![],
    );
    assert!(
        matches!(
            r,
            Err(passthrough::PassthroughError::Iommu(
                IommuError::RequesterOutOfRange(b)
            )) if b == beyond
        ),
        "{r:?}"
    );
    assert_eq!(
        (mem.read_u128(own), alloc.frames_in_use()),
        before,
        "nothing changed"
    );
    assert!(g.state().device(s).is_none(), "not registered");
}

/// A switch whose commands the unit refused (ILLEGAL_COMMAND: the unit discards what was
/// queued) leaves what the device may cache of its old DTE; the next flush invalidates
/// everything, so once the guest is destroyed and its memory freed the device's DMA lands in
/// its scratch page, not in the freed frame.
#[test]
fn a_refused_invalidation_does_not_leave_a_destroyed_guests_memory_reachable() {
    let sim = Amd::sim();
    let mut alloc = new_alloc(Amd::mem(&sim));
    let lock = DeviceLock::new(Amd::iommu(&sim, &mut alloc), QuarantineMode::Scratch);
    let mut g = lock.lock();
    let (s, rids, rr) = device(1);
    passthrough::add_device(&mut g, &mut alloc, s, DeviceKind::PcieEndpoint, rids, rr)
        .expect("add");
    let dom = passthrough::create_domain(&mut g, &mut alloc, "g", 4).expect("domain");
    passthrough::assign(&mut g, &mut alloc, dom, s).expect("assign");
    let frame = Amd::dma(&sim, s.bdf, 0, true).expect("the guest's page");
    sim.unit.inject_illegal_command();
    let back = passthrough::deassign(&mut g, dom, s).expect("deassign");
    assert!(!back.clean(), "{back:?}");
    let report = passthrough::destroy_domain(&mut g, &mut alloc, dom).expect("destroy");
    assert!(!report.parked, "the retiring flush completed: {report:?}");
    let landed = Amd::dma(&sim, s.bdf, 0, true);
    assert_ne!(
        landed,
        Ok(frame),
        "the device still reaches the freed guest frame through its cached DTE / IOTLB"
    );
    assert_eq!(
        landed.ok(),
        g.state().scratch_page(s),
        "back in its scratch page"
    );
}
