use super::*;
use crate::context::{ContextEntry, RootTable};
use crate::invalidation::iotlb_drained;
use crate::levels::Levels;
use crate::pagetable::{PageTable, Perms};
use crate::poll::StepClock;
use crate::quarantine::{QuarantineContext, QuarantineTables};
use crate::regs::{CCMD, IQA, IQT};
use crate::sim_device::{
    SimVtd, DEAD_GCMD, DEFAULT_CAP, DEFAULT_ECAP, FAULT_STORM, FRO_OFFSET, NFR,
};
use crate::table_memory::TableMemory;
use crate::walker::translate;
use lazaret_types::sim::{RegAccess, SimFrameAllocator};

const TIMEOUT: u64 = 1000;
const DEV: Bdf = Bdf::from_requester_id(0x0318);

fn gcmd_writes(sim: &SimVtd) -> Vec<u32> {
    sim.regs
        .accesses()
        .into_iter()
        .filter_map(|a| match a {
            RegAccess::Write32(GCMD, v) => Some(v),
            _ => None,
        })
        .collect()
}

#[test]
fn bring_up_handshakes_never_echo_one_shot_bits() {
    let sim = SimVtd::new();
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 16);
    let clock = StepClock::default();
    let mut unit = VtdUnit::new(sim.mmio(), TIMEOUT);
    assert_eq!(unit.version(), (1, 0));
    assert_eq!(unit.capabilities().preferred_levels(), Some(Levels::Four));
    unit.set_root_table(PhysAddr(0x20_0000), &clock).unwrap();
    assert_eq!(sim.regs.get(RTADDR), 0x20_0000);
    unit.enable_queued_invalidation(&mut alloc, &clock).unwrap();
    assert_eq!(sim.regs.get(IQT), 0);
    assert_eq!(
        sim.regs.get(IQA) & !0xfff,
        0x100_0000,
        "queue page from the allocator"
    );
    unit.enable_translation(&clock).unwrap();
    assert!(unit.translation_enabled());
    unit.disable_translation(&clock).unwrap();
    assert!(!unit.translation_enabled());
    assert_eq!(
        gcmd_writes(&sim),
        vec![
            global::SRTP,
            global::QIE,
            global::QIE | global::TE,
            global::QIE
        ]
    );
    assert_eq!(
        unit.set_root_table(PhysAddr(0x20_0010), &clock),
        Err(UnitError::UnalignedRootTable(PhysAddr(0x20_0010)))
    );
    unit.disable_queued_invalidation(&mut alloc, &clock)
        .unwrap();
    assert_eq!(alloc.frames_in_use(), 0);
}

#[test]
fn dead_handshakes_time_out_and_keep_state_consistent() {
    let sim = SimVtd::new();
    sim.set_dead(DEAD_GCMD);
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 16);
    let clock = StepClock::default();
    let mut unit = VtdUnit::new(sim.mmio(), TIMEOUT);
    assert!(matches!(
        unit.set_root_table(PhysAddr(0x20_0000), &clock),
        Err(UnitError::TimedOut {
            what: "set root table pointer",
            ..
        })
    ));
    assert!(matches!(
        unit.enable_queued_invalidation(&mut alloc, &clock),
        Err(UnitError::TimedOut { .. })
    ));
    assert_eq!(alloc.frames_in_use(), 0, "queue frames given back");
    assert!(matches!(
        unit.enable_translation(&clock),
        Err(UnitError::TimedOut { .. })
    ));
    assert!(clock.0.get() < 10 * TIMEOUT);
}

#[test]
fn write_buffer_flush_only_when_required() {
    let clock = StepClock::default();
    let plain = SimVtd::new();
    let unit = VtdUnit::new(plain.mmio(), TIMEOUT);
    unit.flush_write_buffer(&clock).unwrap();
    assert_eq!(unit.mmio_writes(), 0);
    let rwbf = SimVtd::with_caps(DEFAULT_CAP | (1 << 4), DEFAULT_ECAP);
    let unit = VtdUnit::new(rwbf.mmio(), TIMEOUT);
    unit.flush_write_buffer(&clock).unwrap();
    assert_eq!(gcmd_writes(&rwbf), vec![global::WBF]);
}

