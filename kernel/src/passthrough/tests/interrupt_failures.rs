//! An interrupt entry that cannot be blocked in memory (its compare-exchange finds it changed:
//! a bug, since entries change only under the device lock): the deassign still completes,
//! queues the invalidation, and counts the failure where the figures see it.
use alloc::collections::BTreeMap;
use alloc::vec;
use core::cell::Cell;

use lazaret_types::poll::StepClock;
use lazaret_types::sim::{SimFrameAllocator, SimMemory};
use lazaret_types::{PhysAddr, PhysMem};
use lazaret_vtd::sim_device::SimVtd;

use super::fixture::{cast, new_alloc, unit_config};
use crate::cmdline::QuarantineMode;
use crate::iommu::vtd::VtdIommu;
use crate::passthrough::iommu::InterruptTarget;
use crate::passthrough::registry::DeviceKind;
use crate::passthrough::{self, DeviceLock};

/// The simulator's memory, except that when armed the next 16-byte exchange that would clear
/// a non-zero entry (blocking an IRTE; in scratch mode no context write clears one) fails.
struct Flaky<'m> {
    mem: &'m SimMemory,
    armed: Cell<bool>,
}

impl PhysMem for Flaky<'_> {
    fn read_u64(&self, addr: PhysAddr) -> u64 {
        self.mem.read_u64(addr)
    }
    fn write_u64(&self, addr: PhysAddr, value: u64) {
        self.mem.write_u64(addr, value)
    }
    fn compare_exchange_u128(
        &self,
        addr: PhysAddr,
        current: u128,
        new: u128,
    ) -> Result<u128, u128> {
        if self.armed.get() && new == 0 && current != 0 {
            self.armed.set(false);
            return Err(current ^ 1);
        }
        self.mem.compare_exchange_u128(addr, current, new)
    }
    fn zero(&self, addr: PhysAddr, len: u64) {
        self.mem.zero(addr, len)
    }
    fn read_bytes(&self, addr: PhysAddr, buf: &mut [u8]) {
        self.mem.read_bytes(addr, buf)
    }
    fn write_bytes(&self, addr: PhysAddr, data: &[u8]) {
        self.mem.write_bytes(addr, data)
    }
}

#[test]
fn an_entry_that_cannot_be_blocked_is_counted_and_the_deassign_completes() {
    let sim = SimVtd::new();
    let mut alloc: SimFrameAllocator<'_> = new_alloc(&sim);
    let mem = Flaky {
        mem: &sim.mem,
        armed: Cell::new(false),
    };
    let iommu = VtdIommu::new(
        &mem,
        &lazaret_vtd::Coherent,
        StepClock::default(),
        vec![unit_config(&sim)],
        BTreeMap::new(),
        &mut alloc,
    )
    .unwrap();
    let lock = DeviceLock::new(iommu, QuarantineMode::Scratch);
    let mut g = lock.lock();
    let dev = cast(0);
    passthrough::add_device(
        &mut g,
        &mut alloc,
        dev.sbdf,
        DeviceKind::PcieEndpoint,
        dev.rids.clone(),
        dev.reserved.clone(),
    )
    .unwrap();
    let dom = passthrough::create_domain(&mut g, &mut alloc, "guest", 4).unwrap();
    passthrough::assign(&mut g, &mut alloc, dom, dev.sbdf).unwrap();
    let target = InterruptTarget {
        vector: 0x41,
        apic_id: 0,
    };
    passthrough::program_interrupt(&mut g, dom, dev.sbdf, 0, target).unwrap();
    mem.armed.set(true);
    let back = passthrough::deassign(&mut g, dom, dev.sbdf).unwrap();
    assert!(!mem.armed.get(), "the IRTE block was attempted");
    assert!(back.clean(), "the switch itself completed: {back:?}");
    assert_eq!(back.cost.waits, 1);
    assert_eq!(g.state().stats().interrupt_block_failures, 1);
    assert_eq!(g.state().owner_of(dev.sbdf), Some(g.state().dom_io()));
}
