//! Alias groups behind a PCIe-to-PCI bridge, as QEMU builds them: bridge 00:10.0 (secondary
//! bus 1) with conventional functions 01:01.0 and 01:02.0, whose DMA may carry their own ID,
//! the bridge's ID or (01:00.0) — the IDs Xen's rule gives them. The group is the two
//! functions; the bridge is carried. In quarantine the shared IDs reach the leader's
//! (01:01.0's) scratch page, each function's own ID its own page.
//!
//! Expectations are written out here (which page each ID must reach), never taken from the
//! core's group or leader functions, and checked through the reference walker.
use alloc::vec;
use alloc::vec::Vec;

use lazaret_types::sim::{SimFrameAllocator, SimMemory};
use lazaret_types::{Bdf, PhysAddr, PhysMem, Sbdf, PAGE_SIZE};
use lazaret_vtd::sim_device::SimVtd;

use super::fixture::*;
use crate::cmdline::QuarantineMode;
use crate::domain::DomainId;
use crate::passthrough::{self, DeviceKind, PassthroughError};

const BRIDGE: (u8, u8, u8) = (0, 0x10, 0);
const LEADER: (u8, u8, u8) = (1, 1, 0);
const SECOND: (u8, u8, u8) = (1, 2, 0);
const SECONDARY_ALIAS: (u8, u8, u8) = (1, 0, 0);
const LONER: (u8, u8, u8) = (0, 1, 0);

fn s((b, d, f): (u8, u8, u8)) -> Sbdf {
    sbdf(b, d, f)
}

fn b((bus, d, f): (u8, u8, u8)) -> Bdf {
    bdf(bus, d, f)
}

/// Registers the topology in `order` (indices: 0 bridge, 1 leader, 2 second, 3 loner).
fn add_in_order(g: &mut Guard<'_, '_>, alloc: &mut SimFrameAllocator<'_>, order: &[usize]) {
    for &i in order {
        let (at, kind, rids) = match i {
            0 => (BRIDGE, DeviceKind::Bridge, vec![b(BRIDGE)]),
            1 => (
                LEADER,
                DeviceKind::ConventionalPci,
                vec![b(BRIDGE), b(SECONDARY_ALIAS), b(LEADER)],
            ),
            2 => (
                SECOND,
                DeviceKind::ConventionalPci,
                vec![b(BRIDGE), b(SECONDARY_ALIAS), b(SECOND)],
            ),
            _ => (LONER, DeviceKind::PcieEndpoint, vec![b(LONER)]),
        };
        passthrough::add_device(g, alloc, s(at), kind, rids, vec![]).unwrap();
    }
}

fn scratch(g: &Guard<'_, '_>, at: (u8, u8, u8)) -> PhysAddr {
    g.state().scratch_page(s(at)).unwrap()
}

/// The page a write from `rid` reaches, for every sample IOVA (one page for all of them).
fn reaches(g: &Guard<'_, '_>, rid: (u8, u8, u8)) -> Vec<Result<PhysAddr, alloc::string::String>> {
    [0, 0x1000, 0x7000, 0x0fff_f000]
        .iter()
        .map(|iova| reach_page(g, b(rid), *iova))
        .collect()
}

/// In scratch-mode quarantine: the bridge's ID and the secondary-bus alias reach the
/// leader's scratch page, each function's own ID its own scratch page.
fn assert_quarantined_as_one(g: &Guard<'_, '_>) {
    let (leader, second) = (scratch(g, LEADER), scratch(g, SECOND));
    assert_ne!(leader, second, "each function keeps its own scratch page");
    for (rid, page, why) in [
        (BRIDGE, leader, "the bridge's ID is shared: leader"),
        (
            SECONDARY_ALIAS,
            leader,
            "the secondary-bus alias is shared: leader",
        ),
        (LEADER, leader, "the leader's own ID"),
        (SECOND, second, "the second function's own ID"),
    ] {
        assert!(
            reaches(g, rid).iter().all(|r| *r == Ok(page)),
            "{}: {why}: {:?}",
            b(rid),
            reaches(g, rid)
        );
    }
    let dom_io = g.state().dom_io();
    for at in [BRIDGE, LEADER, SECOND] {
        assert_eq!(g.state().owner_of(s(at)), Some(dom_io), "{}", s(at));
    }
}

