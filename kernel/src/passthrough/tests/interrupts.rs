//! Interrupt remapping through the core on the simulated VT-d unit (§5.1): every device's
//! entries exist, blocked, from the moment it is added; only an assigned device's programmed
//! entry delivers, and only for its own source ID; entering quarantine blocks them again —
//! through the simulator's interrupt entry cache, so a missing IEC invalidation shows — and
//! without allocating. What an MSI does is decided by the simulator's own §5.1.5.2 / §9.10
//! decoding, never by the builder's encoders.
use alloc::vec::Vec;

use lazaret_types::Bdf;
use lazaret_vtd::sim_device::{SimVtd, DEFAULT_CAP, DEFAULT_ECAP};

use super::fixture::*;
use crate::cmdline::QuarantineMode;
use crate::mm::heap::counting::heap_allocations_during;
use crate::passthrough::faults::THRESHOLD;
use crate::passthrough::iommu::{FaultKind, InterruptTarget};
use crate::passthrough::{self, PassthroughError};

/// Every index of the unit's table (one 4 KiB frame: 256 entries).
const TABLE_ENTRIES: u16 = 256;
/// A host vector Lazaret would own, on the BSP.
const TARGET: InterruptTarget = InterruptTarget {
    vector: 0x41,
    apic_id: 0,
};

/// A remappable-format MSI for `index` (§5.1.5.2: address 19:5 handle[14:0], bit 4 format,
/// bit 3 SHV = 0, bit 2 handle[15]), written from the spec, not from `MsiMessage`.
fn remappable(index: u16) -> u64 {
    0xFEE0_0000 | (u64::from(index & 0x7fff) << 5) | (1 << 4) | (u64::from(index >> 15) << 2)
}

/// A compatibility-format MSI straight at vector `vector` on APIC 0 (§5.1.5.1).
fn compatibility(sim: &SimVtd, rid: Bdf, vector: u8) -> Result<u8, u8> {
    sim.msi(rid, 0xFEE0_0000, u32::from(vector))
        .map(|i| i.vector)
        .map_err(|f| f.reason)
}

/// Whether any index of the table delivers an MSI from `rid`.
fn delivering_indices(sim: &SimVtd, rid: Bdf) -> Vec<u16> {
    (0..TABLE_ENTRIES)
        .filter(|&i| sim.msi(rid, remappable(i), 0).is_ok())
        .collect()
}

#[test]
fn every_added_device_has_only_blocked_entries_and_compatibility_format_is_blocked() {
    let sim = SimVtd::new();
    let mut alloc = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, QuarantineMode::Scratch);
    let mut g = lock.lock();
    for i in 0..CAST {
        add(&mut g, &mut alloc, &cast(i)).unwrap();
        assert!(
            g.state().interrupts_of(cast(i).sbdf).is_some(),
            "entries reserved at add"
        );
    }
    for i in 0..CAST {
        for rid in cast(i).rids {
            assert_eq!(delivering_indices(&sim, rid), [], "{rid} in quarantine");
            assert_eq!(
                compatibility(&sim, rid, 0x30),
                Err(0x25),
                "{rid}: compatibility format"
            );
        }
    }
}

#[test]
fn an_assigned_device_delivers_only_its_programmed_vector_and_only_for_itself() {
    let sim = SimVtd::new();
    let mut alloc = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, QuarantineMode::Scratch);
    let mut g = lock.lock();
    for i in [0, 2] {
        add(&mut g, &mut alloc, &cast(i)).unwrap();
    }
    let dom = passthrough::create_domain(&mut g, &mut alloc, "guest", 8).unwrap();
    let (dev, other) = (cast(0), cast(2));
    passthrough::assign(&mut g, &mut alloc, dom, dev.sbdf).unwrap();
    let msi = passthrough::program_interrupt(&mut g, dom, dev.sbdf, 0, TARGET).unwrap();
    let got = sim.msi(dev.rids[0], msi.address, msi.data).unwrap();
    assert_eq!((got.vector, got.destination), (0x41, 0));
    let index = got.index.unwrap();
    assert_eq!(delivering_indices(&sim, dev.rids[0]), [index]);
    // Another device's source ID on the same handle: source-ID verification.
    assert_eq!(
        sim.msi(other.rids[0], msi.address, msi.data)
            .map_err(|f| f.reason),
        Err(0x26)
    );
    for rid in &other.rids {
        assert_eq!(delivering_indices(&sim, *rid), [], "{rid}");
    }
    assert_eq!(compatibility(&sim, dev.rids[0], 0x41), Err(0x25));
    // Blocking the entry again.
    passthrough::block_interrupt(&mut g, dom, dev.sbdf, 0).unwrap();
    assert_eq!(delivering_indices(&sim, dev.rids[0]), []);
}

