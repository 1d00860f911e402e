//! Ring 1 (design.md §5) for the passthrough core on a simulated VT-d unit: every table the
//! core builds is read back by the reference walker exactly as hardware would walk it.
mod common;

use std::collections::BTreeMap;

use common::{device, new_alloc, Vendor, SAMPLES};
use lazaret_kernel::cmdline::QuarantineMode;
use lazaret_kernel::iommu::vtd::{UnitConfig, VtdIommu};
use lazaret_kernel::passthrough::iommu::Iommu;
use lazaret_kernel::passthrough::{self, DeviceLock, State};
use lazaret_types::poll::StepClock;
use lazaret_types::sim::{SimFrameAllocator, SimMemory};
use lazaret_types::PhysAddr;
use lazaret_vtd::sim_device::{SimRef, SimVtd};
use lazaret_vtd::Coherent;

struct Vtd;

impl Vendor for Vtd {
    type Sim = SimVtd;
    type Unit<'a> = VtdIommu<'a, SimMemory, SimRef<'a>, StepClock>;

    fn sim() -> SimVtd {
        SimVtd::new()
    }

    fn mem(sim: &SimVtd) -> &SimMemory {
        &sim.mem
    }

    fn iommu<'a>(sim: &'a SimVtd, alloc: &mut SimFrameAllocator<'a>) -> Self::Unit<'a> {
        let unit = UnitConfig {
            regs: sim.mmio(),
            segment: 0,
            register_base: PhysAddr(0xfed9_0000),
            include_all: true,
        };
        VtdIommu::new(
            &*sim.mem,
            &Coherent,
            StepClock::default(),
            vec![unit],
            BTreeMap::new(),
            alloc,
        )
        .expect("bring-up")
    }
}

// VT-d: device context-cache + domain IOTLB descriptors; AMD-Vi: INVALIDATE_DEVTAB_ENTRY +
// INVALIDATE_IOMMU_PAGES + COMPLETION_WAIT.
vendor_tests!(Vtd, commands_per_switch: 2);

#[test]
fn basic_and_none_modes_translate_nothing_without_reserved_ranges() {
    for mode in [QuarantineMode::Basic, QuarantineMode::None] {
        let sim = Vtd::sim();
        let mut alloc = new_alloc(&sim.mem);
        let lock = DeviceLock::new(State::new(Vtd::iommu(&sim, &mut alloc), mode));
        let mut g = lock.lock();
        let (s, rids, rr) = device(1);
        let q = passthrough::add_device(&mut g, &mut alloc, s, rids, rr).expect("add");
        assert_eq!(q.pages, 0, "VT-d basic without RMRR: no context at all");
        assert!(
            SAMPLES
                .iter()
                .all(|i| g.state().iommu.translate(s, *i, false).is_err()),
            "{mode}"
        );
    }
}

#[test]
fn faults_are_attributed_counted_and_end_in_bus_master_disable() {
    let sim = Vtd::sim();
    let mut alloc = new_alloc(&sim.mem);
    let lock = DeviceLock::new(State::new(
        Vtd::iommu(&sim, &mut alloc),
        QuarantineMode::Basic,
    ));
    let mut g = lock.lock();
    let (s, rids, rr) = device(2);
    passthrough::add_device(&mut g, &mut alloc, s, rids, rr).expect("add");
    let mut disabled = Vec::new();
    let threshold = passthrough::faults::THRESHOLD as usize;
    for n in 0..threshold + 4 {
        // F (127), T = 0 (write), reason 2 (context not present), source 00:02.0.
        let hi = (1u64 << 63) | (2u64 << 32) | u64::from(s.bdf.requester_id());
        sim.post_fault(0, (0x4000 + 0x1000 * n as u64, hi));
        let report = passthrough::drain_faults(&mut g, 1000 + n as u64, &mut |d| {
            disabled.push(d);
            true
        });
        assert_eq!(report.faults, 1);
        let f = &report.recorded[0];
        assert_eq!(
            (f.requester, f.write, f.address),
            (s.bdf, true, 0x4000 + 0x1000 * n as u64)
        );
    }
    assert_eq!(
        disabled,
        vec![s],
        "bus mastering is cleared exactly once, past the threshold"
    );
    assert_eq!(g.state().devices[&s].faults.total, threshold as u64 + 4);
}
