use super::*;
use crate::poll::StepClock;
use crate::regs::{global, Capabilities, CCMD, GSTS, IQT};
use crate::sim_device::{SimRef, SimVtd, DEAD_QUEUE, DEAD_REGISTERS, IOTLB_OFFSET};
use lazaret_types::sim::{RegAccess, SimFrameAllocator};
use lazaret_types::Bdf;

const DEV: Bdf = Bdf::from_requester_id(0x0310);
const TIMEOUT: u64 = 1000;

/// A programmed queue on a unit whose QIE is already set.
fn queued<'a>(
    sim: &'a SimVtd,
    alloc: &mut SimFrameAllocator,
) -> (CountingMmio<SimRef<'a>>, Invalidator) {
    let mmio = CountingMmio::new(sim.mmio());
    let mut q = InvalidationQueue::new(alloc).unwrap();
    q.program(&mmio);
    sim.regs.set(GSTS, u64::from(global::QIE));
    let mut inv = Invalidator::registers(IOTLB_OFFSET);
    inv.use_queue(q);
    (mmio, inv)
}

#[test]
fn owner_switch_is_two_descriptors_one_wait_one_doorbell() {
    let sim = SimVtd::new();
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 8);
    let (mmio, mut inv) = queued(&sim, &mut alloc);
    let writes_before = sim.regs.write_count();
    inv.run(
        &mmio,
        &*sim.mem,
        &owner_switch(DEV, 4),
        &StepClock::default(),
        TIMEOUT,
    )
    .unwrap();
    let consumed = sim.consumed.borrow().clone();
    let [ctx, tlb] = owner_switch(DEV, 4);
    assert_eq!(consumed.len(), 3);
    assert_eq!(consumed[0], ctx.descriptor());
    assert_eq!(consumed[1], tlb.descriptor());
    assert_eq!(consumed[2] & 0xf, 5, "batch ends with a wait descriptor");
    assert_eq!(
        inv.stats(),
        InvalidationStats {
            descriptors: 2,
            waits: 1,
            mmio_writes: 1
        }
    );
    assert_eq!(sim.regs.write_count() - writes_before, 1);
    assert_eq!(sim.regs.get(IQT), 3 << 4);
}

#[test]
fn the_queue_wraps_around() {
    let sim = SimVtd::new();
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 8);
    let (mmio, mut inv) = queued(&sim, &mut alloc);
    let clock = StepClock::default();
    for did in 0..200u16 {
        inv.run(&mmio, &*sim.mem, &owner_switch(DEV, did), &clock, TIMEOUT)
            .unwrap();
    }
    let consumed = sim.consumed.borrow();
    assert_eq!(consumed.len(), 600);
    // The last batch's IOTLB descriptor names the last DID.
    assert_eq!((consumed[598] >> 16) as u16, 199);
    assert_eq!(inv.stats().waits, 200);
    assert_eq!(sim.regs.get(IQT), (600 % 256) << 4);
}

#[test]
fn a_dead_queue_times_out_and_errors_are_reported() {
    let sim = SimVtd::new();
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 8);
    let (mmio, mut inv) = queued(&sim, &mut alloc);
    sim.set_dead(DEAD_QUEUE);
    let clock = StepClock::default();
    let r = inv.run(&mmio, &*sim.mem, &owner_switch(DEV, 1), &clock, TIMEOUT);
    assert!(matches!(
        r,
        Err(InvalidationError::TimedOut {
            what: "invalidation wait descriptor",
            ..
        })
    ));
    assert!(clock.0.get() < 3 * TIMEOUT, "bounded");
    let big = [owner_switch(DEV, 1)[0]; MAX_BATCH + 1];
    assert_eq!(
        inv.run(&mmio, &*sim.mem, &big, &clock, TIMEOUT),
        Err(InvalidationError::BatchTooLarge { len: MAX_BATCH + 1 })
    );
}

#[test]
fn a_full_queue_waits_for_space_then_times_out() {
    let sim = SimVtd::new();
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 8);
    let (mmio, mut inv) = queued(&sim, &mut alloc);
    sim.set_dead(DEAD_QUEUE);
    let clock = StepClock::default();
    let batch = [owner_switch(DEV, 1)[1]; 200];
    assert!(inv.run(&mmio, &*sim.mem, &batch, &clock, TIMEOUT).is_err());
    let writes = sim.regs.write_count();
    assert_eq!(
        inv.run(&mmio, &*sim.mem, &batch, &clock, TIMEOUT),
        Err(InvalidationError::TimedOut {
            waited_us: TIMEOUT,
            what: "invalidation queue space"
        })
    );
    assert_eq!(
        sim.regs.write_count(),
        writes,
        "nothing submitted without room"
    );
}