fn assert_in_guest(g: &Guard<'_, '_>, dom: DomainId) {
    let memory = &g.state().domains().get(dom).unwrap().memory;
    for rid in [BRIDGE, SECONDARY_ALIAS, LEADER, SECOND] {
        for gpa in [0, 0x1000, 0x3000] {
            assert_eq!(
                reach(g, b(rid), gpa).ok(),
                memory.host_address(gpa),
                "{} follows the group into the guest",
                b(rid)
            );
        }
    }
    for at in [BRIDGE, LEADER, SECOND] {
        assert_eq!(g.state().owner_of(s(at)), Some(dom), "{}", s(at));
    }
}

fn dirty(mem: &SimMemory, page: PhysAddr) {
    mem.write_bytes(page, &[0xa5; PAGE_SIZE as usize]);
}

#[test]
fn the_group_is_its_functions_and_carries_the_bridge_whatever_the_order_they_were_added_in() {
    for order in [[0, 1, 2, 3], [0, 2, 1, 3], [2, 3, 0, 1], [3, 2, 1, 0]] {
        let sim = SimVtd::new();
        let mut alloc = new_alloc(&sim);
        let lock = new_lock(&sim, &mut alloc, QuarantineMode::Scratch);
        let mut g = lock.lock();
        add_in_order(&mut g, &mut alloc, &order);
        let st = g.state();
        let expected: Vec<Sbdf> = vec![s(BRIDGE), s(LEADER), s(SECOND)];
        for at in [BRIDGE, LEADER, SECOND] {
            let group = st.group_of(s(at));
            assert_eq!(
                group.as_slice(),
                expected.as_slice(),
                "{order:?}: {}",
                s(at)
            );
            assert_eq!(
                st.members_of(&group, false).as_slice(),
                &[s(LEADER), s(SECOND)],
                "{order:?}"
            );
            assert_eq!(st.members_of(&group, true).as_slice(), &[s(BRIDGE)]);
            assert_eq!(st.leader(&group), Some(s(LEADER)), "{order:?}");
        }
        assert_eq!(st.group_of(s(LONER)).as_slice(), &[s(LONER)]);
        // Faults on a shared ID are attributed to the leader, whose page the DMA reached.
        assert_eq!(
            st.device_by_requester(0, b(BRIDGE)).map(|d| d.sbdf()),
            Some(s(LEADER))
        );
        // A member's own ID is only its own: its faults are its own.
        assert_eq!(
            st.device_by_requester(0, b(SECOND)).map(|d| d.sbdf()),
            Some(s(SECOND)),
            "{order:?}"
        );
        assert_quarantined_as_one(&g);
        assert_eq!(
            reaches(&g, LONER)[0],
            Ok(scratch(&g, LONER)),
            "an unrelated device keeps its own page"
        );
    }
}

#[test]
fn a_bridge_is_refused_on_its_own_and_the_refusal_changes_nothing() {
    let sim = SimVtd::new();
    let mut alloc = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, QuarantineMode::Scratch);
    let mut g = lock.lock();
    add_in_order(&mut g, &mut alloc, &[0, 1, 2, 3]);
    let dom = passthrough::create_domain(&mut g, &mut alloc, "g", 4).unwrap();
    let before = snapshot(&g, &alloc);
    assert_eq!(
        passthrough::assign(&mut g, &mut alloc, dom, s(BRIDGE)).map(drop),
        Err(PassthroughError::Bridge(s(BRIDGE)))
    );
    assert_eq!(
        snapshot(&g, &alloc),
        before,
        "a refused bridge changed state"
    );
    // Carried into the guest, it still cannot leave on its own.
    passthrough::assign(&mut g, &mut alloc, dom, s(SECOND)).unwrap();
    let before = snapshot(&g, &alloc);
    assert_eq!(
        passthrough::deassign(&mut g, dom, s(BRIDGE)).map(drop),
        Err(PassthroughError::Bridge(s(BRIDGE)))
    );
    assert_eq!(
        snapshot(&g, &alloc),
        before,
        "a refused bridge changed state"
    );
}

