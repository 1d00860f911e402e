//! Issue 8 §5 (VT-d): one test per hole, each against the caching simulator.
use super::*;
use crate::context::{ContextEntry, RootTable};
use crate::levels::Levels;
use crate::pagetable::{PageTable, Perms};
use crate::poll::StepClock;
use crate::regs::{fsts, FSTS, IQA};
use crate::sim_device::{QueueFault, SimVtd, DEFAULT_CAP, DEFAULT_ECAP, FRO_OFFSET, NFR};
use crate::table_memory::TableMemory;
use lazaret_types::sim::SimFrameAllocator;

const TIMEOUT: u64 = 1000;
const DEV: Bdf = Bdf::from_requester_id(0x0318);

fn switch_batch(cap: Capabilities, did: u16) -> SwitchBatch {
    let mut b = SwitchBatch::new();
    let old = ContextEntry::translated(PhysAddr(0x5000), Levels::Four, did);
    b.entry_changed(cap, DEV, old, ContextEntry::NOT_PRESENT);
    b
}

#[test]
fn queue_errors_are_reported_cleared_and_the_queue_recovers() {
    for (fault, bit) in [
        (QueueFault::InvalidDescriptor, fsts::IQE),
        (QueueFault::CompletionError, fsts::ICE),
        (QueueFault::TimeOut, fsts::ITE),
    ] {
        let sim = SimVtd::new();
        let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 16);
        let clock = StepClock::default();
        let mut unit = VtdUnit::new(sim.mmio(), TIMEOUT);
        unit.enable_queued_invalidation(&mut alloc, &clock).unwrap();
        let batch = switch_batch(unit.capabilities(), 3);
        sim.inject_queue_fault(fault);
        let err = unit.flush(&*sim.mem, &batch, &clock).unwrap_err();
        assert_eq!(
            err,
            UnitError::Invalidation(InvalidationError::QueueError { fsts: bit }),
            "{fault:?}"
        );
        assert!(err.to_string().contains("not confirmed"), "{err}");
        assert_eq!(sim.regs.get(FSTS) as u32 & bit, 0, "{fault:?} cleared");
        // The queue works again: the next flush completes within its bound.
        unit.flush(&*sim.mem, &batch, &clock)
            .unwrap_or_else(|e| panic!("{fault:?}: queue did not recover: {e}"));
        assert!(
            clock.0.get() < 4 * TIMEOUT,
            "{fault:?}: no wait ran to its bound"
        );
        // A one-segment batch: here ITE aborts the very wait the driver polls.
        sim.inject_queue_fault(fault);
        let err = unit
            .after_unmap(&*sim.mem, 3, 0x4000, 0, &clock)
            .unwrap_err();
        assert_eq!(
            err,
            UnitError::Invalidation(InvalidationError::QueueError { fsts: bit }),
            "{fault:?}, one segment"
        );
        unit.after_unmap(&*sim.mem, 3, 0x4000, 0, &clock).unwrap();
        assert!(
            clock.0.get() < 8 * TIMEOUT,
            "{fault:?}: no wait ran to its bound"
        );
    }
}

#[test]
fn iqa_is_never_written_while_queued_invalidation_is_on() {
    let sim = SimVtd::new();
    // Firmware left queued invalidation enabled on its own queue.
    sim.regs.set(GSTS, u64::from(global::QIE));
    sim.regs.set(IQA, 0x0bad_0000);
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 16);
    let clock = StepClock::default();
    let mut unit = VtdUnit::new(sim.mmio(), TIMEOUT);
    unit.enable_queued_invalidation(&mut alloc, &clock).unwrap();
    assert_eq!(sim.iqa_writes_while_enabled(), 0);
    assert_eq!(
        sim.regs.get(IQA) & !0xfff,
        0x100_0000,
        "our queue is programmed"
    );
    let batch = switch_batch(unit.capabilities(), 3);
    unit.flush(&*sim.mem, &batch, &clock).unwrap();
}

