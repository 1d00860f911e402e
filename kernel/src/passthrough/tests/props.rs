//! Property test (design.md §5 ring 1): random sequences of add / create / assign / deassign
//! / destroy / DMA over the cast of devices, in every quarantine mode, on 3- and 4-level
//! units with and without caching mode, checked after every step against a small model: by
//! DMA through the simulated unit's caches (`SimVtd::dma`: context cache, IOTLB,
//! paging-structure caches; invalidations reordered by a seed, a probe DMA between every two
//! of their effects) and through the reference walker, both directions, for every requester
//! ID of the cast and IDs no device has.
//!
//! The model learns two facts from the core, once, when they come into being: a device's
//! scratch page when it is added, a guest's frames when it is created.
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;

use lazaret_types::sim::SimFrameAllocator;
use lazaret_types::{Bdf, FrameAllocator, PhysAddr, PhysMem, PAGE_SIZE};
use lazaret_vtd::sim_device::SimVtd;
use proptest::prelude::*;

use super::fixture::*;
use crate::cmdline::QuarantineMode;
use crate::domain::DomainId;
use crate::passthrough::{self, PassthroughError};

#[derive(Clone, Debug)]
enum Op {
    Add(usize),
    /// A guest of this many pages (at most three live at once).
    Create(usize),
    /// (domain selector, see [`domain_at`], device)
    Assign(usize, usize),
    Deassign(usize, usize),
    /// Deassign the n-th assigned device (the model's view) by its owner: the request that
    /// should work. Device n by DomIO when none is assigned.
    Release(usize),
    Destroy(usize),
    /// A write from (device, requester-ID index, sample IOVA index) of a non-zero byte.
    Dma(usize, usize, usize, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..CAST).prop_map(Op::Add),
        2 => (1usize..=16).prop_map(Op::Create),
        4 => (0..SELECTORS, 0..CAST).prop_map(|(d, i)| Op::Assign(d, i)),
        1 => (0..SELECTORS, 0..CAST).prop_map(|(d, i)| Op::Deassign(d, i)),
        2 => (0..CAST).prop_map(Op::Release),
        1 => (0..SELECTORS).prop_map(Op::Destroy),
        2 => (0..CAST, 0..3usize, 0..SAMPLES.len(), 1u8..=255)
            .prop_map(|(i, r, a, b)| Op::Dma(i, r, a, b)),
    ]
}

fn mode() -> impl Strategy<Value = QuarantineMode> {
    prop_oneof![
        Just(QuarantineMode::None),
        Just(QuarantineMode::Basic),
        Just(QuarantineMode::Scratch),
    ]
}

/// What the core should believe: owners, live guests and their frames, which device's
/// entry each requester ID follows, each device's scratch page, the table depth.
struct Model {
    dom_io: DomainId,
    levels: u32,
    owners: BTreeMap<usize, DomainId>,
    /// Live guests → their frames (guest page n at index n).
    guests: BTreeMap<DomainId, Vec<PhysAddr>>,
    /// Registered devices in the order they were added.
    order: Vec<usize>,
    scratch: BTreeMap<usize, PhysAddr>,
}

/// Requester IDs no device of the cast has: another function on bus 0, a bus with no device.
fn never_added() -> [Bdf; 2] {
    [bdf(0, 0x1f, 7), bdf(5, 0, 0)]
}

/// The error's name, or "ok": results compare by kind, their payloads are covered by
/// `errors.rs`.
fn kind(r: &Result<(), PassthroughError>) -> &'static str {
    use PassthroughError::*;
    match r {
        Ok(()) => "ok",
        Err(UnknownDevice(_)) => "UnknownDevice",
        Err(DeviceExists(_)) => "DeviceExists",
        Err(UnknownDomain(_)) => "UnknownDomain",
        Err(NotAGuest(_)) => "NotAGuest",
        Err(AlreadyAssigned { .. }) => "AlreadyAssigned",
        Err(NotOwner { .. }) => "NotOwner",
        Err(SharedAlias { .. }) => "SharedAlias",
        Err(SharedReserved { .. }) => "SharedReserved",
        Err(ReservedInGuestMemory { .. }) => "ReservedInGuestMemory",
        Err(TooManyRequesterIds { .. }) => "TooManyRequesterIds",
        Err(Bridge(_)) => "Bridge",
        Err(GroupTooLarge(_)) => "GroupTooLarge",
        Err(GroupSpansUnits { .. }) => "GroupSpansUnits",
        Err(Blocked(_)) => "Blocked",
        Err(NoInterruptRemapping(_)) => "NoInterruptRemapping",
        Err(NoInterruptEntry { .. }) => "NoInterruptEntry",
        Err(Iommu(_)) => "Iommu",
    }
}

