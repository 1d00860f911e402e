//! Delivering an external interrupt to a guest (APM vol. 2 §15.20, §15.21.4–§15.21.6): through
//! EVENTINJ when the guest can take it on the next entry, otherwise by arming a virtual
//! interrupt window — V_IRQ with the VINTR intercept — whose exit says when it can.
//!
//! EVENTINJ delivers regardless of the guest's RFLAGS.IF and interrupt shadow (§15.20), so the
//! host must check both itself; an event already in EVENTINJ (a re-injection of what an exit
//! interrupted, or an earlier injection) must not be overwritten.
use crate::event::EventInj;
use crate::intercept::misc1;
use crate::vmcb::{ControlArea, Vmcb};

/// RFLAGS.IF (APM vol. 2 §3.1.6).
pub const RFLAGS_IF: u64 = 1 << 9;

/// The guest's RFLAGS.IF.
pub fn interrupts_enabled(v: &Vmcb) -> bool {
    v.save.rflags & RFLAGS_IF != 0
}

/// Whether an external interrupt put in EVENTINJ now would reach the guest at a point where
/// it accepts one: IF set, no interrupt shadow, EVENTINJ free.
pub fn can_inject_interrupt(v: &Vmcb) -> bool {
    interrupts_enabled(v)
        && !v.control.in_interrupt_shadow()
        && !EventInj::is_pending(v.control.event_inj)
}

/// Injects `event` (an external interrupt) on the next entry and returns `true`, or, when the
/// guest cannot take it now, arms the interrupt window and returns `false`.
pub fn offer_interrupt(v: &mut Vmcb, event: EventInj) -> bool {
    if can_inject_interrupt(v) {
        v.control.event_inj = event.encode();
        return true;
    }
    arm_window(&mut v.control, event.vector);
    false
}

/// V_IRQ = 1 with V_IGN_TPR (the guest's TPR is Lazaret's business, not the CPU's) and the
/// VINTR intercept: the guest exits as soon as it could take an interrupt, before taking it.
pub fn arm_window(c: &mut ControlArea, vector: u8) {
    c.vintr = c
        .vintr
        .with_irq(true)
        .with_ign_tpr(true)
        .with_prio(vector >> 4)
        .with_vector(vector);
    c.intercept_misc1 |= misc1::VINTR;
    // The CPU may cache V_IRQ and the intercepts (clean bits "TPR" and "I").
    c.clean_bits = 0;
}

/// Undoes [`arm_window`] after its VINTR exit: the CPU leaves V_IRQ set (it was not taken),
/// so without this the guest would exit again at once, or take V_INTR_VECTOR itself.
pub fn close_window(c: &mut ControlArea) {
    c.vintr = c.vintr.with_irq(false).with_ign_tpr(false);
    c.intercept_misc1 &= !misc1::VINTR;
    c.clean_bits = 0;
}

