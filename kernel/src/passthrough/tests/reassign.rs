//! `reassign`: a device moves from one guest straight to another in one switch, never
//! through quarantine; refusals change nothing; round after round, every requester ID
//! reaches only its current owner (expectations from the guests' memory maps, through the
//! reference walker).
use lazaret_vtd::sim_device::SimVtd;

use super::fixture::*;
use crate::cmdline::QuarantineMode;
use crate::domain::DomainId;
use crate::passthrough::{self, PassthroughError};

/// Where `d`'s IDs must land for owner `dom` at a few guest-physical addresses.
fn assert_owned_by(g: &Guard<'_, '_>, d: &Dev, dom: DomainId, round: usize) {
    let memory = &g.state().domains().get(dom).unwrap().memory;
    for rid in &d.rids {
        for gpa in [0, 0x1000, 0x3abc] {
            assert_eq!(
                reach(g, *rid, gpa).ok(),
                memory.host_address(gpa),
                "round {round}: {rid} at {gpa:#x}"
            );
        }
    }
    assert_eq!(g.state().owner_of(d.sbdf), Some(dom), "round {round}");
}

#[test]
fn reassign_moves_a_device_between_guests_in_one_switch_round_after_round() {
    let sim = SimVtd::new();
    let mut alloc = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, QuarantineMode::Scratch);
    let mut g = lock.lock();
    // A phantom-function device and the alias group: both move whole.
    let (d, grouped) = (cast(2), [cast(3), cast(4)]);
    for x in [&d, &grouped[0], &grouped[1]] {
        add(&mut g, &mut alloc, x).unwrap();
    }
    let a = passthrough::create_domain(&mut g, &mut alloc, "a", 4).unwrap();
    let b = passthrough::create_domain(&mut g, &mut alloc, "b", 4).unwrap();
    passthrough::assign(&mut g, &mut alloc, a, d.sbdf).unwrap();
    passthrough::assign(&mut g, &mut alloc, a, grouped[1].sbdf).unwrap();
    let switches = g.state().stats().owner_switches;
    let mut owner = (a, b);
    for round in 0..300 {
        let report = passthrough::reassign(&mut g, &mut alloc, owner.0, owner.1, d.sbdf).unwrap();
        assert!(report.clean(), "round {round}");
        let report =
            passthrough::reassign(&mut g, &mut alloc, owner.0, owner.1, grouped[0].sbdf).unwrap();
        assert_eq!(report.moved.len(), 2, "the alias group moves whole");
        for x in [&d, &grouped[0], &grouped[1]] {
            assert_owned_by(&g, x, owner.1, round);
        }
        owner = (owner.1, owner.0);
    }
    assert_eq!(
        g.state().stats().owner_switches - switches,
        600,
        "one switch per reassign"
    );
}

#[test]
fn a_refused_reassign_changes_nothing() {
    let sim = SimVtd::new();
    let mut alloc = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, QuarantineMode::Scratch);
    let mut g = lock.lock();
    let (d, other) = (cast(0), cast(2));
    add(&mut g, &mut alloc, &d).unwrap();
    add(&mut g, &mut alloc, &other).unwrap();
    let a = passthrough::create_domain(&mut g, &mut alloc, "a", 4).unwrap();
    let b = passthrough::create_domain(&mut g, &mut alloc, "b", 4).unwrap();
    passthrough::assign(&mut g, &mut alloc, a, d.sbdf).unwrap();
    let dom_io = g.state().dom_io();
    let before = snapshot(&g, &alloc);
    let refusals = [
        // Not the owner: b does not hold d; nobody holds `other` but DomIO.
        (
            passthrough::reassign(&mut g, &mut alloc, b, a, d.sbdf).map(drop),
            Err(PassthroughError::AlreadyAssigned {
                sbdf: d.sbdf,
                owner: a,
            }),
        ),
        (
            passthrough::reassign(&mut g, &mut alloc, a, b, other.sbdf).map(drop),
            Err(PassthroughError::NotOwner {
                sbdf: other.sbdf,
                owner: dom_io,
            }),
        ),
        (
            passthrough::reassign(&mut g, &mut alloc, a, a, d.sbdf).map(drop),
            Err(PassthroughError::AlreadyAssigned {
                sbdf: d.sbdf,
                owner: a,
            }),
        ),
        (
            passthrough::reassign(&mut g, &mut alloc, dom_io, b, d.sbdf).map(drop),
            Err(PassthroughError::NotAGuest(dom_io)),
        ),
    ];
    for (i, (got, want)) in refusals.into_iter().enumerate() {
        assert_eq!(got, want, "refusal {i}");
    }
    assert_eq!(
        snapshot(&g, &alloc),
        before,
        "a refused reassign changed state"
    );
    // A third guest that does not own it either.
    let c = passthrough::create_domain(&mut g, &mut alloc, "c", 4).unwrap();
    assert_eq!(
        passthrough::reassign(&mut g, &mut alloc, b, c, d.sbdf).map(drop),
        Err(PassthroughError::NotOwner {
            sbdf: d.sbdf,
            owner: a
        })
    );
}

#[test]
fn reassign_blocks_the_old_owners_interrupts_in_its_one_switch() {
    use crate::passthrough::iommu::InterruptTarget;
    let sim = SimVtd::new();
    let mut alloc = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, QuarantineMode::Scratch);
    let mut g = lock.lock();
    let d = cast(0);
    add(&mut g, &mut alloc, &d).unwrap();
    let a = passthrough::create_domain(&mut g, &mut alloc, "a", 4).unwrap();
    let b = passthrough::create_domain(&mut g, &mut alloc, "b", 4).unwrap();
    passthrough::assign(&mut g, &mut alloc, a, d.sbdf).unwrap();
    // Guest a's vector on guest a's CPU.
    let target = InterruptTarget {
        vector: 0x51,
        apic_id: 1,
    };
    let msi = passthrough::program_interrupt(&mut g, a, d.sbdf, 0, target).unwrap();
    assert_eq!(
        sim.msi(d.rids[0], msi.address, msi.data).unwrap().vector,
        0x51
    );
    let moved = passthrough::reassign(&mut g, &mut alloc, a, b, d.sbdf).unwrap();
    assert_eq!(moved.cost.waits, 1, "{moved:?}");
    assert_eq!(
        sim.msi(d.rids[0], msi.address, msi.data)
            .map_err(|f| f.reason),
        Err(0x22),
        "a's interrupt does not follow the device to b"
    );
    let msi = passthrough::program_interrupt(&mut g, b, d.sbdf, 0, target).unwrap();
    assert!(sim.msi(d.rids[0], msi.address, msi.data).is_ok(), "b's own");
}
