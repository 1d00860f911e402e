//! The host's verdict on a *rogue-irq* guest (issue 11 part 5): a guest that asks its virtual
//! MSI capability for three messages Lazaret must refuse (a destination it does not have, an
//! exception vector, an address outside the interrupt window), then two legal ones (its
//! vector 0x80 — a host vector's number, but the guest's own — and 0x50), raising edu's
//! interrupt after each, and finally has edu DMA 0x30 into the interrupt window.
//!
//! What is read is the host's own state, never the guest's word: the refusals Lazaret
//! counted, the per-vector counts of the host IDT before and after the run, the guest's route
//! and its virtual LAPIC, and how the guest ended. QEMU passes the window DMA as an interrupt
//! (no requester ID: VT-d compatibility format under source ID 0xffff, AMD-Vi as the IOAPIC's;
//! README "QEMU limits met"), so an interrupt on the DMA's vector 0x30, at most one per write,
//! is reported as that QEMU defect — and still fails the check.
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write as _;

use lazaret_guest_abi::GuestExit;

use super::checks::Checks;
use crate::arch::idt::{take_pending_interrupts, taken_snapshot};
use crate::arch::lapic::SPURIOUS;
use crate::guest::exits::Ending;
use crate::guest::lifecycle::Guest;
use crate::vcpu::svm::SvmVcpu;

/// The forged requests the variant makes, each of which Lazaret must refuse.
const FORGED_REQUESTS: u64 = 3;
/// Its legal requests, each raised once: what its route may bring it.
const LEGAL_RAISES: u64 = 2;
/// The data its edu writes into the interrupt window, and how many writes it makes.
const WINDOW_VECTOR: u8 = 0x30;
const WINDOW_WRITES: u64 = 2;

/// Per-vector interrupt counts of the host IDT ([`taken_snapshot`]).
pub type Counts = [u64; 256];

/// The counts before the guest runs.
pub fn before_run() -> Counts {
    taken_snapshot()
}

/// The check, RESULT `rogue-irq-stopped`. `amd` picks which QEMU defect the sentence names.
pub fn check(g: &Guest<SvmVcpu>, before: &Counts, amd: bool, checks: &mut Checks) -> bool {
    // An interrupt still pending at the local APIC arrived during the run too.
    take_pending_interrupts();
    let after = taken_snapshot();
    let own: Vec<u8> = g.irq.routes().iter().map(|r| r.host_vector).collect();
    let foreign: Vec<(u8, u64)> = (32..=255u8)
        .filter(|v| *v != SPURIOUS && !own.contains(v))
        .map(|v| {
            (
                v,
                after[usize::from(v)].wrapping_sub(before[usize::from(v)]),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    let v = g.irq.vlapic.counts();
    let routed = g.irq.host_interrupts;
    let refused = g.irq.refused;
    let exited = g.ending == Some(Ending::Exited(GuestExit::RogueDmaTried.code()));
    let all_refused = refused == FORGED_REQUESTS;
    let only_own = routed == LEGAL_RAISES && v.raised == routed && v.delivered == v.raised;
    let qemu_window = !foreign.is_empty()
        && foreign
            .iter()
            .all(|&(vec, n)| vec == WINDOW_VECTOR && n <= WINDOW_WRITES);
    let said = g
        .ending
        .as_ref()
        .map_or_else(|| String::from("still running"), |e| alloc::format!("{e}"));
    let mut hit = String::new();
    for (vec, n) in &foreign {
        let _ = write!(hit, " {n} on {vec:#x}");
    }
    if hit.is_empty() {
        hit.push_str(" none");
    }
    let defect = match (qemu_window && exited && all_refused && only_own, amd) {
        (false, _) => "",
        (true, true) => " (its DMA into the window: QEMU's amd-iommu takes device DMA without a requester ID as the IOAPIC's, whose interrupts pass: a QEMU defect; hardware tags it with the device's requester ID)",
        (true, false) => " (its DMA into the window: QEMU's intel-iommu passes the compatibility-format write, source ID 0xffff, on: a QEMU defect; hardware blocks it, fault 0x25)",
    };
    checks.check(
        "rogue-irq-stopped",
        exited && all_refused && only_own && foreign.is_empty(),
        format_args!(
            "guest {} {said}; of its {FORGED_REQUESTS} forged MSI requests (another CPU, an exception vector, outside the interrupt window) Lazaret refused {refused}; its own route (host vector{}) took {routed} host interrupt(s) for its {LEGAL_RAISES} legal raises, and its virtual LAPIC raised {} and delivered {}; host vectors outside its route that took interrupts during its run:{hit}{defect}; Lazaret carries on",
            g.spec.name,
            own.iter().fold(String::new(), |mut s, h| {
                let _ = write!(s, " {h:#x}");
                s
            }),
            v.raised,
            v.delivered,
        ),
    )
}
