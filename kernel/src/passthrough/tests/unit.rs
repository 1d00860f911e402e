//! One operation at a time: what each quarantine mode, an assignment, a deassignment and a
//! destruction leave behind, read back through the reference walker.
use alloc::collections::BTreeSet;
use alloc::vec::Vec;

use lazaret_types::{FrameAllocator, PhysAddr, PhysMem, PAGE_SIZE};
use lazaret_vtd::sim_device::SimVtd;
use lazaret_vtd::Levels;

use super::fixture::*;
use crate::cmdline::QuarantineMode;
use crate::passthrough::{self, PassthroughError};

/// Sample IOVAs plus a few pseudo-random ones below 2^48 (xorshift, fixed seed: the test is
/// reproducible and still covers indices no hand-picked value would).
fn iovas() -> Vec<u64> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut v: Vec<u64> = SAMPLES.to_vec();
    for _ in 0..16 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x & ((1 << 48) - 1));
    }
    v
}

/// Devices 0 (plain) and 1 (high RMRR) added, a two-page guest, device 0 assigned to it.
fn plain_and_rmrr_devices_in_a_guest(
    g: &mut Guard<'_, '_>,
    alloc: &mut lazaret_types::sim::SimFrameAllocator<'_>,
) -> (Dev, Dev, crate::domain::DomainId) {
    let (plain, rmrr) = (cast(0), cast(1));
    add(g, alloc, &plain).unwrap();
    add(g, alloc, &rmrr).unwrap();
    let dom = passthrough::create_domain(g, alloc, "guest", 2).unwrap();
    passthrough::assign(g, alloc, dom, plain.sbdf).unwrap();
    (plain, rmrr, dom)
}

fn in_reserved(d: &Dev, iova: u64) -> bool {
    d.reserved.iter().any(|r| (r.start..=r.end).contains(&iova))
}

#[test]
fn scratch_mode_gives_each_device_levels_plus_one_pages_and_a_private_scratch_page() {
    let sim = SimVtd::new();
    let mut alloc = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, QuarantineMode::Scratch);
    let mut g = lock.lock();
    let levels = g.state().levels();
    let mut scratch_pages = BTreeSet::new();
    for i in [0, 2, 3] {
        let d = cast(i);
        let before = alloc.frames_in_use();
        let q = add(&mut g, &mut alloc, &d).unwrap();
        assert_eq!(q.pages, usize::from(levels) + 1, "{}", d.sbdf);
        // Device 0 is the first on bus 0, device 3 the first on buses 1 and 2: each new
        // bus also takes one context table.
        let new_buses = match i {
            0 => 1,
            3 => 2,
            _ => 0,
        };
        assert_eq!(alloc.frames_in_use() - before, q.pages + new_buses);
        let scratch = g.state().scratch_page(d.sbdf).unwrap();
        assert!(scratch_pages.insert(scratch), "scratch page shared");
        for rid in &d.rids {
            for iova in iovas() {
                for write in [false, true] {
                    let at = g.state().translate(sbdf_of(*rid), iova, write);
                    assert_eq!(
                        at,
                        Ok(PhysAddr(scratch.0 + iova % PAGE_SIZE)),
                        "{rid} {iova:#x} write {write}"
                    );
                }
            }
            // The programmed AW is the depth the tables were built with (XSA-445).
            let ctx = context_entry(&sim, *rid);
            assert!(ctx.present);
            assert_eq!(ctx.levels(), Some(Levels::Four));
            assert_eq!(ctx.levels().map(|l| l.count()), Some(u32::from(levels)));
            assert_eq!(ctx.domain_id, q.hw_domain_id);
        }
    }
    let dids: BTreeSet<u16> = g
        .state()
        .devices
        .values()
        .map(|d| d.quarantine_did)
        .collect();
    assert_eq!(
        dids.len(),
        3,
        "each quarantined device has its own domain ID"
    );
}

