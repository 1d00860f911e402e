//! Event injection (EVENTINJ, VMCB 0x0A8) and the exit's record of an interrupted delivery
//! (EXITINTINFO, 0x088): the same 64-bit format, APM vol. 2 §15.20 figure 15-10 — vector in
//! 7:0, type in 10:8, EV (error code valid) bit 11, V (valid) bit 31, error code in 63:32.

/// TYPE field values (§15.20).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// External (hardware) interrupt.
    Intr = 0,
    Nmi = 2,
    Exception = 3,
    /// Software interrupt (INTn).
    SoftInt = 4,
}

const VALID: u64 = 1 << 31;
const ERROR_VALID: u64 = 1 << 11;

/// One event to inject, or one read from EXITINTINFO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventInj {
    pub vector: u8,
    pub kind: EventType,
    pub error_code: Option<u32>,
}

/// Exceptions that push an error code (APM vol. 2 §8.2, table 8-1).
pub fn exception_has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

impl EventInj {
    /// A hardware exception, with an error code exactly when the vector pushes one.
    /// `None` for vectors that are not exceptions (2 is NMI, ≥ 32 interrupts): VMRUN would
    /// fail with VMEXIT_INVALID on them.
    pub fn exception(vector: u8, error_code: u32) -> Option<EventInj> {
        if vector >= 32 || vector == 2 {
            return None;
        }
        Some(EventInj {
            vector,
            kind: EventType::Exception,
            error_code: exception_has_error_code(vector).then_some(error_code),
        })
    }

    /// An external interrupt (type INTR, never an error code). `None` for vectors 0–31, which
    /// are the exceptions' (Intel SDM vol. 3A §6.2 reserves them; a guest's IDT has its
    /// exception handlers there).
    pub fn interrupt(vector: u8) -> Option<EventInj> {
        (vector >= 32).then_some(EventInj {
            vector,
            kind: EventType::Intr,
            error_code: None,
        })
    }

    /// Whether `raw` (EVENTINJ or EXITINTINFO) holds an event: its V bit.
    pub fn is_pending(raw: u64) -> bool {
        raw & VALID != 0
    }

    pub fn encode(&self) -> u64 {
        let mut v = VALID | u64::from(self.vector) | ((self.kind as u64) << 8);
        if let Some(e) = self.error_code {
            v |= ERROR_VALID | (u64::from(e) << 32);
        }
        v
    }

    /// Decodes a valid entry; `None` when V is clear or TYPE is reserved (1, 5–7).
    pub fn decode(raw: u64) -> Option<EventInj> {
        if raw & VALID == 0 {
            return None;
        }
        let kind = match (raw >> 8) & 7 {
            0 => EventType::Intr,
            2 => EventType::Nmi,
            3 => EventType::Exception,
            4 => EventType::SoftInt,
            _ => return None,
        };
        Some(EventInj {
            vector: raw as u8,
            kind,
            error_code: (raw & ERROR_VALID != 0).then_some((raw >> 32) as u32),
        })
    }

    /// Whether VMRUN accepts this in EVENTINJ (§15.20: no exception with a vector that is
    /// not an exception, vector 2 included).
    pub fn is_legal(&self) -> bool {
        match self.kind {
            EventType::Exception => self.vector < 32 && self.vector != 2,
            EventType::Nmi => self.vector == 2,
            EventType::Intr | EventType::SoftInt => true,
        }
    }
}

