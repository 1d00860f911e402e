//! Refused requests: each fails with the error that names the reason, and leaves every
//! owner, every requester ID's translations and the frame count exactly as they were.
use alloc::vec;

use lazaret_types::sim::SimFrameAllocator;
use lazaret_vtd::sim_device::SimVtd;

use super::fixture::*;
use crate::cmdline::QuarantineMode;
use crate::domain::DomainId;
use crate::passthrough::iommu::ReservedRange;
use crate::passthrough::{self, DeviceKind, PassthroughError};

/// Devices 0-5 of the cast plus 00:06.0, whose RMRR overlaps device 1's; guest `a` (4 pages)
/// owns device 0, guest `b` has 16 pages; `dead` was destroyed and its slot reused.
struct Scene {
    a: DomainId,
    b: DomainId,
    dead: DomainId,
    overlapping: Dev,
}

fn scene(g: &mut Guard<'_, '_>, alloc: &mut SimFrameAllocator<'_>) -> Scene {
    for i in 0..CAST {
        add(g, alloc, &cast(i)).unwrap();
    }
    let overlapping = Dev {
        sbdf: sbdf(0, 6, 0),
        rids: vec![bdf(0, 6, 0)],
        reserved: vec![ReservedRange::read_write(
            HIGH_RMRR.start + 0x1000,
            HIGH_RMRR.start + 0x2fff,
        )],
    };
    add(g, alloc, &overlapping).unwrap();
    let a = passthrough::create_domain(g, alloc, "a", 4).unwrap();
    let b = passthrough::create_domain(g, alloc, "b", 16).unwrap();
    passthrough::assign(g, alloc, a, cast(0).sbdf).unwrap();
    let dead = passthrough::create_domain(g, alloc, "dead", 1).unwrap();
    passthrough::destroy_domain(g, alloc, dead).unwrap();
    let reused = passthrough::create_domain(g, alloc, "reused", 1).unwrap();
    assert_eq!(reused.index(), dead.index(), "the arena slot is reused");
    Scene {
        a,
        b,
        dead,
        overlapping,
    }
}

/// Runs `op` and checks it fails with `expected` and changes nothing.
fn refused(
    g: &mut Guard<'_, '_>,
    alloc: &mut SimFrameAllocator<'_>,
    expected: PassthroughError,
    op: impl FnOnce(&mut Guard<'_, '_>, &mut SimFrameAllocator<'_>) -> Result<(), PassthroughError>,
) {
    let before = snapshot(g, alloc);
    assert_eq!(op(g, alloc), Err(expected.clone()));
    assert_eq!(snapshot(g, alloc), before, "{expected} changed state");
}

#[test]
fn refused_requests_change_nothing() {
    let sim = SimVtd::new();
    let mut alloc = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, QuarantineMode::Scratch);
    let mut g = lock.lock();
    let s = scene(&mut g, &mut alloc);
    let (dom_io, hypervisor) = (g.state().domains.dom_io, g.state().domains.hypervisor);
    let ghost = sbdf(9, 9, 1);
    let (d0, d1, d5) = (cast(0).sbdf, cast(1).sbdf, cast(5).sbdf);
    let assign = |dom: DomainId, dev| {
        move |g: &mut Guard<'_, '_>, a: &mut SimFrameAllocator<'_>| {
            passthrough::assign(g, a, dom, dev).map(drop)
        }
    };
    let deassign = |dom: DomainId, dev| {
        move |g: &mut Guard<'_, '_>, _: &mut SimFrameAllocator<'_>| {
            passthrough::deassign(g, dom, dev).map(drop)
        }
    };
    use PassthroughError::*;
    let (g, alloc) = (&mut g, &mut alloc);
    refused(g, alloc, UnknownDevice(ghost), assign(s.b, ghost));
    refused(g, alloc, UnknownDevice(ghost), deassign(s.a, ghost));
    refused(
        g,
        alloc,
        UnknownDomain(s.dead),
        assign(s.dead, cast(2).sbdf),
    );
    refused(
        g,
        alloc,
        NotOwner {
            sbdf: d0,
            owner: s.a,
        },
        deassign(s.dead, d0),
    );
    refused(g, alloc, UnknownDomain(s.dead), |g, a| {
        passthrough::destroy_domain(g, a, s.dead).map(|_| ())
    });
    refused(
        g,
        alloc,
        NotOwner {
            sbdf: d0,
            owner: s.a,
        },
        deassign(s.b, d0),
    );
    refused(
        g,
        alloc,
        NotOwner {
            sbdf: d1,
            owner: dom_io,
        },
        deassign(dom_io, d1),
    );
    refused(
        g,
        alloc,
        NotOwner {
            sbdf: d1,
            owner: dom_io,
        },
        deassign(s.b, d1),
    );
    refused(
        g,
        alloc,
        AlreadyAssigned {
            sbdf: d0,
            owner: s.a,
        },
        assign(s.b, d0),
    );
    refused(
        g,
        alloc,
        AlreadyAssigned {
            sbdf: d0,
            owner: s.a,
        },
        assign(s.a, d0),
    );
    refused(g, alloc, NotAGuest(dom_io), assign(dom_io, d1));
    refused(g, alloc, NotAGuest(hypervisor), assign(hypervisor, d1));
    refused(g, alloc, NotAGuest(dom_io), |g, a| {
        passthrough::destroy_domain(g, a, dom_io).map(|_| ())
    });
    refused(
        g,
        alloc,
        SharedReserved {
            sbdf: d1,
            other: s.overlapping.sbdf,
        },
        assign(s.b, d1),
    );
    refused(
        g,
        alloc,
        SharedReserved {
            sbdf: s.overlapping.sbdf,
            other: d1,
        },
        assign(s.b, s.overlapping.sbdf),
    );
    refused(
        g,
        alloc,
        ReservedInGuestMemory {
            sbdf: d5,
            range: LOW_RMRR,
        },
        assign(s.b, d5),
    );
    // Registering twice, or joining an alias group whose member is owned by a guest.
    refused(g, alloc, DeviceExists(d0), |g, a| {
        add(g, a, &cast(0)).map(drop)
    });
    let joiner = Dev {
        sbdf: sbdf(0, 7, 0),
        rids: vec![bdf(0, 7, 0), d0.bdf],
        reserved: vec![],
    };
    refused(
        g,
        alloc,
        SharedAlias {
            sbdf: joiner.sbdf,
            alias: d0.bdf,
            other: d0,
        },
        |g, a| add(g, a, &joiner).map(drop),
    );
    // The low-RMRR device fits a guest whose memory ends below its range.
    passthrough::assign(g, alloc, s.a, d5).unwrap();
    assert_eq!(
        reach(g, d5.bdf, LOW_RMRR.start),
        Ok(lazaret_types::PhysAddr(LOW_RMRR.start))
    );
}

