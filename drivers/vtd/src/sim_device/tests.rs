//! The simulated unit behaves like hardware: caches that stay stale until the right
//! invalidation, roots latched by SRTP, fault records, out-of-order completion, queue errors.
use super::*;
use crate::context::{ContextEntry, RootTable};
use crate::fault::FaultRecord;
use crate::invalidation::{ContextScope, Invalidation, IotlbScope};
use crate::levels::Levels;
use crate::pagetable::{PageTable, Perms};
use crate::poll::StepClock;
use crate::table_memory::TableMemory;
use crate::unit::VtdUnit;
use lazaret_types::sim::SimFrameAllocator;

const TIMEOUT: u64 = 1000;
const DEV: Bdf = Bdf::from_requester_id(0x0318);
const FRAME_A: PhysAddr = PhysAddr(0x7000_0000);
const FRAME_B: PhysAddr = PhysAddr(0x7100_0000);

/// Root table programmed and latched, QI on, caches clean, translation on.
pub(crate) fn bring_up<'a>(
    sim: &'a SimVtd,
    alloc: &mut SimFrameAllocator,
) -> (VtdUnit<SimRef<'a>>, RootTable) {
    let clock = StepClock::default();
    let tm = TableMemory::coherent(&*sim.mem);
    let mut unit = VtdUnit::new(sim.mmio(), TIMEOUT);
    let mut rt = RootTable::new(tm, alloc).unwrap();
    rt.ensure_bus(tm, alloc, DEV.bus()).unwrap();
    unit.set_root_table(rt.address(), &clock).unwrap();
    if unit.ext_capabilities().queued_invalidation() {
        unit.enable_queued_invalidation(alloc, &clock).unwrap();
    }
    unit.invalidate_all(&*sim.mem, &clock).unwrap();
    unit.enable_translation(&clock).unwrap();
    (unit, rt)
}

/// A 4-level domain `did` mapping IOVA 0x4000 → `frame`, read-write.
pub(crate) fn domain(
    sim: &SimVtd,
    alloc: &mut SimFrameAllocator,
    did: u16,
    frame: PhysAddr,
) -> ContextEntry {
    let tm = TableMemory::coherent(&*sim.mem);
    let mut pt = PageTable::new(tm, alloc, Levels::Four).unwrap();
    pt.map(tm, alloc, 0x4000, frame, Perms::READ_WRITE).unwrap();
    ContextEntry::translated(pt.root(), Levels::Four, did)
}

fn context(scope: ContextScope) -> Invalidation {
    Invalidation::Context(scope)
}

fn iotlb(scope: IotlbScope) -> Invalidation {
    Invalidation::Iotlb {
        scope,
        drain_reads: false,
        drain_writes: false,
    }
}

#[test]
fn translation_off_is_untranslated_and_roots_come_from_srtp() {
    let sim = SimVtd::new();
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 64);
    assert_eq!(sim.dma(DEV, 0x4000, true), Ok(PhysAddr(0x4000)));
    let (unit, rt) = bring_up(&sim, &mut alloc);
    let tm = TableMemory::coherent(&*sim.mem);
    let a = domain(&sim, &mut alloc, 5, FRAME_A);
    rt.switch_context(tm, DEV, ContextEntry::NOT_PRESENT, a)
        .unwrap();
    assert_eq!(sim.dma(DEV, 0x4123, true), Ok(PhysAddr(FRAME_A.0 + 0x123)));
    // A root written to RTADDR but never latched with SRTP is not used.
    let other = RootTable::new(tm, &mut alloc).unwrap();
    sim.regs.write64(RTADDR, other.address().0);
    sim.state.borrow_mut().caches = Caches::default();
    assert_eq!(sim.dma(DEV, 0x4000, true), Ok(FRAME_A));
    unit.set_root_table(other.address(), &StepClock::default())
        .unwrap();
    sim.state.borrow_mut().caches = Caches::default();
    assert!(matches!(
        sim.dma(DEV, 0x4000, true),
        Err(SimDmaFault {
            fault: Fault::RootNotPresent,
            ..
        })
    ));
}