impl Model {
    fn shares_alias_with_other_owner(&self, i: usize, owner: DomainId) -> bool {
        let rids = cast(i).rids;
        self.owners
            .iter()
            .any(|(j, o)| *j != i && *o != owner && cast(*j).rids.iter().any(|r| rids.contains(r)))
    }

    fn not_a_guest(&self, dom: DomainId) -> &'static str {
        if dom == self.dom_io || dom.index() == 0 {
            "NotAGuest"
        } else {
            "UnknownDomain"
        }
    }

    fn add(&mut self, i: usize) -> &'static str {
        if self.owners.contains_key(&i) {
            return "DeviceExists";
        }
        if self.shares_alias_with_other_owner(i, self.dom_io) {
            return "SharedAlias";
        }
        self.owners.insert(i, self.dom_io);
        self.order.push(i);
        "ok"
    }

    /// The registered device whose quarantine entry a requester ID follows: its own device,
    /// or, for an ID several registered devices share (a bridge alias), their alias group's
    /// leader — its lowest-SBDF member (the README's rule: devices the IOMMU cannot tell
    /// apart are isolated as one).
    fn quarantine_holder(&self, rid: Bdf) -> Option<usize> {
        let mut holders = self
            .order
            .iter()
            .copied()
            .filter(|i| cast(*i).rids.contains(&rid));
        let first = holders.next()?;
        if holders.next().is_none() {
            return Some(first);
        }
        self.group(first).first().copied()
    }

    /// `i` and every registered device sharing a requester ID with it, transitively, in
    /// SBDF order: what moves together.
    fn group(&self, i: usize) -> Vec<usize> {
        let mut group = vec![i];
        let mut k = 0;
        while k < group.len() {
            let rids = cast(group[k]).rids;
            for j in self.owners.keys() {
                if !group.contains(j) && cast(*j).rids.iter().any(|r| rids.contains(r)) {
                    group.push(*j);
                }
            }
            k += 1;
        }
        group.sort_by_key(|j| cast(*j).sbdf);
        group
    }

    fn assign(&mut self, dom: DomainId, i: usize) -> &'static str {
        let Some(pages) = self.guests.get(&dom).map(|f| f.len() as u64) else {
            return self.not_a_guest(dom);
        };
        if !self.owners.contains_key(&i) {
            return "UnknownDevice";
        }
        let group = self.group(i);
        for j in &group {
            if self.owners[j] != self.dom_io {
                return "AlreadyAssigned";
            }
            if cast(*j)
                .reserved
                .iter()
                .any(|r| r.start < pages * PAGE_SIZE)
            {
                return "ReservedInGuestMemory";
            }
        }
        for j in group {
            self.owners.insert(j, dom);
        }
        "ok"
    }

    fn deassign(&mut self, dom: DomainId, i: usize) -> &'static str {
        match self.owners.get(&i) {
            None => "UnknownDevice",
            Some(o) if *o != dom || dom == self.dom_io => "NotOwner",
            Some(_) => {
                for j in self.group(i) {
                    self.owners.insert(j, self.dom_io);
                }
                "ok"
            }
        }
    }

    fn destroy(&mut self, dom: DomainId) -> &'static str {
        if self.guests.remove(&dom).is_none() {
            return self.not_a_guest(dom);
        }
        for o in self.owners.values_mut().filter(|o| **o == dom) {
            *o = self.dom_io;
        }
        "ok"
    }
}

/// Who may write a page: a guest, or one quarantined device (each is its own island).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Party {
    Guest(DomainId),
    Quarantined(usize),
}