#[test]
fn caching_mode_invalidates_not_present_to_present_changes() {
    let clock = StepClock::default();
    let sim = SimVtd::with_caps(DEFAULT_CAP | (1 << 7), DEFAULT_ECAP);
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 16);
    let mut unit = VtdUnit::new(sim.mmio(), TIMEOUT);
    unit.enable_queued_invalidation(&mut alloc, &clock).unwrap();
    unit.after_context_present(&*sim.mem, DEV, 7, &clock)
        .unwrap();
    unit.after_root_entry_present(&*sim.mem, &clock).unwrap();
    unit.after_map(&*sim.mem, 7, 0x4000, 0, &clock).unwrap();
    let consumed = sim.consumed.borrow().clone();
    let expected = [
        Invalidation::Context(ContextScope::Device {
            did: 0,
            source_id: DEV,
            function_mask: 0,
        }),
        iotlb_drained(Capabilities(DEFAULT_CAP), IotlbScope::Domain { did: 7 }),
        Invalidation::Context(ContextScope::Global),
        iotlb_drained(
            Capabilities(DEFAULT_CAP),
            IotlbScope::Page {
                did: 7,
                addr: 0x4000,
                order: 0,
                leaf_only: false,
            },
        ),
    ];
    let without_waits: Vec<u128> = consumed.into_iter().filter(|d| d & 0xf != 5).collect();
    assert_eq!(without_waits, expected.map(|i| i.descriptor()).to_vec());
    assert_eq!(unit.invalidation_stats().waits, 3);

    // Without caching mode (and without RWBF) the same events cost nothing.
    let sim = SimVtd::new();
    let mut unit = VtdUnit::new(sim.mmio(), TIMEOUT);
    unit.after_context_present(&*sim.mem, DEV, 7, &clock)
        .unwrap();
    unit.after_map(&*sim.mem, 7, 0x4000, 0, &clock).unwrap();
    assert_eq!(unit.mmio_writes(), 0);
}

#[test]
fn register_fallback_without_queued_invalidation() {
    let clock = StepClock::default();
    let sim = SimVtd::with_caps(DEFAULT_CAP, DEFAULT_ECAP & !2);
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 16);
    let mut unit = VtdUnit::new(sim.mmio(), TIMEOUT);
    assert_eq!(
        unit.enable_queued_invalidation(&mut alloc, &clock),
        Err(UnitError::NoQueuedInvalidation)
    );
    unit.after_owner_switch(&*sim.mem, DEV, 3, &clock).unwrap();
    let s = unit.invalidation_stats();
    assert_eq!((s.descriptors, s.waits, s.mmio_writes), (2, 2, 2));
    assert!(sim.consumed.borrow().is_empty());
}

#[test]
fn fault_storm_drain_is_bounded() {
    let sim = SimVtd::new();
    let unit = VtdUnit::new(sim.mmio(), TIMEOUT);
    sim.set_dead(FAULT_STORM);
    for i in 0..NFR {
        sim.post_fault(i, (0x1000, (1 << 63) | (6 << 32) | 0x0318));
    }
    let mut n = 0;
    let s = unit.drain_faults(|r| {
        assert_eq!(r.source_id, DEV);
        n += 1;
    });
    assert_eq!((s.records, n), (NFR, NFR));
    assert!(
        sim.regs.get(FRO_OFFSET + 8) >> 63 == 1,
        "storm keeps refilling"
    );
}