#[test]
fn only_the_owner_programs_and_only_entries_the_device_has() {
    let sim = SimVtd::new();
    let mut alloc = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, QuarantineMode::Scratch);
    let mut g = lock.lock();
    for i in [0, 2] {
        add(&mut g, &mut alloc, &cast(i)).unwrap();
    }
    let a = passthrough::create_domain(&mut g, &mut alloc, "a", 8).unwrap();
    let b = passthrough::create_domain(&mut g, &mut alloc, "b", 8).unwrap();
    let dom_io = g.state().dom_io();
    let dev = cast(0).sbdf;
    assert!(matches!(
        passthrough::program_interrupt(&mut g, dom_io, dev, 0, TARGET),
        Err(PassthroughError::NotOwner { .. })
    ));
    passthrough::assign(&mut g, &mut alloc, a, dev).unwrap();
    assert!(matches!(
        passthrough::program_interrupt(&mut g, b, dev, 0, TARGET),
        Err(PassthroughError::NotOwner { .. })
    ));
    assert_eq!(
        passthrough::program_interrupt(&mut g, a, dev, 1, TARGET),
        Err(PassthroughError::NoInterruptEntry {
            sbdf: dev,
            entry: 1
        })
    );
    assert_eq!(delivering_indices(&sim, cast(0).rids[0]), []);
}

#[test]
fn deassign_and_destroy_block_entries_the_cache_still_holds_in_the_switch_batch() {
    let sim = SimVtd::new();
    let mut alloc = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, QuarantineMode::Scratch);
    let mut g = lock.lock();
    let dev = cast(0);
    add(&mut g, &mut alloc, &dev).unwrap();
    let dom = passthrough::create_domain(&mut g, &mut alloc, "guest", 8).unwrap();
    for destroy in [false, true] {
        passthrough::assign(&mut g, &mut alloc, dom, dev.sbdf).unwrap();
        let msi = passthrough::program_interrupt(&mut g, dom, dev.sbdf, 0, TARGET).unwrap();
        assert!(sim.msi(dev.rids[0], msi.address, msi.data).is_ok());
        assert!(
            sim.cached_interrupt_entries() > 0,
            "the IEC holds the entry"
        );
        let before = sim.effects().len();
        if destroy {
            passthrough::destroy_domain(&mut g, &mut alloc, dom).unwrap();
        } else {
            let back = passthrough::deassign(&mut g, dom, dev.sbdf).unwrap();
            assert_eq!(
                (
                    back.cost.descriptors,
                    back.cost.waits,
                    back.cost.mmio_writes
                ),
                (3, 1, 1),
                "context + IOTLB + IEC descriptors, one wait, one doorbell"
            );
        }
        assert_eq!(
            sim.msi(dev.rids[0], msi.address, msi.data)
                .map_err(|f| f.reason),
            Err(0x22),
            "blocked after {}",
            if destroy { "destroy" } else { "deassign" }
        );
        // The switch batch is context, fence, IOTLB and IEC, final wait (destroy then flushes
        // the guest's domain ID in a batch of its own): one IEC, at most the fence before it.
        let effects = &sim.effects()[before..];
        let iec: Vec<usize> = (0..effects.len()).filter(|i| is_iec(effects[*i])).collect();
        assert_eq!(iec.len(), 1, "one IEC descriptor: {effects:x?}");
        let waits_before = effects[..iec[0]].iter().filter(|d| is_wait(**d)).count();
        assert!(
            waits_before <= 1,
            "the IEC rides in the switch batch: {effects:x?}"
        );
    }
    assert_eq!(g.state().stats().interrupt_block_failures, 0);
}

