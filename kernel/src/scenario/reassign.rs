//! `scenario=reassign`: owner switches under DMA load (issue 8 §7). One edu device goes round
//! DomIO → guest-a → guest-b → DomIO … for [`SWITCHES`] switches (assign, reassign, deassign).
//! Before each switch the device starts a DMA (edu→RAM, a fresh pattern); after it, a second
//! one (another fresh pattern). Then memory is read back at physical addresses: the racing
//! DMA must sit in exactly one of the old and the new owner's target (guest page or scratch
//! page), the DMA after the switch in the new owner's, and every other byte of all three
//! parties' pages — the third party's are the canary — must be as the host left it.
//!
//! edu DMA takes 100 ms of virtual time: the QEMU test runs this under `-icount`, where the
//! TSC (and so every deadline here) is virtual too.
use alloc::vec::Vec;

use lazaret_edu::DmaDirection;
use lazaret_types::{FrameAllocator, PhysAddr, PhysMem, PAGE_SIZE};

use super::checks::{Checks, Count};
use super::edu::{self, EduDevice};
use super::memory::{fresh_pattern, read_page, PAGE};
use crate::domain::DomainId;
use crate::hypervisor::Hypervisor;
use crate::mm::direct_map::DIRECT_MAP;
use crate::passthrough::iommu::Inspect;
use crate::passthrough::{self, DeviceLock, PassthroughError, SwitchReport};

/// Owner switches: a multiple of three, so the device ends where it started (DomIO).
pub const SWITCHES: usize = 201;
const GUEST_PAGES: usize = 8;
/// Where the device loads its two patterns from, and where each DMA writes.
const SOURCE_GPA: u64 = 0x2000;
const RACING_GPA: u64 = 0x4000;
const AFTER_GPA: u64 = 0x5400;
/// Bytes per pattern: the racing one at buffer offset 0, the later one right after it.
const LEN: usize = 0x400;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Party {
    Quarantine,
    Guest(DomainId),
}

/// What one round saw.
#[derive(Default)]
struct Tally {
    switches: u64,
    dmas: u64,
    racing_in_old: u64,
    racing_in_new: u64,
    after_in_new: u64,
    /// Rounds where a DMA changed a byte outside the one target it was allowed.
    elsewhere: u64,
    failures: u64,
}