#[test]
fn a_device_with_more_requester_ids_than_a_switch_holds_is_refused() {
    let sim = SimVtd::new();
    let mut alloc = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, QuarantineMode::Scratch);
    let mut g = lock.lock();
    let count = crate::passthrough::iommu::MAX_REQUESTER_IDS + 1;
    let big = Dev {
        sbdf: sbdf(0, 9, 0),
        rids: (0..count as u8).map(|d| bdf(1, d, 0)).collect(),
        reserved: vec![],
    };
    refused(
        &mut g,
        &mut alloc,
        PassthroughError::TooManyRequesterIds {
            sbdf: big.sbdf,
            count,
        },
        |g, alloc| add(g, alloc, &big).map(|_| ()),
    );
}

#[test]
fn an_alias_group_moves_in_one_call_and_a_bridge_is_never_assigned() {
    let sim = SimVtd::new();
    let mut alloc = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, QuarantineMode::Scratch);
    let mut g = lock.lock();
    let (d3, d4) = (cast(3), cast(4));
    add(&mut g, &mut alloc, &d3).unwrap();
    add(&mut g, &mut alloc, &d4).unwrap();
    let bridge = sbdf(0, 0x1e, 0);
    passthrough::add_device(
        &mut g,
        &mut alloc,
        bridge,
        DeviceKind::Bridge,
        vec![bridge.bdf],
        vec![],
    )
    .unwrap();
    let dom = passthrough::create_domain(&mut g, &mut alloc, "g", 4).unwrap();
    let before = snapshot(&g, &alloc);
    assert_eq!(
        passthrough::assign(&mut g, &mut alloc, dom, bridge).map(drop),
        Err(PassthroughError::Bridge(bridge))
    );
    assert_eq!(
        snapshot(&g, &alloc),
        before,
        "a refused bridge changed state"
    );
    // Assigning one member of the alias group moves both: one entry serves them all.
    passthrough::assign(&mut g, &mut alloc, dom, d3.sbdf).unwrap();
    for d in [&d3, &d4] {
        assert_eq!(g.state().owner_of(d.sbdf), Some(dom), "{}", d.sbdf);
        for rid in &d.rids {
            let gpa = 0x1000;
            assert_eq!(
                reach(&g, *rid, gpa).ok(),
                g.state()
                    .domains()
                    .get(dom)
                    .unwrap()
                    .memory
                    .host_address(gpa),
                "{rid} follows the group"
            );
        }
    }
    passthrough::deassign(&mut g, dom, d4.sbdf).unwrap();
    let dom_io = g.state().dom_io();
    assert!([&d3, &d4]
        .iter()
        .all(|d| g.state().owner_of(d.sbdf) == Some(dom_io)));
}
