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
use crate::arch::idt::{take_pending_interrupts, taken_between, taken_snapshot, TakenCounts};
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

/// What the host saw of one rogue-irq run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Seen {
    /// It ended by its own HC_EXIT with the "done trying" status.
    exited: bool,
    refused: u64,
    /// Host interrupts on its route's vector(s), passed to its virtual LAPIC.
    routed: u64,
    raised: u64,
    delivered: u64,
    /// (vector, interrupts) on host vectors outside its route during its run.
    foreign: Vec<(u8, u64)>,
}

impl Seen {
    fn all_refused(&self) -> bool {
        self.refused == FORGED_REQUESTS
    }

    /// Its vLAPIC raised and delivered exactly what its route's host interrupts brought: one
    /// per legal raise.
    fn only_own(&self) -> bool {
        self.routed == LEGAL_RAISES && self.raised == self.routed && self.delivered == self.raised
    }

    fn stopped(&self) -> bool {
        self.exited && self.all_refused() && self.only_own() && self.foreign.is_empty()
    }

    /// Failed only by what QEMU's IOMMUs pass: interrupts on the window DMA's vector alone, at
    /// most one per write, with everything else held.
    fn only_qemu_window(&self) -> bool {
        let window = |&(v, n): &(u8, u64)| v == WINDOW_VECTOR && n <= WINDOW_WRITES;
        self.exited
            && self.all_refused()
            && self.only_own()
            && !self.foreign.is_empty()
            && self.foreign.iter().all(window)
    }
}

/// Device vectors but `own` that took interrupts between two snapshots.
fn foreign(before: &TakenCounts, after: &TakenCounts, own: &[u8]) -> Vec<(u8, u64)> {
    taken_between(before, after)
        .filter(|(v, _)| !own.contains(v))
        .collect()
}

/// The check, RESULT `rogue-irq-stopped`. `amd` picks which QEMU defect the sentence names.
pub fn check(g: &Guest<SvmVcpu>, before: &TakenCounts, amd: bool, checks: &mut Checks) -> bool {
    // An interrupt still pending at the local APIC arrived during the run too.
    take_pending_interrupts();
    let after = taken_snapshot();
    let own: Vec<u8> = g.irq.routes().iter().map(|r| r.host_vector).collect();
    let v = g.irq.vlapic.counts();
    let seen = Seen {
        exited: g.ending == Some(Ending::Exited(GuestExit::RogueDmaTried.code())),
        refused: g.irq.refused,
        routed: g.irq.host_interrupts,
        raised: v.raised,
        delivered: v.delivered,
        foreign: foreign(before, &after, &own),
    };
    let said = g
        .ending
        .as_ref()
        .map_or_else(|| String::from("still running"), |e| alloc::format!("{e}"));
    let mut hit = String::new();
    for (vec, n) in &seen.foreign {
        let _ = write!(hit, " {n} on {vec:#x}");
    }
    if hit.is_empty() {
        hit.push_str(" none");
    }
    let mut own_vectors = String::new();
    for h in &own {
        let _ = write!(own_vectors, " {h:#x}");
    }
    let defect = match (seen.only_qemu_window(), amd) {
        (false, _) => "",
        (true, true) => " (its DMA into the window: QEMU's amd-iommu takes device DMA without a requester ID as the IOAPIC's, whose interrupts pass: a QEMU defect; hardware tags it with the device's requester ID)",
        (true, false) => " (its DMA into the window: QEMU's intel-iommu passes the compatibility-format write, source ID 0xffff, on: a QEMU defect; hardware blocks it, fault 0x25)",
    };
    checks.check(
        "rogue-irq-stopped",
        seen.stopped(),
        format_args!(
            "guest {} {said}; of its {FORGED_REQUESTS} forged MSI requests (another CPU, an exception vector, outside the interrupt window) Lazaret refused {}; its own route (host vector{own_vectors}) took {} host interrupt(s) for its {LEGAL_RAISES} legal raises, and its virtual LAPIC raised {} and delivered {}; host vectors outside its route that took interrupts during its run:{hit}{defect}; Lazaret carries on",
            g.spec.name, seen.refused, seen.routed, seen.raised, seen.delivered,
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held() -> Seen {
        Seen {
            exited: true,
            refused: 3,
            routed: 2,
            raised: 2,
            delivered: 2,
            foreign: Vec::new(),
        }
    }

    #[test]
    fn stopped_only_when_every_part_held() {
        assert!(held().stopped());
        let broken = [
            Seen {
                exited: false,
                ..held()
            },
            Seen {
                refused: 2,
                ..held()
            },
            Seen {
                refused: 4,
                ..held()
            },
            Seen {
                routed: 3,
                raised: 3,
                delivered: 3,
                ..held()
            },
            Seen {
                raised: 3,
                ..held()
            },
            Seen {
                delivered: 1,
                ..held()
            },
            Seen {
                foreign: alloc::vec![(0x30, 1)],
                ..held()
            },
        ];
        for s in broken {
            assert!(!s.stopped(), "{s:?}");
        }
    }

    #[test]
    fn the_qemu_window_defect_is_exactly_the_window_vector_with_all_else_held() {
        assert!(!held().only_qemu_window(), "nothing to excuse");
        assert!(Seen {
            foreign: alloc::vec![(0x30, 1)],
            ..held()
        }
        .only_qemu_window());
        assert!(Seen {
            foreign: alloc::vec![(0x30, 2)],
            ..held()
        }
        .only_qemu_window());
        for s in [
            Seen {
                foreign: alloc::vec![(0x30, 3)],
                ..held()
            },
            Seen {
                foreign: alloc::vec![(0x31, 1)],
                ..held()
            },
            Seen {
                foreign: alloc::vec![(0x30, 1), (0x80, 1)],
                ..held()
            },
            Seen {
                foreign: alloc::vec![(0x30, 1)],
                refused: 2,
                ..held()
            },
            Seen {
                foreign: alloc::vec![(0x30, 1)],
                delivered: 3,
                ..held()
            },
            Seen {
                foreign: alloc::vec![(0x30, 1)],
                exited: false,
                ..held()
            },
        ] {
            assert!(!s.only_qemu_window(), "{s:?}");
        }
    }

    #[test]
    fn foreign_vectors_leave_out_the_route_the_spurious_vector_and_exceptions() {
        let before = [5u64; 256];
        let mut after = before;
        for v in [0x0e, 0x30, 0x81, 0x90, 0xff] {
            after[v] += 1;
        }
        after[0x90] += 1;
        assert_eq!(foreign(&before, &after, &[0x81]), [(0x30, 1), (0x90, 2)]);
        assert_eq!(foreign(&before, &before, &[]), []);
    }
}