/// Where a DMA from `rid` to `iova` must land, from the model alone (the cast's reserved
/// ranges and guest pages are read-write: both directions alike).
fn expected(m: &Model, mode: QuarantineMode, rid: Bdf, iova: u64) -> Option<PhysAddr> {
    let dev = m.quarantine_holder(rid)?;
    let owner = m.owners[&dev];
    if iova >> (12 + 9 * m.levels) != 0 {
        return None;
    }
    let identity = |i: usize| {
        cast(i)
            .reserved
            .iter()
            .any(|r| (r.start..=r.end).contains(&iova))
    };
    if owner == m.dom_io {
        return match mode {
            QuarantineMode::None => None,
            _ if identity(dev) => Some(PhysAddr(iova)),
            QuarantineMode::Basic => None,
            QuarantineMode::Scratch => m
                .scratch
                .get(&dev)
                .map(|p| PhysAddr(p.0 + iova % PAGE_SIZE)),
        };
    }
    // A guest's tables: its memory, and the reserved ranges of every device it owns.
    if m.owners.iter().any(|(i, o)| *o == owner && identity(*i)) {
        return Some(PhysAddr(iova));
    }
    let frame = m
        .guests
        .get(&owner)?
        .get(usize::try_from(iova / PAGE_SIZE).ok()?)?;
    Some(PhysAddr(frame.0 + iova % PAGE_SIZE))
}

/// Every requester ID the checks DMA from: the whole cast's, registered or not, and IDs no
/// device has.
fn all_rids() -> Vec<Bdf> {
    let mut v: Vec<Bdf> = (0..CAST).flat_map(|i| cast(i).rids).collect();
    v.extend(never_added());
    v.sort();
    v.dedup();
    v
}

/// Checks (a), (b) and (e) after a step: (a) by cached DMA and by the walker, both
/// directions.
fn check(g: &Guard<'_, '_>, sim: &SimVtd, m: &Model) -> Result<(), TestCaseError> {
    let s = g.state();
    let owners: BTreeMap<usize, DomainId> = (0..CAST)
        .filter_map(|i| s.device(cast(i).sbdf).map(|d| (i, d.owner())))
        .collect();
    prop_assert_eq!(&owners, &m.owners, "(e) owners agree with the model");
    let mut writers: BTreeMap<u64, BTreeSet<Party>> = BTreeMap::new();
    for rid in all_rids() {
        let party = m.quarantine_holder(rid).map(|dev| match m.owners[&dev] {
            o if o == m.dom_io => Party::Quarantined(dev),
            o => Party::Guest(o),
        });
        for &iova in &SAMPLES {
            let want = expected(m, s.mode(), rid, iova);
            for write in [false, true] {
                let got = sim.dma(rid, iova, write);
                prop_assert_eq!(
                    got.ok(),
                    want,
                    "(a) cached DMA {} {:#x} write {}: {:?}",
                    rid,
                    iova,
                    write,
                    got
                );
                let walked = s.translate(sbdf_of(rid), iova, write);
                prop_assert_eq!(
                    walked.as_ref().ok(),
                    want.as_ref(),
                    "(a) walker {} {:#x}: {:?}",
                    rid,
                    iova,
                    walked
                );
            }
            if let (Some(pa), Some(p)) = (want, party) {
                writers.entry(pa.0 / PAGE_SIZE).or_default().insert(p);
            }
        }
    }
    for (page, parties) in &writers {
        prop_assert!(
            parties.len() == 1,
            "(b) page {:#x} writable by {:?}",
            page * PAGE_SIZE,
            parties
        );
    }
    Ok(())
}

/// (d): every device that just entered quarantine has an all-zero scratch page.
fn check_zeroed(m: &Model, sim: &SimVtd, entered: &[usize]) -> Result<(), TestCaseError> {
    for i in entered {
        if let Some(&page) = m.scratch.get(i) {
            prop_assert!(
                page_is_zero(&sim.mem, page),
                "(d) scratch page of {} not zeroed",
                i
            );
        }
    }
    Ok(())
}

const SELECTORS: usize = 8;

/// Selector `d`: mostly a live guest; 6 = any guest ever created (perhaps destroyed, its slot
/// perhaps reused); 7 = DomIO. DomIO also stands in when there is no guest to pick.
fn domain_at(created: &[DomainId], m: &Model, d: usize) -> DomainId {
    let live: Vec<DomainId> = m.guests.keys().copied().collect();
    let pick = |from: &[DomainId], n: usize| from.get(n % from.len().max(1)).copied();
    match d {
        7 => None,
        6 => pick(created, d),
        _ => pick(&live, d),
    }
    .unwrap_or(m.dom_io)
}