#[test]
fn register_based_invalidation_issues_and_polls_each_command() {
    let sim = SimVtd::new();
    let mmio = CountingMmio::new(sim.mmio());
    let mut inv = Invalidator::registers(IOTLB_OFFSET);
    let clock = StepClock::default();
    let page = Invalidation::Iotlb {
        scope: IotlbScope::Page {
            did: 3,
            addr: 0x7000,
            order: 0,
            leaf_only: false,
        },
        drain_reads: false,
        drain_writes: false,
    };
    let batch = [owner_switch(DEV, 4)[0], owner_switch(DEV, 4)[1], page];
    inv.run(&mmio, &*sim.mem, &batch, &clock, TIMEOUT).unwrap();
    let writes: Vec<_> = sim
        .regs
        .accesses()
        .into_iter()
        .filter(|a| matches!(a, RegAccess::Write64(..)))
        .collect();
    let expect = |i: &Invalidation| match i.register_command() {
        None => vec![],
        Some(RegisterCommand::Context(v)) => vec![RegAccess::Write64(CCMD, v)],
        Some(RegisterCommand::Iotlb { iva: 0, command }) => {
            vec![RegAccess::Write64(IOTLB_OFFSET + 8, command)]
        }
        Some(RegisterCommand::Iotlb { iva, command }) => vec![
            RegAccess::Write64(IOTLB_OFFSET, iva),
            RegAccess::Write64(IOTLB_OFFSET + 8, command),
        ],
    };
    assert_eq!(writes, batch.iter().flat_map(expect).collect::<Vec<_>>());
    assert_eq!(
        inv.stats(),
        InvalidationStats {
            descriptors: 3,
            waits: 3,
            mmio_writes: 4
        }
    );
    assert_eq!(sim.regs.get(CCMD) >> 63, 0, "ICC cleared by the unit");
}

#[test]
fn register_based_time_out_stops_the_batch() {
    let sim = SimVtd::new();
    sim.set_dead(DEAD_REGISTERS);
    let mmio = CountingMmio::new(sim.mmio());
    let mut inv = Invalidator::registers(IOTLB_OFFSET);
    let r = inv.run(
        &mmio,
        &*sim.mem,
        &owner_switch(DEV, 4),
        &StepClock::default(),
        TIMEOUT,
    );
    assert!(matches!(
        r,
        Err(InvalidationError::TimedOut {
            what: "context command (CCMD.ICC)",
            ..
        })
    ));
    assert_eq!(mmio.writes(), 1, "the IOTLB command was not issued");
}

/// `batch`'s context-cache segment and its late (IOTLB, then interrupt entry cache) segment.
fn segments(batch: &SwitchBatch, cap: Capabilities) -> (Vec<Invalidation>, Vec<Invalidation>) {
    let filler = Invalidation::Context(ContextScope::Global);
    let mut contexts = [filler; MAX_CONTEXT_INVALIDATIONS];
    let mut late = [filler; MAX_LATE_INVALIDATIONS];
    let nc = batch.context_invalidations(&mut contexts);
    let nl = batch.late_invalidations(cap, &mut late);
    (contexts[..nc].to_vec(), late[..nl].to_vec())
}

#[test]
fn an_unconfirmed_batch_is_redone_globally_including_the_interrupt_entry_cache() {
    // §6.5.2.10: after a queue error the unit may have skipped any descriptor of the batch,
    // so every cache it uses is invalidated globally — the IEC too when it remaps interrupts.
    let cap = Capabilities(0);
    let context = vec![Invalidation::Context(ContextScope::Global)];
    let iotlb = iotlb_drained(cap, IotlbScope::Global);
    let iec = Invalidation::InterruptEntry(InterruptScope::Global);

    let mut dma_only = SwitchBatch::new();
    dma_only.invalidate_everything(false);
    assert!(!dma_only.is_empty());
    assert_eq!(segments(&dma_only, cap), (context.clone(), vec![iotlb]));

    let mut remapping = SwitchBatch::new();
    remapping.interrupt_entries_changed(InterruptScope::Entries {
        index: 4,
        index_mask: 2,
    });
    remapping.invalidate_everything(true);
    assert_eq!(
        segments(&remapping, cap),
        (context.clone(), vec![iotlb, iec])
    );

    // A global IEC already owed stays owed when the redo itself asks for none.
    let mut owed = SwitchBatch::new();
    owed.interrupt_entries_changed(InterruptScope::Global);
    assert!(!owed.is_empty(), "a global IEC alone is work");
    assert_eq!(segments(&owed, cap), (vec![], vec![iec]));
    owed.invalidate_everything(false);
    assert_eq!(segments(&owed, cap), (context, vec![iotlb, iec]));
}
