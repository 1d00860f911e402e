//! Fault draining through the core: records posted in the simulated unit's fault-recording
//! registers (VT-d §10.4.14) are attributed to the device owning the requester ID and to its
//! owner, the log is rate-limited, and a device past the threshold loses Bus Master Enable
//! exactly once.
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;

use lazaret_types::{Bdf, Sbdf};
use lazaret_vtd::sim_device::{SimVtd, FAULT_STORM, NFR};

use super::fixture::*;
use crate::cmdline::QuarantineMode;
use crate::passthrough::faults::{LOG_BURST, THRESHOLD};
use crate::passthrough::{self, FaultReport};

std::thread_local! {
    static LINES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Collects this thread's log lines, so a test reads only its own.
struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        LINES.with(|l| l.borrow_mut().push(format!("{}", record.args())));
    }
    fn flush(&self) {}
}

static CAPTURE: Capture = Capture;

fn take_lines() -> Vec<String> {
    // Another logger may have won the race in this process; then the tests that read lines
    // would fail loudly rather than silently pass.
    let _ = log::set_logger(&CAPTURE);
    log::set_max_level(log::LevelFilter::Trace);
    LINES.with(|l| core::mem::take(&mut *l.borrow_mut()))
}

/// A pending fault record from `rid`: F (bit 127), type write (bit 126 = 0), reason 5h
/// (write to a not-present/read-only entry), source id bits 79:64, page address in 63:12.
fn record(rid: Bdf, page: u64) -> (u64, u64) {
    (
        page << 12,
        (1 << 63) | (5 << 32) | u64::from(rid.requester_id()),
    )
}

fn drain(
    g: &mut Guard<'_, '_>,
    now_ms: u64,
    disabled: &mut Vec<Sbdf>,
    succeed: bool,
) -> FaultReport {
    passthrough::drain_faults(g, now_ms, &mut |s| {
        disabled.push(s);
        succeed
    })
}

#[test]
fn faults_are_attributed_rate_limited_and_a_storm_disables_bus_mastering_once() {
    take_lines();
    let sim = SimVtd::new();
    let mut alloc = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, QuarantineMode::Scratch);
    let mut g = lock.lock();
    let (noisy, quiet) = (cast(0), cast(2));
    add(&mut g, &mut alloc, &noisy).unwrap();
    add(&mut g, &mut alloc, &quiet).unwrap();
    let guest = passthrough::create_domain(&mut g, &mut alloc, "g1", 2).unwrap();
    passthrough::assign(&mut g, &mut alloc, guest, noisy.sbdf).unwrap();
    // Records stay pending after the driver clears them: every drain finds NFR again.
    sim.set_dead(FAULT_STORM);
    for i in 0..NFR {
        sim.post_fault(i, record(noisy.rids[0], 0x40 + i as u64));
    }
    let mut disabled = Vec::new();

    take_lines();
    let r = drain(&mut g, 0, &mut disabled, true);
    assert_eq!((r.faults, r.suppressed, r.overflowed), (NFR, 0, 0));
    assert!(r
        .recorded
        .iter()
        .all(|f| f.requester == noisy.rids[0] && f.write));
    assert_eq!(r.recorded[0].address, 0x40 << 12);
    let lines = take_lines();
    assert!(
        lines.iter().any(|l| l.contains("write at 0x40000")),
        "each line says what faulted: {lines:?}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("not logged") || l.contains("overflowed")),
        "no rate-limit or overflow line when nothing was held back: {lines:?}"
    );
    let attribution = format!("(device {}, domain g1)", noisy.sbdf);
    assert_eq!(
        lines.iter().filter(|l| l.ends_with(&attribution)).count(),
        NFR,
        "{lines:?}"
    );
    assert_eq!(g.state().devices[&noisy.sbdf].faults.total, NFR as u64);
    assert_eq!(g.state().devices[&quiet.sbdf].faults.total, 0);
    assert!(disabled.is_empty() && r.disabled.is_empty());

    // Same log window: nothing more is printed line by line; the score reaches the threshold.
    let r = drain(&mut g, 1, &mut disabled, true);
    assert_eq!(
        2 * NFR,
        THRESHOLD as usize,
        "the test crosses the threshold here"
    );
    assert_eq!(
        (r.faults, r.suppressed),
        (NFR, NFR - (LOG_BURST as usize).saturating_sub(NFR))
    );
    assert!(take_lines()
        .iter()
        .any(|l| l.contains(&format!("{} more fault(s) not logged", r.suppressed))));
    assert_eq!(disabled, [noisy.sbdf]);
    assert_eq!(r.disabled, [noisy.sbdf]);
    assert!(g.state().devices[&noisy.sbdf].bus_master_disabled);

    // Past the threshold already: Bus Master Enable is not cleared a second time.
    let r = drain(&mut g, 2, &mut disabled, true);
    assert_eq!(r.faults, NFR);
    assert_eq!(disabled, [noisy.sbdf], "the callback ran exactly once");
    assert!(r.disabled.is_empty());
    assert_eq!(g.state().devices[&noisy.sbdf].faults.total, 3 * NFR as u64);
}

#[test]
fn phantom_and_unknown_requesters_and_a_failed_disable() {
    take_lines();
    let sim = SimVtd::new();
    let mut alloc = new_alloc(&sim);
    let lock = new_lock(&sim, &mut alloc, QuarantineMode::Scratch);
    let mut g = lock.lock();
    let phantom = cast(2);
    add(&mut g, &mut alloc, &phantom).unwrap();
    let stranger = bdf(7, 7, 7);
    sim.post_fault(0, record(phantom.rids[1], 1));
    sim.post_fault(1, record(stranger, 2));
    sim.set_overflow();
    let mut disabled = Vec::new();
    take_lines();
    let r = drain(&mut g, 0, &mut disabled, false);
    assert_eq!((r.faults, r.overflowed, r.suppressed), (2, 1, 0));
    let lines = take_lines();
    let at = |needle: &str| lines.iter().any(|l| l.contains(needle));
    assert!(
        at(&format!("(device {}, domain DomIO)", phantom.sbdf)),
        "{lines:?}"
    );
    assert!(at("(device unknown, domain none)"), "{lines:?}");
    assert!(at("overflowed"), "{lines:?}");
    assert_eq!(g.state().devices[&phantom.sbdf].faults.total, 1);
    // Records were cleared (no storm): the next drain finds nothing.
    assert_eq!(
        drain(&mut g, 1, &mut disabled, false),
        FaultReport::default()
    );

    // A disable that fails is retried at the next fault past the threshold.
    sim.set_dead(FAULT_STORM);
    for i in 0..NFR {
        sim.post_fault(i, record(phantom.rids[0], i as u64));
    }
    for now in 2..4 {
        drain(&mut g, now, &mut disabled, false);
    }
    assert!(!disabled.is_empty() && disabled.iter().all(|s| *s == phantom.sbdf));
    assert!(!g.state().devices[&phantom.sbdf].bus_master_disabled);
    let tries = disabled.len();
    let r = drain(&mut g, 4, &mut disabled, true);
    assert_eq!(disabled.len(), tries + 1);
    assert_eq!(r.disabled, [phantom.sbdf]);
}