#[test]
fn caches_stay_stale_until_the_matching_invalidation() {
    let sim = SimVtd::new();
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 64);
    let (mut unit, rt) = bring_up(&sim, &mut alloc);
    let (mem, tm, clock) = (
        &*sim.mem,
        TableMemory::coherent(&*sim.mem),
        StepClock::default(),
    );
    let a = domain(&sim, &mut alloc, 5, FRAME_A);
    let b = domain(&sim, &mut alloc, 5, FRAME_B);
    rt.switch_context(tm, DEV, ContextEntry::NOT_PRESENT, a)
        .unwrap();
    assert_eq!(sim.dma(DEV, 0x4000, false), Ok(FRAME_A));
    assert_eq!(sim.cached(), (1, 1));
    // Same DID, new tables: nothing invalidated, the cached context and IOTLB still win.
    rt.switch_context(tm, DEV, a, b).unwrap();
    assert_eq!(sim.dma(DEV, 0x4000, false), Ok(FRAME_A));
    // Device-selective with the wrong DID, or for a sibling function: no effect.
    let wrong = [
        context(ContextScope::Device {
            did: 6,
            source_id: DEV,
            function_mask: 0,
        }),
        context(ContextScope::Device {
            did: 5,
            source_id: Bdf::from_requester_id(DEV.requester_id() ^ 1),
            function_mask: 0,
        }),
        iotlb(IotlbScope::Domain { did: 6 }),
        iotlb(IotlbScope::Page {
            did: 5,
            addr: 0x5000,
            order: 0,
            leaf_only: false,
        }),
    ];
    unit.invalidate(mem, &wrong, &clock).unwrap();
    assert_eq!(sim.cached(), (1, 1));
    // The function mask covers the sibling's function bits: the context entry goes, but
    // the IOTLB entry tagged with DID 5 stays and is still used.
    let masked = context(ContextScope::Device {
        did: 5,
        source_id: Bdf::from_requester_id(DEV.requester_id() ^ 4),
        function_mask: 1,
    });
    unit.invalidate(mem, &[masked], &clock).unwrap();
    assert_eq!(sim.cached(), (0, 1));
    assert_eq!(
        sim.dma(DEV, 0x4000, false),
        Ok(FRAME_A),
        "stale IOTLB entry"
    );
    // Page-selective with AM covering 0x4000 drops it.
    let pages = iotlb(IotlbScope::Page {
        did: 5,
        addr: 0,
        order: 3,
        leaf_only: false,
    });
    unit.invalidate(mem, &[pages], &clock).unwrap();
    assert_eq!(sim.dma(DEV, 0x4000, false), Ok(FRAME_B));
}

#[test]
fn register_commands_invalidate_too() {
    let sim = SimVtd::with_caps(DEFAULT_CAP, DEFAULT_ECAP & !2);
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 64);
    let (mut unit, rt) = bring_up(&sim, &mut alloc);
    let (mem, tm, clock) = (
        &*sim.mem,
        TableMemory::coherent(&*sim.mem),
        StepClock::default(),
    );
    let a = domain(&sim, &mut alloc, 5, FRAME_A);
    let b = domain(&sim, &mut alloc, 5, FRAME_B);
    rt.switch_context(tm, DEV, ContextEntry::NOT_PRESENT, a)
        .unwrap();
    assert_eq!(sim.dma(DEV, 0x4000, true), Ok(FRAME_A));
    rt.switch_context(tm, DEV, a, b).unwrap();
    unit.after_owner_switch(mem, DEV, 5, &clock).unwrap();
    assert_eq!(sim.cached(), (0, 0));
    assert_eq!(sim.dma(DEV, 0x4000, true), Ok(FRAME_B));
}

