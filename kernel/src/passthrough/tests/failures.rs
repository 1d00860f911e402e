//! Failure injection: every allocation a call makes is made to fail in turn. The call must
//! report it, leave owners and translations as they were, and leak nothing.
use lazaret_types::sim::SimFrameAllocator;
use lazaret_types::FrameAllocator;
use lazaret_vtd::sim_device::SimVtd;

use super::fixture::*;
use crate::cmdline::QuarantineMode;
use crate::domain::DomainId;
use crate::passthrough::iommu::IommuError;
use crate::passthrough::{self, PassthroughError};

const OOM: PassthroughError = PassthroughError::Iommu(IommuError::OutOfMemory);

/// Devices 0-2 registered, device 0 owned by a 3-page guest: state worth preserving.
/// Returns the guest and the frames in use before it was created.
fn scene(g: &mut Guard<'_, '_>, alloc: &mut SimFrameAllocator<'_>) -> (DomainId, usize) {
    for i in 0..3 {
        add(g, alloc, &cast(i)).unwrap();
    }
    let devices_only = alloc.frames_in_use();
    let a = passthrough::create_domain(g, alloc, "a", 3).unwrap();
    passthrough::assign(g, alloc, a, cast(0).sbdf).unwrap();
    (a, devices_only)
}

/// A device added after the scene, on bus 0 (whose context table exists: every allocation
/// is the device's own), with an RMRR.
fn late_device() -> Dev {
    Dev {
        sbdf: sbdf(0, 9, 0),
        rids: alloc::vec![bdf(0, 9, 0)],
        reserved: alloc::vec![HIGH_RMRR],
    }
}

/// How many allocation attempts `op` makes on a fresh scene.
fn attempts_of(
    mode: QuarantineMode,
    op: impl FnOnce(&mut Guard<'_, '_>, &mut SimFrameAllocator<'_>, DomainId),
) -> usize {
    let sim = SimVtd::new();
    let mut alloc = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, mode);
    let mut g = lock.lock();
    let (a, _) = scene(&mut g, &mut alloc);
    let before = alloc.allocation_attempts();
    op(&mut g, &mut alloc, a);
    alloc.allocation_attempts() - before
}

#[test]
fn create_domain_fails_cleanly_at_every_allocation() {
    const PAGES: usize = 5;
    let n = attempts_of(QuarantineMode::Scratch, |g, alloc, _| {
        passthrough::create_domain(g, alloc, "probe", PAGES).unwrap();
    });
    // Memory, the root, and one table per lower level for the first mapping.
    assert_eq!(n, PAGES + 4);
    let sim = SimVtd::new();
    let mut alloc = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, QuarantineMode::Scratch);
    let mut g = lock.lock();
    let (a, devices_only) = scene(&mut g, &mut alloc);
    let guests = g.state().domains.iter().count();
    for k in 0..n {
        let before = snapshot(&g, &alloc);
        alloc.fail_allocation(k);
        let r = passthrough::create_domain(&mut g, &mut alloc, "x", PAGES);
        assert_eq!(r, Err(OOM), "allocation {k}");
        assert_eq!(snapshot(&g, &alloc), before, "allocation {k}");
        assert_eq!(g.state().domains.iter().count(), guests);
    }
    let x = passthrough::create_domain(&mut g, &mut alloc, "x", PAGES).unwrap();
    passthrough::destroy_domain(&mut g, &mut alloc, x).unwrap();
    passthrough::destroy_domain(&mut g, &mut alloc, a).unwrap();
    assert_eq!(alloc.frames_in_use(), devices_only, "nothing leaked");
}

#[test]
fn assign_fails_cleanly_at_every_allocation() {
    // Device 1's RMRR at 4 GiB needs new tables in the guest's tree: assign allocates.
    let dev = cast(1);
    let n = attempts_of(QuarantineMode::Scratch, |g, alloc, a| {
        passthrough::assign(g, alloc, a, cast(1).sbdf).unwrap();
    });
    assert_eq!(
        n, 2,
        "a level-2 and a level-1 table for the RMRR's 1 GiB region"
    );
    let sim = SimVtd::new();
    let mut alloc = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, QuarantineMode::Scratch);
    let mut g = lock.lock();
    let (a, devices_only) = scene(&mut g, &mut alloc);
    for k in 0..n {
        let before = snapshot(&g, &alloc);
        alloc.fail_allocation(k);
        let r = passthrough::assign(&mut g, &mut alloc, a, dev.sbdf);
        assert_eq!(r, Err(OOM), "allocation {k}");
        assert_eq!(snapshot(&g, &alloc), before, "allocation {k}");
    }
    passthrough::assign(&mut g, &mut alloc, a, dev.sbdf).unwrap();
    passthrough::destroy_domain(&mut g, &mut alloc, a).unwrap();
    assert_eq!(
        alloc.frames_in_use(),
        devices_only,
        "the guest's tables, RMRR branch included, are all freed"
    );
}

#[test]
fn add_device_fails_cleanly_at_every_allocation() {
    for mode in [QuarantineMode::Basic, QuarantineMode::Scratch] {
        let d = late_device();
        let n = attempts_of(mode, |g, alloc, _| {
            add(g, alloc, &d).unwrap();
        });
        let sim = SimVtd::new();
        let mut alloc = new_alloc(&sim);
        let lock = new_lock(&sim, &mut alloc, mode);
        let mut g = lock.lock();
        scene(&mut g, &mut alloc);
        for k in 0..n {
            let before = snapshot(&g, &alloc);
            alloc.fail_allocation(k);
            assert_eq!(
                add(&mut g, &mut alloc, &d),
                Err(OOM),
                "{mode:?} allocation {k}"
            );
            assert_eq!(snapshot(&g, &alloc), before);
            assert!(!g.state().devices.contains_key(&d.sbdf));
            assert!(!context_entry(&sim, d.rids[0]).present);
        }
        let q = add(&mut g, &mut alloc, &d).unwrap();
        assert_eq!(
            q.pages, n,
            "{mode:?}: every allocation is a quarantine page"
        );
    }
}

#[test]
fn running_out_of_domain_ids_fails_cleanly() {
    // CAP.ND = 0: 16 domain IDs, of which 1..16 are usable (§10.4.2).
    let sim = SimVtd::with_caps(
        lazaret_vtd::sim_device::DEFAULT_CAP & !7,
        lazaret_vtd::sim_device::DEFAULT_ECAP,
    );
    let mut alloc = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, QuarantineMode::Scratch);
    let mut g = lock.lock();
    let device = |n: u8| Dev {
        sbdf: sbdf(0, n, 0),
        rids: alloc::vec![bdf(0, n, 0)],
        reserved: alloc::vec![],
    };
    for n in 1..16 {
        add(&mut g, &mut alloc, &device(n)).unwrap();
    }
    let full = PassthroughError::Iommu(IommuError::OutOfDomainIds);
    let before = snapshot(&g, &alloc);
    assert_eq!(add(&mut g, &mut alloc, &device(16)), Err(full.clone()));
    assert_eq!(snapshot(&g, &alloc), before);
    assert!(!context_entry(&sim, bdf(0, 16, 0)).present);
    assert_eq!(
        passthrough::create_domain(&mut g, &mut alloc, "x", 3),
        Err(full)
    );
    assert_eq!(
        snapshot(&g, &alloc),
        before,
        "the guest's memory and root are given back"
    );
}
