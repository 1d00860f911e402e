//! The caching simulator catches wrong owner-switch policies, and `SwitchBatch` + `flush`
//! pass it: checked by DMA through the simulated caches, against frames the test chose.
use super::*;
use crate::context::ContextEntry;
use crate::levels::Levels;
use crate::pagetable::{PageTable, Perms};
use crate::poll::StepClock;
use crate::sim_device::tests::{bring_up, domain};
use crate::sim_device::SimVtd;
use crate::table_memory::TableMemory;
use lazaret_types::sim::SimFrameAllocator;

const DEV: Bdf = Bdf::from_requester_id(0x0318);
const DEV2: Bdf = Bdf::from_requester_id(0x0320);
const FRAME_A: PhysAddr = PhysAddr(0x7000_0000);
const FRAME_B: PhysAddr = PhysAddr(0x7100_0000);
const FRAME_Q: PhysAddr = PhysAddr(0x7200_0000);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Policy {
    /// Device-selective context-cache invalidation only.
    SkipIotlb,
    /// IOTLB then context-cache in one unfenced batch, and no flush of a retired DID.
    Unfenced,
    /// `SwitchBatch` + `VtdUnit::flush`.
    Batch,
}

fn switch<R: Mmio>(
    unit: &mut VtdUnit<R>,
    sim: &SimVtd,
    policy: Policy,
    old: ContextEntry,
    new: ContextEntry,
    retire: Option<u16>,
) {
    let (mem, clock) = (&*sim.mem, StepClock::default());
    let ctx = Invalidation::Context(ContextScope::Device {
        did: old.domain_id,
        source_id: DEV,
        function_mask: 0,
    });
    let tlb = iotlb_drained(
        unit.capabilities(),
        IotlbScope::Domain { did: old.domain_id },
    );
    match policy {
        Policy::SkipIotlb => unit.invalidate(mem, &[ctx], &clock).unwrap(),
        Policy::Unfenced => unit.invalidate(mem, &[tlb, ctx], &clock).unwrap(),
        Policy::Batch => {
            let mut batch = SwitchBatch::new();
            batch.entry_changed(unit.capabilities(), DEV, old, new);
            if let Some(did) = retire {
                batch.domain_retired(did);
            }
            unit.flush(mem, &batch, &clock).unwrap();
        }
    }
}

/// A is destroyed and its DID 5 handed to B: does DEV, switched A → B, still reach A's frame?
fn reused_did_reaches_old_frame(policy: Policy) -> bool {
    let sim = SimVtd::new();
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 64);
    let (mut unit, rt) = bring_up(&sim, &mut alloc);
    let tm = TableMemory::coherent(&*sim.mem);
    let a = domain(&sim, &mut alloc, 5, FRAME_A);
    let b = domain(&sim, &mut alloc, 5, FRAME_B);
    rt.switch_context(tm, DEV, ContextEntry::NOT_PRESENT, a)
        .unwrap();
    assert_eq!(sim.dma(DEV, 0x4000, true), Ok(FRAME_A));
    rt.switch_context(tm, DEV, a, b).unwrap();
    switch(&mut unit, &sim, policy, a, b, Some(5));
    sim.dma(DEV, 0x4000, true) == Ok(FRAME_A)
}

#[test]
fn skipping_the_iotlb_invalidation_is_caught() {
    assert!(reused_did_reaches_old_frame(Policy::SkipIotlb));
    assert!(!reused_did_reaches_old_frame(Policy::Batch));
}

/// DEV moves A (DID 5) → quarantine (DID 9) with a DMA between every two descriptor effects;
/// then DID 5 goes to B and DEV2 is attached to B. Does DEV2 reach A's frame?
fn refill_leaks_into_the_next_owner(policy: Policy, seed: u64) -> bool {
    let sim = SimVtd::new();
    sim.set_seed(seed);
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 64);
    let (mut unit, mut rt) = bring_up(&sim, &mut alloc);
    let tm = TableMemory::coherent(&*sim.mem);
    rt.ensure_bus(tm, &mut alloc, DEV2.bus()).unwrap();
    let a = domain(&sim, &mut alloc, 5, FRAME_A);
    let q = domain(&sim, &mut alloc, 9, FRAME_Q);
    let b = domain(&sim, &mut alloc, 5, FRAME_B);
    rt.switch_context(tm, DEV, ContextEntry::NOT_PRESENT, a)
        .unwrap();
    assert_eq!(sim.dma(DEV, 0x4000, true), Ok(FRAME_A));
    rt.switch_context(tm, DEV, a, q).unwrap();
    sim.set_dma_during_invalidation(Some((DEV, 0x4000, true)));
    switch(&mut unit, &sim, policy, a, q, None);
    sim.set_dma_during_invalidation(None);
    for landed in sim.take_dma_during_invalidation() {
        assert!(matches!(landed, Ok(FRAME_A) | Ok(FRAME_Q)), "{landed:?}");
    }
    rt.switch_context(tm, DEV2, ContextEntry::NOT_PRESENT, b)
        .unwrap();
    sim.dma(DEV2, 0x4000, true) == Ok(FRAME_A)
}