#[test]
fn caching_mode_caches_not_present_entries_under_did_0() {
    let sim = SimVtd::with_caps(DEFAULT_CAP | (1 << 7), DEFAULT_ECAP);
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 64);
    let (mut unit, rt) = bring_up(&sim, &mut alloc);
    let (mem, tm, clock) = (
        &*sim.mem,
        TableMemory::coherent(&*sim.mem),
        StepClock::default(),
    );
    assert!(sim.dma(DEV, 0x4000, true).is_err());
    let a = domain(&sim, &mut alloc, 5, FRAME_A);
    rt.switch_context(tm, DEV, ContextEntry::NOT_PRESENT, a)
        .unwrap();
    assert!(sim.dma(DEV, 0x4000, true).is_err(), "cached not-present");
    unit.after_context_present(mem, DEV, 5, &clock).unwrap();
    assert_eq!(sim.dma(DEV, 0x4000, true), Ok(FRAME_A));
}

#[test]
fn refused_dma_is_recorded_in_the_fault_registers() {
    let sim = SimVtd::new();
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 64);
    let (unit, _rt) = bring_up(&sim, &mut alloc);
    let err = sim.dma(DEV, 0x4567, true).unwrap_err();
    assert_eq!(err.fault, Fault::ContextNotPresent);
    assert!(err.to_string().contains("refused"), "{err}");
    assert_ne!(sim.regs.get(FSTS) as u32 & fsts::PPF, 0);
    assert_eq!(
        fsts::fri(sim.regs.get(FSTS) as u32),
        0,
        "FRI names the first pending record"
    );
    let mut records = Vec::new();
    unit.drain_faults(|r| records.push(r));
    assert_eq!(
        records,
        vec![FaultRecord {
            index: 0,
            source_id: DEV,
            address: 0x4000,
            reason: 2,
            write: true
        }]
    );
    // Every record full: the next fault is lost and PFO says so.
    for _ in 0..NFR + 1 {
        let _ = sim.dma(DEV, 0, false);
    }
    assert_ne!(sim.regs.get(FSTS) as u32 & fsts::PFO, 0);
}

/// IOTLB invalidation first, context second, no fence between, a DMA between every two
/// effects: whether a stale IOTLB entry tagged with the old DID survives depends on the order.
fn unfenced_switch_leaves_stale_entry(seed: u64, fenced: bool) -> bool {
    let sim = SimVtd::new();
    sim.set_seed(seed);
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 64);
    let (mut unit, rt) = bring_up(&sim, &mut alloc);
    let (mem, tm, clock) = (
        &*sim.mem,
        TableMemory::coherent(&*sim.mem),
        StepClock::default(),
    );
    let a = domain(&sim, &mut alloc, 5, FRAME_A);
    let q = domain(&sim, &mut alloc, 9, FRAME_B);
    rt.switch_context(tm, DEV, ContextEntry::NOT_PRESENT, a)
        .unwrap();
    assert_eq!(sim.dma(DEV, 0x4000, true), Ok(FRAME_A));
    rt.switch_context(tm, DEV, a, q).unwrap();
    sim.set_dma_during_invalidation(Some((DEV, 0x4000, true)));
    let tlb = [iotlb(IotlbScope::Domain { did: 5 })];
    let ctx = [context(ContextScope::Device {
        did: 5,
        source_id: DEV,
        function_mask: 0,
    })];
    if fenced {
        let mut batch = crate::SwitchBatch::new();
        batch.entry_changed(sim.cap(), DEV, a, q);
        unit.flush(mem, &batch, &clock).unwrap();
    } else {
        unit.invalidate(mem, &[tlb[0], ctx[0]], &clock).unwrap();
    }
    sim.set_dma_during_invalidation(None);
    let stale = sim.state.borrow().caches.translations_of(5);
    stale > 0
}