pub fn run<V: Inspect>(hv: &mut Hypervisor<V>, checks: &mut Checks) {
    let devices = edu::find(hv);
    let Some(d) = devices.first() else {
        checks.check("edu-devices", false, format_args!("no edu device"));
        return;
    };
    let Some(lock) = hv.passthrough.as_ref() else {
        checks.check(
            "iommu",
            false,
            format_args!("no IOMMU: nothing to reassign"),
        );
        return;
    };
    let guests = {
        let mut g = lock.lock();
        let a = passthrough::create_domain(&mut g, &mut hv.frames, "guest-a", GUEST_PAGES);
        let b = passthrough::create_domain(&mut g, &mut hv.frames, "guest-b", GUEST_PAGES);
        a.and_then(|a| Ok((a, b?)))
    };
    let (a, b) = match guests {
        Ok(ab) => ab,
        Err(e) => {
            checks.check("create-domain", false, format_args!("guests: {e}"));
            return;
        }
    };
    let cycle = [Party::Quarantine, Party::Guest(a), Party::Guest(b)];
    let start_tsc = crate::arch::tsc::micros_since_entry();
    log::info!("reassign: start: {SWITCHES} owner switches of {}", d.sbdf);
    let mut tally = Tally::default();
    let mut first_failure = None;
    for k in 0..SWITCHES {
        let (old, new) = (cycle[k % 3], cycle[(k + 1) % 3]);
        if let Err(why) = one_switch(lock, &mut hv.frames, d, old, new, &cycle, &mut tally) {
            tally.failures += 1;
            if first_failure.is_none() {
                first_failure = Some(alloc::format!("switch {k}: {why}"));
            }
        }
    }
    let virtual_ms = (crate::arch::tsc::micros_since_entry() - start_tsc) / 1000;
    log::info!("reassign: end");
    let n = tally.switches;
    let pass = tally.failures == 0
        && n == SWITCHES as u64
        && tally.racing_in_old + tally.racing_in_new == n
        && tally.after_in_new == n
        && tally.elsewhere == 0;
    checks.check(
        "reassign",
        pass,
        format_args!(
            "{n} owner switches of {} round DomIO, guest-a, guest-b with {} DMAs: the DMA racing each switch landed {} time(s) in the old owner's memory and {} in the new owner's; the DMA after each switch landed in the new owner's {} of {n} times; rounds where memory outside those targets changed (canaries of all three parties): {}; failed rounds: {}{}",
            d.sbdf,
            tally.dmas,
            tally.racing_in_old,
            tally.racing_in_new,
            tally.after_in_new,
            Count(tally.elsewhere),
            Count(tally.failures),
            first_failure.map_or_else(alloc::string::String::new, |f| alloc::format!(" (first: {f})")),
        ),
    );
    crate::console::figure("reassign-switches", n, "switches");
    crate::console::figure("reassign-dmas", tally.dmas, "dma");
    crate::console::figure("reassign-virtual-time", virtual_ms, "ms");
    let mut g = lock.lock();
    for dom in [a, b] {
        if let Err(e) = passthrough::destroy_domain(&mut g, &mut hv.frames, dom) {
            log::error!("reassign: destroying guest {dom}: {e}");
        }
    }
    drop(g);
    checks.invalidation_waits_completed(lock);
}

/// The page `gpa` lands in for `party` (a quarantined device's IOVAs all reach its scratch
/// page), and the offset in it.
fn target<V: Inspect>(
    lock: &DeviceLock<V>,
    d: &EduDevice,
    party: Party,
    gpa: u64,
) -> Option<(PhysAddr, usize)> {
    let g = lock.lock();
    let offset = (gpa % PAGE_SIZE) as usize;
    let page = match party {
        Party::Quarantine => g.state().scratch_page(d.sbdf)?,
        Party::Guest(dom) => g
            .state()
            .domains()
            .get(dom)?
            .memory
            .host_address(gpa)?
            .align_down(),
    };
    Some((page, offset))
}