pub fn window_armed(c: &ControlArea) -> bool {
    c.vintr.irq() && c.intercept_misc1 & misc1::VINTR != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmcb::raw::{u32_at, u64_at};

    // Table B-1 / B-2 offsets and bits, restated from the APM.
    const INTERCEPT_MISC1: usize = 0x00C;
    const VINTR: usize = 0x060;
    const INT_STATE: usize = 0x068;
    const EVENTINJ: usize = 0x0A8;
    const RFLAGS: usize = 0x400 + 0x170;
    const V_IRQ: u64 = 1 << 8;
    const V_IGN_TPR: u64 = 1 << 20;
    const V_INTR_MASKING: u64 = 1 << 24;
    const VINTR_INTERCEPT: u32 = 1 << 4;

    fn guest(rflags: u64) -> Box<Vmcb> {
        let mut v = Box::new(Vmcb::zeroed());
        v.set_controls(0x1000, 0x4000, 1, 0x8000);
        v.save.rflags = rflags;
        v
    }

    #[test]
    fn a_guest_with_if_set_gets_the_interrupt_through_eventinj() {
        let mut v = guest(0x202);
        assert_eq!(u64_at(&v, RFLAGS) & (1 << 9), 1 << 9);
        assert!(offer_interrupt(&mut v, EventInj::interrupt(0x50).unwrap()));
        // V, TYPE 0, vector 0x50.
        assert_eq!(u64_at(&v, EVENTINJ), 0x8000_0050);
        assert_eq!(u64_at(&v, VINTR) & V_IRQ, 0, "no window");
        assert_eq!(u32_at(&v, INTERCEPT_MISC1) & VINTR_INTERCEPT, 0);
    }

    #[test]
    fn if_clear_arms_the_window_instead() {
        let mut v = guest(0x2);
        assert!(!offer_interrupt(&mut v, EventInj::interrupt(0x50).unwrap()));
        assert_eq!(u64_at(&v, EVENTINJ), 0, "nothing injected");
        let vintr = u64_at(&v, VINTR);
        assert_eq!(vintr & V_IRQ, V_IRQ);
        assert_eq!(vintr & V_IGN_TPR, V_IGN_TPR);
        assert_eq!(vintr & V_INTR_MASKING, V_INTR_MASKING, "masking kept");
        assert_eq!((vintr >> 32) & 0xFF, 0x50, "V_INTR_VECTOR 39:32");
        assert_eq!((vintr >> 16) & 0xF, 0x5, "V_INTR_PRIO 19:16");
        assert_eq!(
            u32_at(&v, INTERCEPT_MISC1) & VINTR_INTERCEPT,
            VINTR_INTERCEPT
        );
        assert!(window_armed(&v.control));
    }

    #[test]
    fn an_interrupt_shadow_arms_the_window_instead() {
        let mut v = guest(0x202);
        v.control.interrupt_shadow = 1;
        assert_eq!(u64_at(&v, INT_STATE), 1);
        assert!(!offer_interrupt(&mut v, EventInj::interrupt(0x50).unwrap()));
        assert_eq!(u64_at(&v, EVENTINJ), 0);
        assert_eq!(u64_at(&v, VINTR) & V_IRQ, V_IRQ);
        // GUEST_INTERRUPT_MASK (bit 1) alone is no shadow.
        let mut v = guest(0x202);
        v.control.interrupt_shadow = 2;
        assert!(offer_interrupt(&mut v, EventInj::interrupt(0x50).unwrap()));
    }

    #[test]
    fn a_pending_event_is_never_overwritten() {
        // A #PF re-injected from EXITINTINFO (V, EV, type 3, vector 14, error code 2).
        let reinjection = 0x0000_0002_8000_0B0E;
        let mut v = guest(0x202);
        v.control.event_inj = reinjection;
        assert!(!offer_interrupt(&mut v, EventInj::interrupt(0x50).unwrap()));
        assert_eq!(u64_at(&v, EVENTINJ), reinjection);
        assert_eq!(u64_at(&v, VINTR) & V_IRQ, V_IRQ);
        // A second interrupt after a first was injected waits too.
        let mut v = guest(0x202);
        assert!(offer_interrupt(&mut v, EventInj::interrupt(0x50).unwrap()));
        assert!(!offer_interrupt(&mut v, EventInj::interrupt(0x51).unwrap()));
        assert_eq!(u64_at(&v, EVENTINJ), 0x8000_0050);
    }

    #[test]
    fn closing_the_window_clears_v_irq_and_the_intercept_only() {
        let mut v = guest(0x2);
        let baseline = u32_at(&v, INTERCEPT_MISC1);
        arm_window(&mut v.control, 0x50);
        close_window(&mut v.control);
        assert_eq!(u64_at(&v, VINTR) & (V_IRQ | V_IGN_TPR), 0);
        assert_eq!(u64_at(&v, VINTR) & V_INTR_MASKING, V_INTR_MASKING);
        assert_eq!(
            u32_at(&v, INTERCEPT_MISC1),
            baseline,
            "the other intercepts stay"
        );
        assert!(!window_armed(&v.control));
    }
}