#[test]
fn assign_moves_the_group_with_its_bridge_and_deassign_brings_it_back_zeroed() {
    let sim = SimVtd::new();
    let mut alloc = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, QuarantineMode::Scratch);
    let mut g = lock.lock();
    add_in_order(&mut g, &mut alloc, &[0, 2, 1, 3]);
    let dom = passthrough::create_domain(&mut g, &mut alloc, "g", 4).unwrap();
    let report = passthrough::assign(&mut g, &mut alloc, dom, s(SECOND)).unwrap();
    assert_eq!(report.moved.as_slice(), &[s(LEADER), s(SECOND)]);
    assert_eq!(report.carried.as_slice(), &[s(BRIDGE)]);
    assert_in_guest(&g, dom);
    assert_eq!(g.state().owner_of(s(LONER)), Some(g.state().dom_io()));
    // The group is assigned: no member (nor the bridge) can go to another guest.
    let other = passthrough::create_domain(&mut g, &mut alloc, "h", 4).unwrap();
    assert!(matches!(
        passthrough::assign(&mut g, &mut alloc, other, s(LEADER)),
        Err(PassthroughError::AlreadyAssigned { .. })
    ));
    for at in [LEADER, SECOND] {
        dirty(&sim.mem, scratch(&g, at));
    }
    let report = passthrough::deassign(&mut g, dom, s(LEADER)).unwrap();
    assert_eq!(report.moved.as_slice(), &[s(LEADER), s(SECOND)]);
    assert_eq!(report.carried.as_slice(), &[s(BRIDGE)]);
    assert_quarantined_as_one(&g);
    for at in [LEADER, SECOND] {
        assert!(
            page_is_zero(&sim.mem, scratch(&g, at)),
            "{}'s scratch page zeroed on re-entry",
            s(at)
        );
    }
}

#[test]
fn destroy_brings_the_group_and_its_bridge_back_and_counts_the_bridge_apart() {
    let sim = SimVtd::new();
    let mut alloc = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, QuarantineMode::Scratch);
    let mut g = lock.lock();
    add_in_order(&mut g, &mut alloc, &[3, 2, 1, 0]);
    let dom = passthrough::create_domain(&mut g, &mut alloc, "g", 4).unwrap();
    passthrough::assign(&mut g, &mut alloc, dom, s(LEADER)).unwrap();
    passthrough::assign(&mut g, &mut alloc, dom, s(LONER)).unwrap();
    for at in [LEADER, SECOND] {
        dirty(&sim.mem, scratch(&g, at));
    }
    let report = passthrough::destroy_domain(&mut g, &mut alloc, dom).unwrap();
    assert_eq!(
        report.devices, 3,
        "two functions of the group and the loner"
    );
    assert_eq!(report.carried_bridges, 1);
    assert!(!report.parked);
    assert_quarantined_as_one(&g);
    for at in [LEADER, SECOND] {
        assert!(page_is_zero(&sim.mem, scratch(&g, at)), "{}", s(at));
    }
}

#[test]
fn basic_and_none_block_every_id_of_the_group() {
    for mode in [QuarantineMode::Basic, QuarantineMode::None] {
        let sim = SimVtd::new();
        let mut alloc = new_alloc(&sim);
        let lock = new_lock(&sim, &mut alloc, mode);
        let mut g = lock.lock();
        add_in_order(&mut g, &mut alloc, &[0, 2, 1]);
        let dom = passthrough::create_domain(&mut g, &mut alloc, "g", 4).unwrap();
        for round in 0..2 {
            for rid in [BRIDGE, SECONDARY_ALIAS, LEADER, SECOND] {
                assert!(
                    reaches(&g, rid).iter().all(|r| r.is_err()),
                    "{mode} round {round}: {} blocked",
                    b(rid)
                );
            }
            passthrough::assign(&mut g, &mut alloc, dom, s(LEADER)).unwrap();
            assert_in_guest(&g, dom);
            passthrough::deassign(&mut g, dom, s(SECOND)).unwrap();
        }
    }
}