#[test]
fn register_page_invalidation_at_iova_0_writes_iva() {
    let sim = SimVtd::with_caps(DEFAULT_CAP, DEFAULT_ECAP & !2);
    let mem = &*sim.mem;
    let tm = TableMemory::coherent(mem);
    let mut alloc = SimFrameAllocator::new(mem, PhysAddr(0x100_0000), 64);
    let clock = StepClock::default();
    let mut unit = VtdUnit::new(sim.mmio(), TIMEOUT);
    let mut rt = RootTable::new(tm, &mut alloc).unwrap();
    rt.ensure_bus(tm, &mut alloc, DEV.bus()).unwrap();
    unit.set_root_table(rt.address(), &clock).unwrap();
    unit.invalidate_all(mem, &clock).unwrap();
    unit.enable_translation(&clock).unwrap();
    let mut pt = PageTable::new(tm, &mut alloc, Levels::Four).unwrap();
    pt.map(tm, &mut alloc, 0, PhysAddr(0x7000_0000), Perms::READ_WRITE)
        .unwrap();
    pt.map(
        tm,
        &mut alloc,
        0x5000,
        PhysAddr(0x7100_0000),
        Perms::READ_WRITE,
    )
    .unwrap();
    let ctx = ContextEntry::translated(pt.root(), Levels::Four, 4);
    rt.switch_context(tm, DEV, ContextEntry::NOT_PRESENT, ctx)
        .unwrap();
    assert_eq!(sim.dma(DEV, 0, true), Ok(PhysAddr(0x7000_0000)));
    // Some earlier page invalidation leaves IVA = 0x5000.
    unit.after_unmap(mem, 4, 0x5000, 0, &clock).unwrap();
    // Now IOVA 0 is unmapped: its invalidation must name IOVA 0, not reuse 0x5000.
    pt.unmap(tm, 0).unwrap();
    unit.after_unmap(mem, 4, 0, 0, &clock).unwrap();
    assert!(
        sim.dma(DEV, 0, true).is_err(),
        "stale IOTLB entry for IOVA 0"
    );
}

#[test]
fn iotlb_invalidations_drain_when_the_unit_offers_it() {
    let drains = DEFAULT_CAP | (1 << 54) | (1 << 55);
    let sim = SimVtd::with_caps(drains, DEFAULT_ECAP);
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 16);
    let clock = StepClock::default();
    let mut unit = VtdUnit::new(sim.mmio(), TIMEOUT);
    unit.enable_queued_invalidation(&mut alloc, &clock).unwrap();
    unit.flush(&*sim.mem, &switch_batch(unit.capabilities(), 3), &clock)
        .unwrap();
    unit.after_owner_switch(&*sim.mem, DEV, 3, &clock).unwrap();
    unit.after_unmap(&*sim.mem, 3, 0x4000, 0, &clock).unwrap();
    unit.invalidate_all(&*sim.mem, &clock).unwrap();
    let iotlb: Vec<u128> = sim
        .consumed
        .borrow()
        .iter()
        .copied()
        .filter(|d| d & 0xf == 2)
        .collect();
    assert_eq!(iotlb.len(), 4);
    for d in iotlb {
        assert_eq!(d & 0xc0, 0xc0, "DR and DW set in {d:#x}");
    }
    // Without DRD / DWD the bits stay clear (they are reserved then).
    let plain = SimVtd::new();
    let mut alloc = SimFrameAllocator::new(&plain.mem, PhysAddr(0x100_0000), 16);
    let mut unit = VtdUnit::new(plain.mmio(), TIMEOUT);
    unit.enable_queued_invalidation(&mut alloc, &clock).unwrap();
    unit.flush(&*plain.mem, &switch_batch(unit.capabilities(), 3), &clock)
        .unwrap();
    assert!(plain
        .consumed
        .borrow()
        .iter()
        .all(|d| d & 0xf != 2 || d & 0xc0 == 0));
}

#[test]
fn a_register_window_too_small_for_cap_and_ecap_is_refused() {
    let sim = SimVtd::new();
    let need = (FRO_OFFSET + NFR * 16) as u64;
    assert_eq!(
        required_register_bytes(sim.cap(), ExtCapabilities(DEFAULT_ECAP)),
        need
    );
    assert!(VtdUnit::checked(sim.mmio(), 0x1000, TIMEOUT).is_ok());
    assert!(VtdUnit::checked(sim.mmio(), need, TIMEOUT).is_ok());
    let err = VtdUnit::checked(sim.mmio(), need - 1, TIMEOUT).err();
    assert_eq!(
        err,
        Some(UnitError::RegisterWindowTooSmall {
            window_bytes: need - 1,
            required: need
        })
    );
    // IOTLB registers beyond the fault records decide it too (IRO = 0x400 → 0x410).
    let far_iotlb = (DEFAULT_ECAP & !(0x3ff << 8)) | ((0x400 / 16) << 8);
    let sim = SimVtd::with_caps(DEFAULT_CAP, far_iotlb);
    assert_eq!(
        required_register_bytes(sim.cap(), ExtCapabilities(far_iotlb)),
        0x410
    );
    assert!(VtdUnit::checked(sim.mmio(), 0x400, TIMEOUT).is_err());
}