#[test]
fn basic_mode_without_rmrr_programs_no_context() {
    let sim = SimVtd::new();
    let mut alloc = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, QuarantineMode::Basic);
    let mut g = lock.lock();
    let d = cast(2);
    let q = add(&mut g, &mut alloc, &d).unwrap();
    assert_eq!(q.pages, 0);
    assert_eq!(g.state().scratch_page(d.sbdf), None);
    for rid in &d.rids {
        assert!(!context_entry(&sim, *rid).present);
        for iova in iovas() {
            let e = reach(&g, *rid, iova).unwrap_err();
            assert!(e.contains("ContextNotPresent"), "{e}");
        }
    }
}

#[test]
fn none_mode_blocks_everything_even_reserved_ranges() {
    let sim = SimVtd::new();
    let mut alloc = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, QuarantineMode::None);
    let mut g = lock.lock();
    for i in [0, 1] {
        let d = cast(i);
        assert_eq!(add(&mut g, &mut alloc, &d).unwrap().pages, 0);
        for iova in iovas() {
            let e = reach(&g, d.rids[0], iova).unwrap_err();
            assert!(e.contains("ContextNotPresent"), "{e}");
        }
    }
}

#[test]
fn reserved_ranges_are_identity_mapped_in_basic_and_scratch_mode() {
    for mode in [QuarantineMode::Basic, QuarantineMode::Scratch] {
        let sim = SimVtd::new();
        let mut alloc = new_alloc(&sim);
        let lock = new_lock(&sim, &mut alloc, mode);
        let mut g = lock.lock();
        for i in [1, 5] {
            let d = cast(i);
            add(&mut g, &mut alloc, &d).unwrap();
            let scratch = g.state().scratch_page(d.sbdf);
            assert_eq!(scratch.is_some(), mode == QuarantineMode::Scratch);
            let r = d.reserved[0];
            for iova in [r.start, r.start + 0x123, r.end & !0xfff, r.end] {
                assert_eq!(reach(&g, d.rids[0], iova), Ok(PhysAddr(iova)), "{mode:?}");
            }
            for iova in iovas().into_iter().filter(|a| !in_reserved(&d, *a)) {
                let at = reach_page(&g, d.rids[0], iova);
                match scratch {
                    Some(page) => assert_eq!(at, Ok(page), "{iova:#x}"),
                    None => assert!(at.unwrap_err().contains("PteNotPresent")),
                }
            }
            assert_eq!(
                context_entry(&sim, d.rids[0]).levels(),
                Some(Levels::Four),
                "AW matches the tables' depth"
            );
        }
    }
}

#[test]
fn assign_points_every_requester_id_at_the_guest_frames() {
    let sim = SimVtd::new();
    let mut alloc = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, QuarantineMode::Scratch);
    let mut g = lock.lock();
    let d = cast(2);
    add(&mut g, &mut alloc, &d).unwrap();
    let dom = passthrough::create_domain(&mut g, &mut alloc, "guest", 6).unwrap();
    passthrough::assign(&mut g, &mut alloc, dom, d.sbdf).unwrap();
    assert_eq!(g.state().devices[&d.sbdf].owner, dom);
    let memory = &g.state().domains.get(dom).unwrap().memory;
    let size = memory.size();
    for rid in &d.rids {
        for gpa in [0, 0x10, 0x1000, 0x2fff, 0x4321, size - 8] {
            assert_eq!(
                reach(&g, *rid, gpa).ok(),
                memory.host_address(gpa),
                "{gpa:#x}"
            );
        }
        for iova in [size, 0x8000, (1 << 48) - PAGE_SIZE] {
            assert!(reach(&g, *rid, iova).is_err(), "{iova:#x} beyond the guest");
        }
        let ctx = context_entry(&sim, *rid);
        let tables = g.state().guest(dom).unwrap().tables.lock();
        assert_eq!(
            ctx.levels().map(|l| l.count()),
            Some(tables.levels().count()),
            "AW matches the guest tables' depth"
        );
        assert_ne!(
            ctx.domain_id,
            g.state().devices[&d.sbdf].quarantine_did,
            "the guest has its own domain ID"
        );
    }
}

