//! What the demo shows of a guest's device interrupts (issue 11): the guest slept in HLT until
//! its DMA-completion MSI arrived — remapped by the IOMMU to a host vector of its own, taken by
//! the host, injected as the guest's vector and acknowledged by the guest's EOI — and how long
//! that took from the host's interrupt entry to the guest's handler.
use lazaret_guest_abi::interrupts::DMA_DONE_VECTOR;
use lazaret_guest_abi::{GuestArgs, Wait};

use super::checks::Checks;
use crate::arch::tsc;
use crate::guest::interrupts::Latency;
use crate::guest::lifecycle::Guest;
use crate::vcpu::{ExitKind, Vcpu};

/// DMAs in a good guest's round trip, each waited for by interrupt.
const ROUND_TRIP_DMAS: u64 = 2;

/// The good guest `g` got its device's interrupts, every one accounted for: asleep in HLT
/// (`wait=hlt`), or — `wait=window` — held while it polled with interrupts off and injected
/// when its interrupt window opened.
pub fn check_woken<C: Vcpu>(g: &Guest<C>, checks: &mut Checks) {
    let irq = &g.irq;
    let c = irq.vlapic.counts();
    let route = irq.routes().iter().find(|r| r.guest_vector.is_some());
    let exits = g.exit_counts();
    let (halts, windows) = (
        exits.get(ExitKind::Hlt),
        exits.get(ExitKind::InterruptWindow),
    );
    let wait = wait_of(g);
    let waited = match wait {
        Wait::Hlt => halts >= 1,
        Wait::Window => halts == 0 && windows >= 1,
    };
    let ok = route.is_some_and(|r| r.guest_vector == Some(DMA_DONE_VECTOR))
        && irq.host_interrupts >= ROUND_TRIP_DMAS
        && c.delivered == irq.host_interrupts
        && c.eois == c.delivered
        && waited
        && irq.latency.samples >= 1;
    let routed = route.map_or_else(
        || alloc::string::String::from("its device's MSI was never routed"),
        |r| {
            alloc::format!(
                "{} MSI(s) from {} remapped to host vector {:#x}",
                irq.host_interrupts,
                r.sbdf,
                r.host_vector
            )
        },
    );
    let how = match wait {
        Wait::Hlt => alloc::format!(
            "slept in HLT ({halts} time(s)) until its DMA-completion interrupts"
        ),
        Wait::Window => alloc::format!(
            "polled its device with interrupts off ({halts} HLT(s)); its DMA-completion interrupts were held until its interrupt window opened ({windows} interrupt-window exit(s))"
        ),
    };
    checks.check(
        "guest-interrupts",
        ok,
        format_args!(
            "guest {} {how}: {routed}, {} injected as guest vector {DMA_DONE_VECTOR:#x}, {} acknowledged by its EOI",
            g.spec.name, c.delivered, c.eois
        ),
    );
}

/// How the guest's command line says it waits (`wait=`; HLT when it says nothing).
fn wait_of<C: Vcpu>(g: &Guest<C>) -> Wait {
    GuestArgs::parse(&g.spec.cmdline).map_or(Wait::Hlt, |a| a.wait)
}

/// Whether `g`'s latency samples measure Lazaret's path alone: a guest asleep in HLT takes
/// its interrupt at once; one that polls with interrupts off holds it as long as it likes.
pub fn latency_is_lazarets<C: Vcpu>(g: &Guest<C>) -> bool {
    wait_of(g) == Wait::Hlt
}

/// "12.3 µs" from TSC ticks.
fn micros(ticks: u64) -> alloc::string::String {
    let ns = tsc::ticks_to_nanos(ticks);
    alloc::format!("{}.{} µs", ns / 1000, (ns % 1000) / 100)
}

/// `FIGURE guest-interrupt-latency <mean> us`, when there was a sample.
pub fn print_latency_figure(l: &Latency) {
    if let Some(mean) = l.mean() {
        let ns = tsc::ticks_to_nanos(mean);
        crate::console::figure(
            "guest-interrupt-latency",
            format_args!("{}.{:03}", ns / 1000, ns % 1000),
            "us",
        );
    }
}

/// The figure: host interrupt entry → guest handler entry, over every sample.
pub fn latency_figure(l: &Latency) -> Option<alloc::string::String> {
    l.mean().map(|mean| {
        alloc::format!(
            "min {} / mean {} / max {} over {} interrupt(s)",
            micros(l.min),
            micros(mean),
            micros(l.max),
            l.samples
        )
    })
}