#[test]
fn unfenced_descriptors_complete_out_of_order_and_refill() {
    let stale: Vec<u64> = (0..16)
        .filter(|s| unfenced_switch_leaves_stale_entry(*s, false))
        .collect();
    assert!(!stale.is_empty(), "some order lets the DMA refill DID 5");
    assert!(
        stale.len() < 16,
        "some order does not: the order really varies"
    );
    assert!((0..16).all(|s| !unfenced_switch_leaves_stale_entry(s, true)));
}

#[test]
fn fn0_waits_write_status_only_after_earlier_descriptors() {
    let sim = SimVtd::new();
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 64);
    let (_unit, _rt) = bring_up(&sim, &mut alloc);
    // Hand-written queue: IOTLB global, FN=0 wait, context global, FN=1 wait.
    let base = sim.regs.get(IQA) & !0xfff;
    let status = 0x200_0000u64;
    let wait =
        |data: u64, fence: u64| (0x25 | fence << 6 | data << 32) as u128 | (status as u128) << 64;
    let ds = [0x12u128, wait(7, 0), 0x11, wait(8, 1)];
    for seed in 0..32 {
        sim.set_seed(seed);
        sim.state.borrow_mut().effects.clear();
        let start = sim.regs.get(IQT) >> 4;
        for (i, d) in ds.iter().enumerate() {
            sim.mem.write_bytes(
                PhysAddr(base + ((start + i as u64) % 256) * 16),
                &d.to_le_bytes(),
            );
        }
        sim.regs.write64(IQT, ((start + 4) % 256) << 4);
        let effects = sim.effects();
        let pos = |d: u128| effects.iter().position(|e| *e == d).unwrap();
        assert!(pos(0x12) < pos(wait(7, 0)));
        assert_eq!(pos(wait(8, 1)), 3, "a fenced wait completes last");
    }
}

#[test]
fn queue_errors_stop_and_resume_like_hardware() {
    let sim = SimVtd::new();
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 64);
    let (_unit, _rt) = bring_up(&sim, &mut alloc);
    let base = sim.regs.get(IQA) & !0xfff;
    let start = sim.regs.get(IQT) >> 4;
    let status = 0x200_0000u64;
    let wait = (0x65u64 | 1 << 32) as u128 | (status as u128) << 64;
    for (i, d) in [0x11u128, wait].iter().enumerate() {
        sim.mem
            .write_bytes(PhysAddr(base + (start + i as u64) * 16), &d.to_le_bytes());
    }
    sim.inject_queue_fault(QueueFault::InvalidDescriptor);
    sim.regs.write64(IQT, (start + 2) << 4);
    assert_ne!(sim.regs.get(FSTS) as u32 & fsts::IQE, 0);
    assert_eq!(
        sim.regs.get(IQH) >> 4,
        start,
        "IQH at the invalid descriptor"
    );
    assert_eq!(sim.mem.read_u64(PhysAddr(status)), 0);
    // Cleared but not repaired: the same descriptor stops the queue again.
    sim.regs.write32(FSTS, fsts::IQE);
    assert_ne!(sim.regs.get(FSTS) as u32 & fsts::IQE, 0);
    assert_eq!(sim.regs.get(IQH) >> 4, start);
    // Repaired (slot rewritten) and cleared: the queue resumes at IQH.
    sim.mem
        .write_bytes(PhysAddr(base + start * 16), &0x12u128.to_le_bytes());
    sim.regs.write32(FSTS, fsts::IQE);
    assert_eq!(
        sim.regs.get(IQH) >> 4,
        start + 2,
        "resumed after IQE was cleared"
    );
    assert_eq!(sim.mem.read_u64(PhysAddr(status)), 1);
    // ITE: the segment's wait is aborted, IQH moves past it, the queue stops.
    let wait2 = (0x65u64 | 2 << 32) as u128 | (status as u128) << 64;
    for (i, d) in [0x12u128, wait2].iter().enumerate() {
        sim.mem.write_bytes(
            PhysAddr(base + (start + 2 + i as u64) * 16),
            &d.to_le_bytes(),
        );
    }
    sim.inject_queue_fault(QueueFault::TimeOut);
    sim.regs.write64(IQT, (start + 4) << 4);
    assert_ne!(sim.regs.get(FSTS) as u32 & fsts::ITE, 0);
    assert_eq!(sim.mem.read_u64(PhysAddr(status)), 1, "wait aborted");
    assert_eq!(sim.regs.get(IQH) >> 4, start + 4);
}