#[test]
fn deassign_returns_to_a_zeroed_scratch_page_without_allocating() {
    let sim = SimVtd::new();
    let mut alloc = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, QuarantineMode::Scratch);
    let mut g = lock.lock();
    let d = cast(0);
    add(&mut g, &mut alloc, &d).unwrap();
    let scratch = g.state().scratch_page(d.sbdf).unwrap();
    // A DMA while quarantined lands in the scratch page...
    let at = reach(&g, d.rids[0], 0x5008).unwrap();
    sim.mem.write_u64(at, 0xdead_beef);
    assert_eq!(sim.mem.read_u64(PhysAddr(scratch.0 + 0x8)), 0xdead_beef);
    let dom = passthrough::create_domain(&mut g, &mut alloc, "guest", 2).unwrap();
    passthrough::assign(&mut g, &mut alloc, dom, d.sbdf).unwrap();
    // ...and whatever is there when it comes back must not survive.
    sim.mem.write_u64(PhysAddr(scratch.0 + 0xff8), 0x1234);
    let attempts = alloc.allocation_attempts();
    passthrough::deassign(&mut g, dom, d.sbdf).unwrap();
    assert_eq!(
        alloc.allocation_attempts(),
        attempts,
        "FIGURE frames allocated during deassign: 0"
    );
    assert_eq!(g.state().devices[&d.sbdf].owner, g.state().domains.dom_io);
    assert!(page_is_zero(&sim.mem, scratch));
    for iova in iovas() {
        assert_eq!(reach_page(&g, d.rids[0], iova), Ok(scratch));
    }
}

#[test]
fn destroy_quarantines_the_devices_and_frees_every_frame_without_allocating() {
    let sim = SimVtd::new();
    let mut alloc = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, QuarantineMode::Scratch);
    let mut g = lock.lock();
    let devs = [cast(0), cast(1), cast(2)];
    for d in &devs {
        add(&mut g, &mut alloc, d).unwrap();
    }
    let baseline = alloc.frames_in_use();
    let dom = passthrough::create_domain(&mut g, &mut alloc, "guest", 8).unwrap();
    for d in &devs {
        passthrough::assign(&mut g, &mut alloc, dom, d.sbdf).unwrap();
    }
    // Device 1's RMRR is mapped into the guest too (it keeps reaching it while assigned).
    assert_eq!(
        reach(&g, devs[1].rids[0], HIGH_RMRR.start),
        Ok(PhysAddr(HIGH_RMRR.start))
    );
    let frames: Vec<PhysAddr> = g.state().domains.get(dom).unwrap().memory.frames().to_vec();
    let attempts = alloc.allocation_attempts();
    passthrough::destroy_domain(&mut g, &mut alloc, dom).unwrap();
    assert_eq!(
        alloc.allocation_attempts(),
        attempts,
        "destroy never allocates"
    );
    assert_eq!(
        alloc.frames_in_use(),
        baseline,
        "every frame of the guest is freed"
    );
    assert!(frames.iter().all(|f| !alloc.is_allocated(*f)));
    assert!(g.state().domains.get(dom).is_none());
    for d in &devs {
        assert_eq!(g.state().devices[&d.sbdf].owner, g.state().domains.dom_io);
        let scratch = g.state().scratch_page(d.sbdf).unwrap();
        for rid in &d.rids {
            assert_eq!(reach_page(&g, *rid, 0x7654), Ok(scratch));
        }
    }
    assert_eq!(
        passthrough::destroy_domain(&mut g, &mut alloc, dom),
        Err(PassthroughError::UnknownDomain(dom))
    );
}