/// Descriptor type 4 (§6.5.2.7), decoded here from the spec.
fn is_iec(d: u128) -> bool {
    d as u64 & 0xf == 4
}

/// Wait descriptor (type 5, §6.5.2.8).
fn is_wait(d: u128) -> bool {
    d as u64 & 0xf == 5
}

#[test]
fn blocking_a_group_on_quarantine_allocates_no_heap_and_no_frames() {
    let sim = SimVtd::new();
    let mut alloc = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, QuarantineMode::Scratch);
    let mut g = lock.lock();
    for i in [3, 4] {
        add(&mut g, &mut alloc, &cast(i)).unwrap();
    }
    let dom = passthrough::create_domain(&mut g, &mut alloc, "guest", 8).unwrap();
    passthrough::assign(&mut g, &mut alloc, dom, cast(3).sbdf).unwrap();
    for i in [3, 4] {
        passthrough::program_interrupt(&mut g, dom, cast(i).sbdf, 0, TARGET).unwrap();
    }
    let attempts = alloc.allocation_attempts();
    let leader = cast(3).sbdf;
    let (report, heap) =
        heap_allocations_during(|| passthrough::deassign(&mut g, dom, leader).unwrap());
    assert_eq!(
        heap, 0,
        "deassign (blocking interrupts) allocated on the heap"
    );
    assert_eq!(
        alloc.allocation_attempts(),
        attempts,
        "frames were allocated"
    );
    for rid in cast(3).rids.iter().chain(&cast(4).rids) {
        assert_eq!(delivering_indices(&sim, *rid), [], "{rid}");
    }
    assert_eq!(report.cost.waits, 1, "the whole group in one wait");
}

#[test]
fn assign_is_refused_without_interrupt_remapping_unless_allowed() {
    let sim = SimVtd::with_caps(DEFAULT_CAP, DEFAULT_ECAP & !(1 << 3));
    let mut alloc = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, QuarantineMode::Scratch);
    let mut g = lock.lock();
    let dev = cast(0);
    add(&mut g, &mut alloc, &dev).unwrap();
    assert!(g.state().interrupts_of(dev.sbdf).is_none());
    let dom = passthrough::create_domain(&mut g, &mut alloc, "guest", 8).unwrap();
    let before = snapshot(&g, &alloc);
    assert_eq!(
        passthrough::assign(&mut g, &mut alloc, dom, dev.sbdf).map(drop),
        Err(PassthroughError::NoInterruptRemapping(dev.sbdf))
    );
    assert_eq!(snapshot(&g, &alloc), before, "a refusal changes nothing");
    g.require_interrupt_remapping(false);
    passthrough::assign(&mut g, &mut alloc, dom, dev.sbdf).unwrap();
    assert_eq!(
        passthrough::program_interrupt(&mut g, dom, dev.sbdf, 0, TARGET),
        Err(PassthroughError::NoInterruptEntry {
            sbdf: dev.sbdf,
            entry: 0
        })
    );
}

#[test]
fn blocked_interrupts_are_attributed_and_count_toward_the_threshold() {
    let sim = SimVtd::new();
    let mut alloc = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, QuarantineMode::Scratch);
    let mut g = lock.lock();
    let dev = cast(0);
    add(&mut g, &mut alloc, &dev).unwrap();
    let mut disabled = Vec::new();
    let mut kinds = Vec::new();
    for n in 0..THRESHOLD {
        assert!(sim.msi(dev.rids[0], remappable(7), 0).is_err());
        let report = passthrough::drain_faults(&mut g, u64::from(n), &mut |s| {
            disabled.push(s);
            true
        });
        kinds.extend(report.recorded.iter().map(|f| f.kind));
    }
    assert_eq!(
        kinds.len(),
        THRESHOLD as usize,
        "every blocked MSI recorded"
    );
    assert!(kinds
        .iter()
        .all(|k| *k == FaultKind::Interrupt { index: Some(7) }));
    let d = g.state().device(dev.sbdf).unwrap();
    assert_eq!(d.interrupt_faults(), u64::from(THRESHOLD));
    assert_eq!(d.faults().total, u64::from(THRESHOLD));
    assert_eq!(disabled, [dev.sbdf], "bus mastering off past the threshold");
    assert!(d.bus_master_disabled());
}