#[test]
fn an_unfenced_batch_lets_a_refill_leak_into_the_next_owner_of_the_did() {
    let leaks: Vec<u64> = (0..32)
        .filter(|s| refill_leaks_into_the_next_owner(Policy::Unfenced, *s))
        .collect();
    assert!(
        !leaks.is_empty(),
        "the simulator must catch the unfenced batch"
    );
    for seed in 0..32 {
        assert!(
            !refill_leaks_into_the_next_owner(Policy::Batch, seed),
            "seed {seed}"
        );
    }
}

/// `n` owner switches of DEV among A (DID 5), B (DID 6) and quarantine (DID 9), a DMA between
/// every two descriptor effects and one after every switch; A's mapping moves to a fresh frame
/// (its DID retired and reused) whenever DEV leaves it. Returns the first step at which a
/// DMA landed anywhere but the owner's current frame (or, during a switch, the previous one's).
fn run_switches(n: u32, seed: u64, policy: Policy) -> Result<(), String> {
    let sim = SimVtd::new();
    sim.set_seed(seed);
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 64);
    let (mut unit, rt) = bring_up(&sim, &mut alloc);
    let tm = TableMemory::coherent(&*sim.mem);
    let mut a_table = PageTable::new(tm, &mut alloc, Levels::Four).unwrap();
    a_table
        .map(tm, &mut alloc, 0x4000, FRAME_A, Perms::READ_WRITE)
        .unwrap();
    let a = ContextEntry::translated(a_table.root(), Levels::Four, 5);
    let entries = [
        a,
        domain(&sim, &mut alloc, 6, FRAME_B),
        domain(&sim, &mut alloc, 9, FRAME_Q),
    ];
    let mut frames = [FRAME_A, FRAME_B, FRAME_Q];
    let mut owner = 2;
    rt.switch_context(tm, DEV, ContextEntry::NOT_PRESENT, entries[owner])
        .unwrap();
    sim.set_dma_during_invalidation(Some((DEV, 0x4000, true)));
    let mut rng = seed | 1;
    for step in 0..n {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let target = (owner + 1 + (rng % 2) as usize) % 3;
        rt.switch_context(tm, DEV, entries[owner], entries[target])
            .unwrap();
        let retire = (owner == 0).then_some(5);
        switch(
            &mut unit,
            &sim,
            policy,
            entries[owner],
            entries[target],
            retire,
        );
        for landed in sim.take_dma_during_invalidation() {
            if landed != Ok(frames[owner]) && landed != Ok(frames[target]) {
                return Err(format!(
                    "step {step}: DMA during the switch landed at {landed:?}"
                ));
            }
        }
        if owner == 0 {
            // A's DID is free: A gets a new frame (a new guest reusing DID 5).
            frames[0] = PhysAddr(FRAME_A.0 + u64::from(step % 64 + 1) * 0x1000);
            a_table.unmap(tm, 0x4000).unwrap();
            a_table
                .map(tm, &mut alloc, 0x4000, frames[0], Perms::READ_WRITE)
                .unwrap();
        }
        owner = target;
        let landed = sim.dma(DEV, 0x4000, true);
        if landed != Ok(frames[owner]) {
            return Err(format!(
                "step {step}: owner {owner} expects {}, DMA landed at {landed:?}",
                frames[owner]
            ));
        }
    }
    Ok(())
}

#[test]
fn ten_thousand_switches_with_dma_between_every_step() {
    run_switches(10_000, 0x5eed, Policy::Batch).unwrap();
    assert!(run_switches(10_000, 0x5eed, Policy::Unfenced).is_err());
    assert!(run_switches(10_000, 0x5eed, Policy::SkipIotlb).is_err());
}

/// DEV's own switch A → quarantine was never confirmed (say its wait timed out), so DID 5 was
/// parked. Retiring DID 5 alone must make it safe to hand out: DEV sees quarantine, and DEV2,
/// attached to the DID's next owner B, reaches B's frame, not A's.
#[test]
fn retiring_a_parked_did_alone_makes_it_safe_to_reuse() {
    let sim = SimVtd::new();
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 64);
    let (mut unit, mut rt) = bring_up(&sim, &mut alloc);
    let tm = TableMemory::coherent(&*sim.mem);
    rt.ensure_bus(tm, &mut alloc, DEV2.bus()).unwrap();
    let a = domain(&sim, &mut alloc, 5, FRAME_A);
    let q = domain(&sim, &mut alloc, 9, FRAME_Q);
    let b = domain(&sim, &mut alloc, 5, FRAME_B);
    rt.switch_context(tm, DEV, ContextEntry::NOT_PRESENT, a)
        .unwrap();
    assert_eq!(sim.dma(DEV, 0x4000, true), Ok(FRAME_A));
    rt.switch_context(tm, DEV, a, q).unwrap();
    assert_eq!(sim.dma(DEV, 0x4000, true), Ok(FRAME_A), "not yet flushed");
    let mut batch = SwitchBatch::new();
    batch.domain_retired(5);
    unit.flush(&*sim.mem, &batch, &StepClock::default())
        .unwrap();
    assert_eq!(sim.dma(DEV, 0x4000, true), Ok(FRAME_Q));
    rt.switch_context(tm, DEV2, ContextEntry::NOT_PRESENT, b)
        .unwrap();
    assert_eq!(sim.dma(DEV2, 0x4000, true), Ok(FRAME_B));
}