#[test]
fn an_owner_switch_costs_one_wait_and_a_descriptor_per_requester_id_and_cache() {
    let sim = SimVtd::new();
    let mut alloc = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, QuarantineMode::Scratch);
    let mut g = lock.lock();
    let d = cast(0);
    add(&mut g, &mut alloc, &d).unwrap();
    let dom = passthrough::create_domain(&mut g, &mut alloc, "guest", 2).unwrap();
    let writes = sim.regs.write_count();
    let cost = passthrough::assign(&mut g, &mut alloc, dom, d.sbdf).unwrap();
    assert_eq!(g.state().stats.last_switch, cost.cost);
    assert_eq!((cost.cost.descriptors, cost.cost.waits), (2, 1), "{cost:?}");
    assert!(cost.timed_out.is_none());
    assert_eq!(
        cost.cost.mmio_writes,
        (sim.regs.write_count() - writes) as u64
    );
    assert!(cost.cost.mmio_writes >= 1, "the queue tail is written");
    std::eprintln!("FIGURE assign-mmio-writes {} writes", cost.cost.mmio_writes);
    let back = passthrough::deassign(&mut g, dom, d.sbdf).unwrap();
    assert_eq!(g.state().stats.last_switch, back.cost);
    // Back from the guest its interrupt entries are blocked too: context, IOTLB and IEC
    // descriptors, still one wait and one doorbell.
    assert_eq!((back.cost.descriptors, back.cost.waits), (3, 1), "{back:?}");
    assert_eq!(back.cost.mmio_writes, 1, "{back:?}");
    assert_eq!(g.state().stats.owner_switches, 2);
    std::eprintln!(
        "FIGURE deassign-mmio-writes {} writes",
        back.cost.mmio_writes
    );
    // A phantom function moves with its device: one context descriptor per requester ID,
    // one IOTLB descriptor for the one previous domain, still one wait.
    let p = cast(2);
    add(&mut g, &mut alloc, &p).unwrap();
    let cost = passthrough::assign(&mut g, &mut alloc, dom, p.sbdf).unwrap();
    assert_eq!((cost.cost.descriptors, cost.cost.waits), (3, 1), "{cost:?}");
}

#[test]
fn a_timed_out_wait_is_counted_and_leaves_state_consistent() {
    let sim = SimVtd::new();
    let mut alloc = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, QuarantineMode::Scratch);
    let mut g = lock.lock();
    let d = cast(0);
    add(&mut g, &mut alloc, &d).unwrap();
    let dom = passthrough::create_domain(&mut g, &mut alloc, "guest", 2).unwrap();
    sim.set_dead(lazaret_vtd::sim_device::DEAD_QUEUE);
    let cost = passthrough::assign(&mut g, &mut alloc, dom, d.sbdf).unwrap();
    assert!(cost.timed_out.is_some());
    assert_eq!(g.state().stats.switch_timeouts, 1);
    assert_eq!(
        g.state().devices[&d.sbdf].owner,
        dom,
        "the entry did switch"
    );
    let host = g
        .state()
        .domains
        .get(dom)
        .unwrap()
        .memory
        .host_address(0x10);
    assert_eq!(reach(&g, d.rids[0], 0x10).ok(), host);
    // The queue comes back: the next switch completes (and drains what was left behind).
    sim.set_dead(0);
    let back = passthrough::deassign(&mut g, dom, d.sbdf).unwrap();
    assert!(back.timed_out.is_none(), "{back:?}");
    assert_eq!(g.state().stats.switch_timeouts, 1);
    let scratch = g.state().scratch_page(d.sbdf).unwrap();
    assert_eq!(reach_page(&g, d.rids[0], 0x10), Ok(scratch));
}

#[test]
fn a_three_level_unit_builds_and_programs_three_levels() {
    let sim = sim_with(true, false);
    let mut alloc = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, QuarantineMode::Scratch);
    let mut g = lock.lock();
    assert_eq!(g.state().levels(), 3);
    let d = cast(1);
    let q = add(&mut g, &mut alloc, &d).unwrap();
    // Scratch page, two shared tables, the root, and private level-2 and level-1 tables
    // for the RMRR's path.
    assert_eq!(q.pages, 3 + 1 + 2);
    let ctx = context_entry(&sim, d.rids[0]);
    assert_eq!(ctx.levels(), Some(Levels::Three));
    let scratch = g.state().scratch_page(d.sbdf).unwrap();
    assert_eq!(reach_page(&g, d.rids[0], (1 << 39) - 1), Ok(scratch));
    assert!(reach(&g, d.rids[0], 1 << 39)
        .unwrap_err()
        .contains("AddressBeyondWidth"));
    let dom = passthrough::create_domain(&mut g, &mut alloc, "guest", 2).unwrap();
    passthrough::assign(&mut g, &mut alloc, dom, d.sbdf).unwrap();
    assert_eq!(context_entry(&sim, d.rids[0]).levels(), Some(Levels::Three));
    let host = g
        .state()
        .domains
        .get(dom)
        .unwrap()
        .memory
        .host_address(0x1008);
    assert_eq!(reach(&g, d.rids[0], 0x1008).ok(), host);
    assert_eq!(
        reach(&g, d.rids[0], HIGH_RMRR.end),
        Ok(PhysAddr(HIGH_RMRR.end))
    );
}