/// One switch `old` → `new` with a DMA started before it and one after; `Err` says what
/// went wrong, in words.
fn one_switch<V: Inspect>(
    lock: &DeviceLock<V>,
    frames: &mut dyn FrameAllocator,
    d: &EduDevice,
    old: Party,
    new: Party,
    cycle: &[Party; 3],
    tally: &mut Tally,
) -> Result<(), alloc::string::String> {
    let racing = fresh_pattern();
    let after = fresh_pattern();
    // Load both patterns into the device's buffer from the current owner's memory.
    let (source, source_offset) =
        target(lock, d, old, SOURCE_GPA).ok_or("the old owner has no source page")?;
    let mut load = racing[..LEN].to_vec();
    load.extend_from_slice(&after[..LEN]);
    DIRECT_MAP.write_bytes(PhysAddr(source.0 + source_offset as u64), &load);
    d.edu
        .dma_from_ram(SOURCE_GPA, 0, 2 * LEN, edu::deadline())
        .map_err(|e| alloc::format!("loading the patterns: {e}"))?;
    tally.dmas += 1;
    // Every page of every party gets a canary; the DMAs may change only their targets.
    let mut pages: Vec<(PhysAddr, Vec<u8>)> = Vec::new();
    for party in cycle {
        for gpa in [RACING_GPA, AFTER_GPA] {
            let (page, _) = target(lock, d, *party, gpa).ok_or("a party has no page")?;
            if pages.iter().all(|(p, _)| *p != page) {
                let canary = fresh_pattern();
                DIRECT_MAP.write_bytes(page, &canary);
                pages.push((page, canary));
            }
        }
    }
    d.edu
        .start_dma(DmaDirection::EduToRam, RACING_GPA, 0, LEN)
        .map_err(|e| alloc::format!("starting the racing DMA: {e}"))?;
    let switched = switch(lock, frames, old, new, d);
    let raced = d.edu.wait_dma(edu::deadline());
    tally.dmas += 1;
    let report = switched.map_err(|e| alloc::format!("the switch was refused: {e}"))?;
    tally.switches += 1;
    if !report.clean() {
        return Err("the switch's invalidation did not complete".into());
    }
    raced.map_err(|e| alloc::format!("the racing DMA: {e}"))?;
    d.edu
        .dma_to_ram(AFTER_GPA, LEN, LEN, edu::deadline())
        .map_err(|e| alloc::format!("the DMA after the switch: {e}"))?;
    tally.dmas += 1;
    // Entering quarantine wipes the scratch page before the switch: its canary is zeros now.
    if new == Party::Quarantine {
        let scratch = target(lock, d, Party::Quarantine, 0).map(|(p, _)| p);
        for (page, canary) in pages.iter_mut() {
            if Some(*page) == scratch {
                canary.fill(0);
            }
        }
    }
    let landed = |party: Party, gpa: u64, pattern: &[u8]| {
        target(lock, d, party, gpa).is_some_and(|(p, o)| read_page(p)[o..o + LEN] == pattern[..LEN])
    };
    let in_old = landed(old, RACING_GPA, &racing);
    let in_new = landed(new, RACING_GPA, &racing);
    let after_in_new = landed(new, AFTER_GPA, &after);
    // Every byte outside the one place each DMA landed is the canary.
    let mut allowed: Vec<(PhysAddr, usize)> = Vec::new();
    for (hit, party, gpa) in [
        (in_old, old, RACING_GPA),
        (in_new && !in_old, new, RACING_GPA),
        (after_in_new, new, AFTER_GPA),
    ] {
        if let (true, Some(t)) = (hit, target(lock, d, party, gpa)) {
            allowed.push(t);
        }
    }
    let elsewhere = pages.iter().any(|(page, canary)| {
        let now = read_page(*page);
        (0..PAGE).any(|i| {
            let in_target = allowed
                .iter()
                .any(|(p, o)| p == page && (*o..*o + LEN).contains(&i));
            !in_target && now[i] != canary[i]
        })
    });
    tally.racing_in_old += u64::from(in_old && !in_new);
    tally.racing_in_new += u64::from(in_new && !in_old);
    tally.after_in_new += u64::from(after_in_new);
    tally.elsewhere += u64::from(elsewhere);
    match (in_old, in_new, after_in_new, elsewhere) {
        (_, _, _, true) => Err("a DMA changed memory outside its owner's target".into()),
        (true, true, _, _) => Err("the racing DMA landed in both owners' memory".into()),
        (false, false, _, _) => Err("the racing DMA landed in neither owner's memory".into()),
        (_, _, false, _) => Err("the DMA after the switch missed the new owner".into()),
        _ => Ok(()),
    }
}

fn switch<V: Inspect>(
    lock: &DeviceLock<V>,
    frames: &mut dyn FrameAllocator,
    old: Party,
    new: Party,
    d: &EduDevice,
) -> Result<SwitchReport, PassthroughError> {
    let mut g = lock.lock();
    match (old, new) {
        (Party::Quarantine, Party::Guest(to)) => passthrough::assign(&mut g, frames, to, d.sbdf),
        (Party::Guest(from), Party::Guest(to)) => {
            passthrough::reassign(&mut g, frames, from, to, d.sbdf)
        }
        (Party::Guest(from), Party::Quarantine) => passthrough::deassign(&mut g, from, d.sbdf),
        (Party::Quarantine, Party::Quarantine) => Ok(SwitchReport::default()),
    }
}