#[test]
fn a_bridged_device_delivers_through_its_alias_and_its_neighbours_do_not() {
    let sim = SimVtd::new();
    let mut alloc = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, QuarantineMode::Scratch);
    let mut g = lock.lock();
    for i in [0, 3, 4] {
        add(&mut g, &mut alloc, &cast(i)).unwrap();
    }
    let dom = passthrough::create_domain(&mut g, &mut alloc, "guest", 8).unwrap();
    passthrough::assign(&mut g, &mut alloc, dom, cast(3).sbdf).unwrap();
    let msi = passthrough::program_interrupt(&mut g, dom, cast(3).sbdf, 0, TARGET).unwrap();
    // Conventional PCI behind the PCIe-to-PCI bridge: its MSI may carry either alias.
    for rid in cast(3).rids {
        let got = sim.msi(rid, msi.address, msi.data).map(|i| i.vector);
        assert_eq!(got, Ok(0x41), "{rid}");
    }
    // A device outside the group with the same handle fails the source-ID check.
    assert_eq!(
        sim.msi(cast(0).rids[0], msi.address, msi.data)
            .map_err(|f| f.reason),
        Err(0x26)
    );
}

/// A deassign whose batch does not complete — the queue hangs (its descriptors run later),
/// or the unit refuses the IEC descriptor and skips it (IQE, §6.5.2.10) — is reported and
/// counted, and the next flush, whatever it is for, leaves no stale entry behind.
#[test]
fn a_deassign_whose_batch_fails_is_counted_and_the_next_flush_drops_the_entry() {
    use lazaret_vtd::sim_device::{QueueFault, DEAD_QUEUE};
    for skipped in [false, true] {
        let sim = SimVtd::new();
        let mut alloc = new_alloc(&sim);
        let lock = new_lock(&sim, &mut alloc, QuarantineMode::Scratch);
        let mut g = lock.lock();
        let (dev, other) = (cast(0), cast(2));
        add(&mut g, &mut alloc, &dev).unwrap();
        add(&mut g, &mut alloc, &other).unwrap();
        let dom = passthrough::create_domain(&mut g, &mut alloc, "guest", 8).unwrap();
        passthrough::assign(&mut g, &mut alloc, dom, dev.sbdf).unwrap();
        let msi = passthrough::program_interrupt(&mut g, dom, dev.sbdf, 0, TARGET).unwrap();
        assert!(sim.msi(dev.rids[0], msi.address, msi.data).is_ok());
        if skipped {
            sim.inject_queue_fault(QueueFault::InvalidInterruptEntry);
        } else {
            sim.set_dead(DEAD_QUEUE);
        }
        let back = passthrough::deassign(&mut g, dom, dev.sbdf).unwrap();
        assert!(back.timed_out.is_some(), "{back:?}");
        let stats = g.state().stats();
        assert_eq!(
            (stats.switch_timeouts, stats.interrupt_block_failures),
            (1, 1)
        );
        assert_eq!(g.state().owner_of(dev.sbdf), Some(g.state().dom_io()));
        if skipped {
            assert!(
                sim.msi(dev.rids[0], msi.address, msi.data).is_ok(),
                "the simulator kept the stale entry"
            );
        }
        sim.set_dead(0);
        passthrough::assign(&mut g, &mut alloc, dom, other.sbdf).unwrap();
        assert_eq!(
            sim.msi(dev.rids[0], msi.address, msi.data)
                .map_err(|f| f.reason),
            Err(0x22),
            "skipped: {skipped}"
        );
    }
}