#[test]
fn a_reserved_range_leaves_the_guest_with_its_device() {
    let sim = SimVtd::new();
    let mut alloc = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, QuarantineMode::Scratch);
    let mut g = lock.lock();
    let (plain, rmrr, dom) = plain_and_rmrr_devices_in_a_guest(&mut g, &mut alloc);
    passthrough::assign(&mut g, &mut alloc, dom, rmrr.sbdf).unwrap();
    // The guest's tables are shared by its devices: the RMRR is visible to both...
    let identity = Ok(PhysAddr(HIGH_RMRR.start));
    assert_eq!(reach(&g, plain.rids[0], HIGH_RMRR.start), identity);
    passthrough::deassign(&mut g, dom, rmrr.sbdf).unwrap();
    // ...and leaves with the device that needs it; the device keeps it in quarantine.
    assert!(reach(&g, plain.rids[0], HIGH_RMRR.start).is_err());
    assert_eq!(reach(&g, rmrr.rids[0], HIGH_RMRR.start), identity);
}

/// A reserved range that starts and ends inside pages (firmware may report one) maps exactly
/// the pages it touches into the guest, and takes exactly those away again.
#[test]
fn an_unaligned_reserved_range_maps_and_unmaps_exactly_its_pages() {
    use crate::passthrough::iommu::ReservedRange;
    let sim = SimVtd::new();
    let mut alloc = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, QuarantineMode::Scratch);
    let mut g = lock.lock();
    let plain = cast(0);
    let odd = Dev {
        sbdf: sbdf(0, 7, 0),
        rids: alloc::vec![bdf(0, 7, 0)],
        reserved: alloc::vec![ReservedRange::read_write(0x1_0000_1800, 0x1_0000_2fff)],
    };
    add(&mut g, &mut alloc, &plain).unwrap();
    add(&mut g, &mut alloc, &odd).unwrap();
    let dom = passthrough::create_domain(&mut g, &mut alloc, "guest", 2).unwrap();
    passthrough::assign(&mut g, &mut alloc, dom, plain.sbdf).unwrap();
    passthrough::assign(&mut g, &mut alloc, dom, odd.sbdf).unwrap();
    let through_plain = |g: &Guard<'_, '_>, iova: u64| reach(g, plain.rids[0], iova).ok();
    for page in [0x1_0000_1000, 0x1_0000_2000] {
        assert_eq!(through_plain(&g, page + 0x10), Some(PhysAddr(page + 0x10)));
    }
    for outside in [0x1_0000_0000, 0x1_0000_3000] {
        assert_eq!(
            through_plain(&g, outside),
            None,
            "{outside:#x} is no RMRR page"
        );
    }
    passthrough::deassign(&mut g, dom, odd.sbdf).unwrap();
    for page in [0x1_0000_1000, 0x1_0000_2000] {
        assert_eq!(
            through_plain(&g, page),
            None,
            "{page:#x} left with its device"
        );
    }
    // A neighbour's range in the page below stays when the unaligned one leaves.
    let neighbour = Dev {
        sbdf: sbdf(0, 8, 0),
        rids: alloc::vec![bdf(0, 8, 0)],
        reserved: alloc::vec![ReservedRange::read_write(0x1_0000_0000, 0x1_0000_07ff)],
    };
    add(&mut g, &mut alloc, &neighbour).unwrap();
    passthrough::assign(&mut g, &mut alloc, dom, neighbour.sbdf).unwrap();
    passthrough::assign(&mut g, &mut alloc, dom, odd.sbdf).unwrap();
    passthrough::deassign(&mut g, dom, odd.sbdf).unwrap();
    assert_eq!(
        through_plain(&g, 0x1_0000_0000),
        Some(PhysAddr(0x1_0000_0000)),
        "the neighbour's page was taken too"
    );
}