/// What to re-inject after an exit that interrupted an event's delivery (EXITINTINFO,
/// §15.7.2). Some CPUs (QEMU's TCG among them, design.md §6) report a hardware interrupt as
/// type EXCEPT; re-injecting that as an exception with a vector ≥ 32 gives VMEXIT_INVALID, so
/// it becomes an external interrupt again (an EXCEPT vector 2 becomes an NMI). A software
/// interrupt is dropped: RIP still points at the INTn, which runs again.
pub fn sanitize_exit_int_info(raw: u64) -> Option<EventInj> {
    let event = EventInj::decode(raw)?;
    match event.kind {
        EventType::Exception if event.vector >= 32 => Some(EventInj {
            kind: EventType::Intr,
            error_code: None,
            ..event
        }),
        EventType::Exception if event.vector == 2 => Some(EventInj {
            kind: EventType::Nmi,
            error_code: None,
            ..event
        }),
        EventType::Exception => Some(EventInj {
            error_code: if exception_has_error_code(event.vector) {
                Some(event.error_code.unwrap_or(0))
            } else {
                None
            },
            ..event
        }),
        EventType::Intr | EventType::Nmi => Some(EventInj {
            error_code: None,
            ..event
        }),
        EventType::SoftInt => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_per_figure_15_10() {
        // #GP(0x18): vector 13, type 3, EV, V, error code in the high half.
        let gp = EventInj::exception(13, 0x18).unwrap();
        assert_eq!(gp.encode(), 0x0000_0018_8000_0B0D);
        // #UD: no error code, EV clear.
        assert_eq!(EventInj::exception(6, 0x55).unwrap().encode(), 0x8000_0306);
        assert_eq!(EventInj::exception(2, 0), None);
        assert_eq!(EventInj::exception(32, 0), None);
        assert_eq!(EventInj::decode(gp.encode()), Some(gp));
        assert_eq!(EventInj::decode(0x0B0D), None, "V clear");
        assert_eq!(EventInj::decode(0x8000_0100), None, "type 1 is reserved");
    }

    #[test]
    fn an_external_interrupt_is_type_intr_without_error_code() {
        // Figure 15-10: vector 0x50 in 7:0, TYPE 0 (INTR) in 10:8, EV (11) clear, V (31) set.
        let e = EventInj::interrupt(0x50).unwrap();
        assert_eq!(e.encode(), 0x8000_0050);
        assert_eq!(EventInj::interrupt(0xFF).unwrap().encode(), 0x8000_00FF);
        assert_eq!(EventInj::interrupt(32).unwrap().encode(), 0x8000_0020);
        assert_eq!(EventInj::interrupt(31), None, "vectors 0-31 are exceptions");
        assert_eq!(EventInj::interrupt(0), None);
        assert!(e.is_legal());
        assert!(EventInj::is_pending(0x8000_0000));
        assert!(!EventInj::is_pending(0x0000_0350), "V clear");
    }

    #[test]
    fn a_hardware_interrupt_reported_as_except_is_reinjected_as_an_interrupt() {
        // Type EXCEPT (3), vector 0x30: what TCG reports for an interrupted IRQ delivery.
        let raw = VALID | (3 << 8) | 0x30;
        let e = sanitize_exit_int_info(raw).unwrap();
        assert_eq!(e.kind, EventType::Intr);
        assert_eq!(e.vector, 0x30);
        assert!(e.is_legal());
        assert!(!EventInj::decode(raw).unwrap().is_legal());
        // The boundary: vector 32 is the first that is not an exception, 31 the last that is.
        assert_eq!(
            sanitize_exit_int_info(VALID | (3 << 8) | 32).unwrap().kind,
            EventType::Intr
        );
        assert_eq!(
            sanitize_exit_int_info(VALID | (3 << 8) | 31).unwrap().kind,
            EventType::Exception
        );
        let nmi = sanitize_exit_int_info(VALID | (3 << 8) | 2).unwrap();
        assert_eq!(nmi.kind, EventType::Nmi);
        // A genuine #PF keeps its error code; a soft INT is dropped.
        let pf = sanitize_exit_int_info(VALID | ERROR_VALID | (3 << 8) | 14 | (6 << 32)).unwrap();
        assert_eq!((pf.kind, pf.error_code), (EventType::Exception, Some(6)));
        assert_eq!(sanitize_exit_int_info(VALID | (4 << 8) | 0x80), None);
        assert_eq!(sanitize_exit_int_info(0), None);
    }
}