#[test]
fn iqa_is_ignored_while_queued_invalidation_is_enabled() {
    let sim = SimVtd::new();
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 64);
    let (_unit, _rt) = bring_up(&sim, &mut alloc);
    let iqa = sim.regs.get(IQA);
    sim.regs.write64(IQA, 0x4242_0000);
    assert_eq!(sim.regs.get(IQA), iqa);
    assert_eq!(sim.iqa_writes_while_enabled(), 1);
}

#[test]
fn paging_structure_cache_holds_non_leaf_entries_until_invalidated() {
    let sim = SimVtd::new();
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 64);
    let (mut unit, rt) = bring_up(&sim, &mut alloc);
    let (mem, tm, clock) = (
        &*sim.mem,
        TableMemory::coherent(&*sim.mem),
        StepClock::default(),
    );
    // Hand-built 4-level tables for DID 5: L4 → L3 → L2 → T1; T2 is a second level-1 table.
    let (l4, l3, l2, t1, t2) = (0x300_0000, 0x300_1000, 0x300_2000, 0x300_3000, 0x300_4000);
    mem.write_u64(PhysAddr(l4), l3 | 3);
    mem.write_u64(PhysAddr(l3), l2 | 3);
    mem.write_u64(PhysAddr(l2), t1 | 3);
    for (table, frame) in [(t1, FRAME_A), (t2, FRAME_B)] {
        mem.write_u64(PhysAddr(table + 4 * 8), frame.0 | 3);
        mem.write_u64(PhysAddr(table + 5 * 8), (frame.0 + 0x1000) | 3);
    }
    let ctx = ContextEntry::translated(PhysAddr(l4), Levels::Four, 5);
    rt.switch_context(tm, DEV, ContextEntry::NOT_PRESENT, ctx)
        .unwrap();
    assert_eq!(sim.dma(DEV, 0x4000, true), Ok(FRAME_A));
    // The PDE now points to T2.
    mem.write_u64(PhysAddr(l2), t2 | 3);
    let page = |leaf_only| {
        iotlb(IotlbScope::Page {
            did: 5,
            addr: 0x4000,
            order: 0,
            leaf_only,
        })
    };
    // Leaf-only (IH = 1): the IOTLB entry goes, the cached PDE stays and leads into T1.
    unit.invalidate(mem, &[page(true)], &clock).unwrap();
    assert_eq!(sim.dma(DEV, 0x4000, true), Ok(FRAME_A));
    assert_eq!(sim.dma(DEV, 0x5000, true), Ok(PhysAddr(FRAME_A.0 + 0x1000)));
    // IH = 0 drops the cached non-leaf entries covering the page.
    unit.invalidate(mem, &[page(false)], &clock).unwrap();
    assert_eq!(sim.dma(DEV, 0x4000, true), Ok(FRAME_B));
    // 0x5000's own IOTLB entry was not covered; the domain-selective one drops it.
    assert_eq!(sim.dma(DEV, 0x5000, true), Ok(PhysAddr(FRAME_A.0 + 0x1000)));
    unit.invalidate(mem, &[iotlb(IotlbScope::Domain { did: 5 })], &clock)
        .unwrap();
    assert_eq!(sim.dma(DEV, 0x5000, true), Ok(PhysAddr(FRAME_B.0 + 0x1000)));
}