/// Assign maps the group's reserved ranges into the guest before the switch; when the
/// switch fails, they come out again.
#[test]
fn a_failed_assign_takes_its_reserved_range_back_out_of_the_guest() {
    let sim = SimVtd::new();
    let mut alloc = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, QuarantineMode::Scratch);
    let mut g = lock.lock();
    let (plain, rmrr, dom) = plain_and_rmrr_devices_in_a_guest(&mut g, &mut alloc);
    corrupt_context_entry(&sim, rmrr.rids[0]);
    assert!(passthrough::assign(&mut g, &mut alloc, dom, rmrr.sbdf).is_err());
    assert!(
        reach(&g, plain.rids[0], HIGH_RMRR.start).is_err(),
        "the guest's other device still reaches the failed device's RMRR"
    );
}

/// A reserved range that starts exactly where the guest's memory ends does not overlap it.
#[test]
fn a_reserved_range_right_above_guest_memory_is_accepted() {
    let sim = SimVtd::new();
    let mut alloc = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, QuarantineMode::Scratch);
    let mut g = lock.lock();
    let low = cast(5);
    add(&mut g, &mut alloc, &low).unwrap();
    let pages = (LOW_RMRR.start / PAGE_SIZE) as usize;
    let fits = passthrough::create_domain(&mut g, &mut alloc, "fits", pages).unwrap();
    let over = passthrough::create_domain(&mut g, &mut alloc, "over", pages + 1).unwrap();
    assert!(matches!(
        passthrough::assign(&mut g, &mut alloc, over, low.sbdf),
        Err(PassthroughError::ReservedInGuestMemory { .. })
    ));
    passthrough::assign(&mut g, &mut alloc, fits, low.sbdf).unwrap();
}

/// When a device leaves, its reserved range leaves the guest's tables *and* the IOTLB entries
/// the guest's other devices refilled while the switch was being invalidated (the switch's
/// own domain flush comes before the unmap, so only the unmap's invalidation removes them).
#[test]
fn a_departing_devices_reserved_range_leaves_the_other_devices_caches_too() {
    let sim = SimVtd::new();
    let mut alloc = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, QuarantineMode::Scratch);
    let mut g = lock.lock();
    let (plain, rmrr, dom) = plain_and_rmrr_devices_in_a_guest(&mut g, &mut alloc);
    passthrough::assign(&mut g, &mut alloc, dom, rmrr.sbdf).unwrap();
    let other = (plain.rids[0], HIGH_RMRR.start, true);
    assert_eq!(
        sim.dma(other.0, other.1, other.2),
        Ok(PhysAddr(HIGH_RMRR.start))
    );
    sim.set_dma_during_invalidation(Some(other));
    passthrough::deassign(&mut g, dom, rmrr.sbdf).unwrap();
    sim.set_dma_during_invalidation(None);
    let refills = sim.take_dma_during_invalidation();
    assert!(
        refills.contains(&Ok(PhysAddr(HIGH_RMRR.start))),
        "{refills:?}"
    );
    assert!(
        sim.dma(other.0, other.1, other.2).is_err(),
        "the guest's other device still reaches the departed device's RMRR through the IOTLB"
    );
}

/// An alias group holds at most `MAX_GROUP` devices: the switch moves a group as one, on the
/// stack, so a device that would make it larger is refused when added, never left behind.
#[test]
fn an_alias_group_never_grows_past_its_limit() {
    use crate::passthrough::registry::MAX_GROUP;
    let sim = SimVtd::new();
    let mut alloc = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, QuarantineMode::Scratch);
    let mut g = lock.lock();
    let alias = bdf(0x10, 0, 0);
    let member = |n: usize| Dev {
        sbdf: sbdf(0x11, n as u8, 0),
        rids: alloc::vec![bdf(0x11, n as u8, 0), alias],
        reserved: alloc::vec![],
    };
    for n in 0..MAX_GROUP {
        add(&mut g, &mut alloc, &member(n)).unwrap();
    }
    let one_too_many = member(MAX_GROUP);
    assert_eq!(
        add(&mut g, &mut alloc, &one_too_many).map(drop),
        Err(PassthroughError::GroupTooLarge(one_too_many.sbdf))
    );
    assert_eq!(g.state().group_of(member(0).sbdf).len(), MAX_GROUP);
}