/// The DMA the unit makes between every two invalidation effects during step `step`: a
/// different (requester ID, sample, direction) each step, so over a run the race between a
/// device's DMA and its caches' invalidation is tried for all of them (splitmix64).
fn probe_at(seed: u64, step: u64) -> (Bdf, u64, bool) {
    let mut z = seed ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let rids = all_rids();
    let rid = rids[(z % rids.len() as u64) as usize];
    let iova = SAMPLES[((z >> 16) % SAMPLES.len() as u64) as usize];
    (rid, iova, z >> 63 == 1)
}

fn run(
    sim: SimVtd,
    levels: u32,
    mode: QuarantineMode,
    seed: u64,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    use crate::mm::heap::counting::heap_allocations_during;
    let mut alloc = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, mode);
    let mut g = lock.lock();
    let mut m = Model {
        dom_io: g.state().domains.dom_io,
        levels,
        owners: BTreeMap::new(),
        guests: BTreeMap::new(),
        order: Vec::new(),
        scratch: BTreeMap::new(),
    };
    sim.set_seed(seed);
    let base = alloc.frames_in_use();
    let mut device_frames = 0;
    let mut created: Vec<DomainId> = Vec::new();
    for (step, op) in ops.into_iter().enumerate() {
        let (probe_rid, probe_iova, probe_write) = probe_at(seed, step as u64);
        sim.set_dma_during_invalidation(Some((probe_rid, probe_iova, probe_write)));
        let probe_before = expected(&m, mode, probe_rid, probe_iova);
        let owned_by = |m: &Model, dom: DomainId| -> Vec<usize> {
            m.owners
                .iter()
                .filter(|(_, o)| **o == dom)
                .map(|(i, _)| *i)
                .collect()
        };
        let (want, got): (&str, Result<(), PassthroughError>) = match op {
            Op::Add(i) => {
                let before = alloc.frames_in_use();
                let r = add(&mut g, &mut alloc, &cast(i)).map(drop);
                device_frames += alloc.frames_in_use() - before;
                let want = m.add(i);
                if r.is_ok() {
                    if let Some(page) = g.state().scratch_page(cast(i).sbdf) {
                        m.scratch.insert(i, page);
                    }
                    check_zeroed(&m, &sim, &[i])?;
                }
                (want, r)
            }
            Op::Create(pages) if m.guests.len() < 3 => {
                let id = passthrough::create_domain(&mut g, &mut alloc, "guest", pages)
                    .map_err(|e| TestCaseError::fail(alloc::format!("create: {e}")))?;
                created.push(id);
                let frames = g
                    .state()
                    .domains
                    .get(id)
                    .map(|d| d.memory.frames().to_vec());
                m.guests.insert(id, frames.unwrap_or_default());
                ("ok", Ok(()))
            }
            Op::Create(_) => continue,
            Op::Assign(d, i) => {
                let dom = domain_at(&created, &m, d);
                let r = passthrough::assign(&mut g, &mut alloc, dom, cast(i).sbdf).map(drop);
                (m.assign(dom, i), r)
            }
            Op::Deassign(_, n) | Op::Release(n) => {
                let assigned: Vec<(usize, DomainId)> = m
                    .owners
                    .iter()
                    .filter(|(_, o)| **o != m.dom_io)
                    .map(|(i, o)| (*i, *o))
                    .collect();
                let (dom, i) = match op {
                    Op::Deassign(d, _) => (domain_at(&created, &m, d), n),
                    _ => assigned
                        .get(n % assigned.len().max(1))
                        .map_or((m.dom_io, n), |(i, o)| (*o, *i)),
                };
                let attempts = alloc.allocation_attempts();
                let sbdf = cast(i).sbdf;
                let (r, heap) =
                    heap_allocations_during(|| passthrough::deassign(&mut g, dom, sbdf).map(drop));
                prop_assert_eq!(heap, 0, "(c) deassign allocated on the heap");
                prop_assert_eq!(
                    alloc.allocation_attempts(),
                    attempts,
                    "(c) deassign allocated"
                );
                let want = m.deassign(dom, i);
                if want == "ok" {
                    check_zeroed(&m, &sim, &[i])?;
                }
                (want, r)
            }
            Op::Destroy(d) => {
                let dom = domain_at(&created, &m, d);
                let leaving = owned_by(&m, dom);
                let attempts = alloc.allocation_attempts();
                let (r, heap) = heap_allocations_during(|| {
                    passthrough::destroy_domain(&mut g, &mut alloc, dom)
                });
                prop_assert_eq!(heap, 0, "(c) destroy allocated on the heap");
                prop_assert_eq!(
                    alloc.allocation_attempts(),
                    attempts,
                    "(c) destroy allocated"
                );
                let want = m.destroy(dom);
                if want == "ok" {
                    check_zeroed(&m, &sim, &leaving)?;
                }
                (want, r.map(|_| ()))
            }
            Op::Dma(i, r, a, byte) => {
                let rids = cast(i).rids;
                if let Ok(pa) = sim.dma(rids[r % rids.len()], SAMPLES[a], true) {
                    sim.mem.write_bytes(pa, &[byte]);
                }
                ("ok", Ok(()))
            }
        };
        prop_assert_eq!(kind(&got), want, "{:?}: {:?}", op, got);
        // Between two invalidation effects the probe lands where it did before the step,
        // where it does after, or nowhere: never a third place.
        let probe_after = expected(&m, mode, probe_rid, probe_iova);
        for landed in sim.take_dma_during_invalidation() {
            let landed = landed.ok();
            prop_assert!(
                landed.is_none() || landed == probe_before || landed == probe_after,
                "during {:?}, {} {:#x} landed at {:?} (before {:?}, after {:?})",
                op,
                probe_rid,
                probe_iova,
                landed,
                probe_before,
                probe_after
            );
        }
        check(&g, &sim, &m)?;
    }
    for dom in created {
        let _ = passthrough::destroy_domain(&mut g, &mut alloc, dom);
    }
    prop_assert_eq!(
        alloc.frames_in_use(),
        base + device_frames,
        "destroying every guest gives back every frame not held by a device's quarantine"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn random_sequences_keep_devices_isolated(
        mode in mode(),
        (three_levels, caching_mode) in (any::<bool>(), any::<bool>()),
        first in proptest::sample::subsequence((0..CAST).collect::<Vec<_>>(), 0..=CAST),
        pages in 1usize..=16,
        ops in proptest::collection::vec(op(), 1..40),
        seed in any::<u64>(),
    ) {
        // Most cases start with some devices and a guest, so that the random part mostly
        // moves devices rather than asking about ones that do not exist.
        let prefix = first.into_iter().map(Op::Add).chain([Op::Create(pages)]);
        let levels = if three_levels { 3 } else { 4 };
        let sim = sim_with(three_levels, caching_mode);
        run(sim, levels, mode, seed, prefix.chain(ops).collect())?;
    }
}

/// The property's checker is not vacuous: it notices a DMA that the model did not expect.
#[test]
fn the_checker_catches_a_foreign_mapping() {
    let sim = SimVtd::new();
    let mut alloc: SimFrameAllocator<'_> = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, QuarantineMode::Scratch);
    let mut g = lock.lock();
    let mut m = Model {
        dom_io: g.state().domains.dom_io,
        levels: 4,
        owners: BTreeMap::new(),
        guests: BTreeMap::new(),
        order: Vec::new(),
        scratch: BTreeMap::new(),
    };
    for i in [0, 2] {
        assert_eq!(m.add(i), "ok");
        add(&mut g, &mut alloc, &cast(i)).unwrap();
        let page = g.state().scratch_page(cast(i).sbdf).unwrap();
        m.scratch.insert(i, page);
    }
    assert!(check(&g, &sim, &m).is_ok());
    // Pretend device 2's scratch page were device 0's: its DMA now lands in the wrong
    // place, which the check must refuse.
    m.scratch.insert(2, m.scratch[&0]);
    let e: String = alloc::format!("{:?}", check(&g, &sim, &m).unwrap_err());
    assert!(e.contains("(a) cached DMA"), "{e}");
}