/// The whole owner switch as the kernel does it: device quarantined, assigned to a guest with
/// one atomic context switch, invalidations for the old DID with one wait, then back.
#[test]
fn owner_switch_end_to_end() {
    let clock = StepClock::default();
    let sim = SimVtd::new();
    let mem = &*sim.mem;
    let tm = TableMemory::coherent(mem);
    let mut alloc = SimFrameAllocator::new(mem, PhysAddr(0x100_0000), 64);
    let mut unit = VtdUnit::new(sim.mmio(), TIMEOUT);
    let levels = unit.capabilities().preferred_levels().unwrap();
    let mut rt = RootTable::new(tm, &mut alloc).unwrap();
    unit.set_root_table(rt.address(), &clock).unwrap();
    unit.enable_queued_invalidation(&mut alloc, &clock).unwrap();
    unit.invalidate_all(mem, &clock).unwrap();
    let without_waits: Vec<u128> = sim
        .consumed
        .borrow()
        .iter()
        .copied()
        .filter(|d| d & 0xf != 5)
        .collect();
    assert_eq!(
        without_waits,
        [
            Invalidation::Context(ContextScope::Global).descriptor(),
            iotlb_drained(Capabilities(DEFAULT_CAP), IotlbScope::Global).descriptor()
        ]
    );
    assert_eq!(
        sim.consumed.borrow()[1] & 0x7f,
        0x65,
        "a fenced wait between context and IOTLB invalidation"
    );
    // Device add: everything that can fail happens here.
    rt.ensure_bus(tm, &mut alloc, DEV.bus()).unwrap();
    let q = QuarantineTables::build(tm, &mut alloc, levels, &[], true).unwrap();
    q.zero_scratch(mem);
    let quarantined = q.context_entry(1);
    rt.switch_context(tm, DEV, ContextEntry::NOT_PRESENT, quarantined)
        .unwrap();
    unit.after_context_present(mem, DEV, 1, &clock).unwrap();
    unit.enable_translation(&clock).unwrap();
    let scratch = q.scratch_page().unwrap();
    assert_eq!(translate(mem, rt.address(), DEV, 0x4000, true), Ok(scratch));

    let mut guest = PageTable::new(tm, &mut alloc, levels).unwrap();
    guest
        .map(
            tm,
            &mut alloc,
            0x4000,
            PhysAddr(0x7000_0000),
            Perms::READ_WRITE,
        )
        .unwrap();
    let assigned = ContextEntry::translated(guest.root(), levels, 2);

    // Assign, then deassign: no allocation, one wait each.
    let frames = alloc.frames_in_use();
    let stats = unit.invalidation_stats();
    let writes = unit.mmio_writes();
    rt.switch_context(tm, DEV, quarantined, assigned).unwrap();
    unit.after_owner_switch(mem, DEV, 1, &clock).unwrap();
    assert_eq!(
        translate(mem, rt.address(), DEV, 0x4000, true),
        Ok(PhysAddr(0x7000_0000))
    );
    q.zero_scratch(mem);
    rt.switch_context(tm, DEV, assigned, quarantined).unwrap();
    unit.after_owner_switch(mem, DEV, 2, &clock).unwrap();
    assert_eq!(translate(mem, rt.address(), DEV, 0x4000, true), Ok(scratch));
    assert_eq!(alloc.frames_in_use(), frames);
    let after = unit.invalidation_stats();
    assert_eq!(
        (
            after.descriptors - stats.descriptors,
            after.waits - stats.waits
        ),
        (4, 2)
    );
    assert_eq!(
        unit.mmio_writes() - writes,
        2,
        "one IQT doorbell per switch"
    );
}

#[test]
fn flush_fences_context_before_iotlb_and_waits_once() {
    let clock = StepClock::default();
    let sim = SimVtd::new();
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 16);
    let mut unit = VtdUnit::new(sim.mmio(), TIMEOUT);
    unit.enable_queued_invalidation(&mut alloc, &clock).unwrap();
    let cap = unit.capabilities();
    let old = ContextEntry::translated(PhysAddr(0x5000), Levels::Four, 4);
    let new = ContextEntry::translated(PhysAddr(0x6000), Levels::Four, 9);
    let mut batch = SwitchBatch::new();
    batch.entry_changed(cap, DEV, old, new);
    batch.domain_retired(4);
    let (stats, writes) = (unit.invalidation_stats(), unit.mmio_writes());
    unit.flush(&*sim.mem, &batch, &clock).unwrap();
    let kinds: Vec<u128> = sim.consumed.borrow().iter().map(|d| d & 0x7f).collect();
    // device ctx, domain ctx, fenced wait, IOTLB domain, final fenced wait with status.
    assert_eq!(kinds, vec![0x31, 0x21, 0x65, 0x22, 0x65]);
    let after = unit.invalidation_stats();
    assert_eq!(after.descriptors - stats.descriptors, 3);
    assert_eq!(after.waits - stats.waits, 1, "one status poll");
    assert_eq!(unit.mmio_writes() - writes, 1, "one doorbell");
    // Register-based: same order, one command at a time.
    let regs_only = SimVtd::with_caps(DEFAULT_CAP, DEFAULT_ECAP & !2);
    let mut unit = VtdUnit::new(regs_only.mmio(), TIMEOUT);
    unit.flush(&*regs_only.mem, &batch, &clock).unwrap();
    let order: Vec<usize> = regs_only
        .regs
        .accesses()
        .into_iter()
        .filter_map(|a| match a {
            RegAccess::Write64(o, _) => Some(o),
            _ => None,
        })
        .collect();
    assert_eq!(order, vec![CCMD, CCMD, crate::sim_device::IOTLB_OFFSET + 8]);
    assert_eq!(unit.invalidation_stats().waits, 3);
}
