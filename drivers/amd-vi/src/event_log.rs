//! Event log (AMD IOMMU spec §2.5): a ring of 16-byte entries the IOMMU writes at the tail;
//! software reads from the head and moves the Event Log Head register (§3.4.8).
//!
//! Entry layout (§2.5, "Event Log Entry" figures): bits 15:0 DeviceID, 47:32 DomainID (or
//! PASID 15:0), 59:48 flags, 63:60 EventCode; bits 127:64 the address.

use core::fmt;

use lazaret_types::{Mmio, PhysAddr, PhysMem};

use crate::poll::{poll_until, Clock, TimedOut};
use crate::regs::{self, control, status, RingLength, RING_POINTER_MASK};

pub const EVENT_BYTES: u64 = 16;

/// How often an entry whose EventCode still reads 0 is re-read before it is skipped. Some
/// IOMMUs move the tail before the entry is visible in memory (Linux: "erratum 732",
/// `iommu_print_event` retries); a bounded retry keeps the drain from spinning forever.
pub const ZERO_CODE_RETRIES: u32 = 100;

/// Event flags, bits 59:48 of the first quadword (dword 1 bits 27:16), §2.5.2 IO_PAGE_FAULT.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct EventFlags(pub u16);

impl EventFlags {
    /// GN: the address is a guest (PASID) address.
    pub const fn guest(self) -> bool {
        self.0 & (1 << 0) != 0
    }
    /// I: the request was an interrupt.
    pub const fn interrupt(self) -> bool {
        self.0 & (1 << 3) != 0
    }
    /// PR: the translation was present (a permission fault, not a missing mapping).
    pub const fn present(self) -> bool {
        self.0 & (1 << 4) != 0
    }
    /// RW: the access was a write.
    pub const fn write(self) -> bool {
        self.0 & (1 << 5) != 0
    }
    /// PE: permission violation.
    pub const fn permission(self) -> bool {
        self.0 & (1 << 6) != 0
    }
    /// RZ: reserved bits set in a table entry.
    pub const fn reserved_bits(self) -> bool {
        self.0 & (1 << 7) != 0
    }
    /// TR: a translation request (ATS), not an untranslated access.
    pub const fn translation_request(self) -> bool {
        self.0 & (1 << 8) != 0
    }
}

impl fmt::Debug for EventFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", if self.write() { "W" } else { "R" })?;
        for (set, name) in [
            (self.present(), " PR"),
            (self.permission(), " PE"),
            (self.reserved_bits(), " RZ"),
            (self.interrupt(), " I"),
            (self.translation_request(), " TR"),
            (self.guest(), " GN"),
        ] {
            if set {
                write!(f, "{name}")?;
            }
        }
        Ok(())
    }
}

/// A decoded event (§2.5.1–§2.5.9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// 01h.
    IllegalDevTableEntry {
        device_id: u16,
        address: u64,
        flags: EventFlags,
    },
    /// 02h: a DMA was refused.
    IoPageFault {
        device_id: u16,
        domain_id: u16,
        address: u64,
        flags: EventFlags,
    },
    /// 03h: reading the DTE failed (address of the entry).
    DevTabHardwareError {
        device_id: u16,
        address: u64,
        flags: EventFlags,
    },
    /// 04h: reading a page table failed.
    PageTabHardwareError {
        device_id: u16,
        domain_id: u16,
        address: u64,
        flags: EventFlags,
    },
    /// 05h: the command at `address` was malformed.
    IllegalCommandError { address: u64 },
    /// 06h: fetching a command failed.
    CommandHardwareError { address: u64, flags: EventFlags },
    /// 07h: a device did not answer an IOTLB invalidation.
    IotlbInvTimeout { device_id: u16, address: u64 },
    /// 08h.
    InvalidDeviceRequest {
        device_id: u16,
        address: u64,
        flags: EventFlags,
    },
    /// Any other non-zero EventCode (PPR, counters, guest events), raw.
    Other { code: u8, raw: [u64; 2] },
}

impl Event {
    /// `None` while EventCode is 0 (the entry is not written yet).
    pub const fn decode(raw: [u64; 2]) -> Option<Event> {
        let [q0, address] = raw;
        let device_id = q0 as u16;
        let domain_id = (q0 >> 32) as u16;
        let flags = EventFlags(((q0 >> 48) & 0xfff) as u16);
        Some(match (q0 >> 60) as u8 {
            0 => return None,
            0x1 => Event::IllegalDevTableEntry {
                device_id,
                address,
                flags,
            },
            0x2 => Event::IoPageFault {
                device_id,
                domain_id,
                address,
                flags,
            },
            0x3 => Event::DevTabHardwareError {
                device_id,
                address,
                flags,
            },
            0x4 => Event::PageTabHardwareError {
                device_id,
                domain_id,
                address,
                flags,
            },
            0x5 => Event::IllegalCommandError { address },
            0x6 => Event::CommandHardwareError { address, flags },
            0x7 => Event::IotlbInvTimeout { device_id, address },
            0x8 => Event::InvalidDeviceRequest {
                device_id,
                address,
                flags,
            },
            code => Event::Other { code, raw },
        })
    }

    /// The DeviceID the event names, if any (for per-device fault counting).
    pub const fn device_id(&self) -> Option<u16> {
        match *self {
            Event::IllegalDevTableEntry { device_id, .. }
            | Event::IoPageFault { device_id, .. }
            | Event::DevTabHardwareError { device_id, .. }
            | Event::PageTabHardwareError { device_id, .. }
            | Event::IotlbInvTimeout { device_id, .. }
            | Event::InvalidDeviceRequest { device_id, .. } => Some(device_id),
            _ => None,
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::IoPageFault {
                device_id,
                domain_id,
                address,
                flags,
            } => write!(
                f,
                "IO_PAGE_FAULT dev {device_id:#06x} dom {domain_id} addr {address:#x} {flags:?}"
            ),
            other => write!(f, "{other:?}"),
        }
    }
}

/// What one drain saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrainSummary {
    /// Events handed to the sink.
    pub events: u32,
    /// Entries skipped because EventCode stayed 0 after [`ZERO_CODE_RETRIES`] re-reads.
    pub zero_code_skipped: u32,
    /// Status.EventOverflow was set: events were lost and the log was restarted.
    pub overflowed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventLogError {
    /// EventLogRun did not follow EventLogEn during a restart.
    RestartTimedOut(TimedOut),
}

impl fmt::Display for EventLogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventLogError::RestartTimedOut(t) => write!(f, "event log restart: {t}"),
        }
    }
}

/// The event log ring (one 4 KiB frame for [`RingLength::ONE_PAGE`]).
#[derive(Debug)]
pub struct EventLog {
    base: PhysAddr,
    length: RingLength,
}

impl EventLog {
    pub fn new(base: PhysAddr, length: RingLength) -> EventLog {
        EventLog { base, length }
    }

    pub fn base(&self) -> PhysAddr {
        self.base
    }

    pub fn length(&self) -> RingLength {
        self.length
    }

    fn pointer<R: Mmio + ?Sized>(&self, regs: &R, offset: usize) -> u64 {
        // Hardware values are masked into the ring, never trusted as indices.
        (regs.read64(offset) & RING_POINTER_MASK) % self.length.bytes()
    }

    /// Hands every entry between head and tail to `sink` (at most one ring's worth), clears
    /// each entry to zero after reading it (so a stale entry is never taken for a new one
    /// after the ring wraps), and writes the head register once.
    pub fn drain<M, R>(&self, mem: &M, regs: &R, mut sink: impl FnMut(Event)) -> DrainSummary
    where
        M: PhysMem + ?Sized,
        R: Mmio + ?Sized,
    {
        let mut summary = DrainSummary::default();
        let start = self.pointer(regs, regs::EVENT_HEAD);
        let tail = self.pointer(regs, regs::EVENT_TAIL);
        let mut head = start;
        for _ in 0..self.length.entries() {
            if head == tail {
                break;
            }
            let at = PhysAddr(self.base.0 + head);
            match read_event(mem, at) {
                Some(event) => {
                    summary.events += 1;
                    sink(event);
                }
                None => summary.zero_code_skipped += 1,
            }
            mem.zero(at, EVENT_BYTES);
            head = (head + EVENT_BYTES) % self.length.bytes();
        }
        if head != start {
            regs.write64(regs::EVENT_HEAD, head);
        }
        summary
    }

    /// Restarts logging after an overflow. §2.5 / §3.4.9: on overflow the IOMMU sets
    /// EventOverflow and stops logging. The sequence:
    /// 1. clear Control.EventLogEn and wait (bounded) for Status.EventLogRun = 0;
    /// 2. write 1 to Status.EventOverflow (write-1-to-clear);
    /// 3. reset Event Log Head and Tail to 0 (the tail is software-writable while the log is
    ///    disabled);
    /// 4. set Control.EventLogEn again and, if IommuEn is set, wait for EventLogRun = 1.
    pub fn restart<R: Mmio + ?Sized>(
        &self,
        regs: &R,
        clock: &(impl Clock + ?Sized),
        timeout_us: u64,
    ) -> Result<(), EventLogError> {
        let ctrl = regs.read64(regs::CONTROL);
        regs.write64(regs::CONTROL, ctrl & !control::EVENT_LOG_EN);
        wait_status(regs, clock, timeout_us, status::EVENT_LOG_RUN, false)
            .map_err(EventLogError::RestartTimedOut)?;
        regs.write64(regs::STATUS, status::EVENT_OVERFLOW);
        regs.write64(regs::EVENT_HEAD, 0);
        regs.write64(regs::EVENT_TAIL, 0);
        regs.write64(regs::CONTROL, ctrl | control::EVENT_LOG_EN);
        if ctrl & control::IOMMU_EN != 0 {
            wait_status(regs, clock, timeout_us, status::EVENT_LOG_RUN, true)
                .map_err(EventLogError::RestartTimedOut)?;
        }
        Ok(())
    }
}

/// Reads the entry at `at`, re-reading a bounded number of times while EventCode is 0.
fn read_event<M: PhysMem + ?Sized>(mem: &M, at: PhysAddr) -> Option<Event> {
    for _ in 0..=ZERO_CODE_RETRIES {
        let raw = [mem.read_u64(at), mem.read_u64(PhysAddr(at.0 + 8))];
        if let Some(e) = Event::decode(raw) {
            return Some(e);
        }
        core::hint::spin_loop();
    }
    None
}

/// Waits (bounded) until the Status bits `mask` are all set (`set`) or all clear.
pub fn wait_status<R: Mmio + ?Sized>(
    regs: &R,
    clock: &(impl Clock + ?Sized),
    timeout_us: u64,
    mask: u64,
    set: bool,
) -> Result<(), TimedOut> {
    poll_until(clock, timeout_us, || {
        let s = regs.read64(regs::STATUS) & mask;
        let done = if set { s == mask } else { s == 0 };
        done.then_some(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poll::StepClock;
    use crate::sim_device::SimAmdVi;
    use core::cell::Cell;
    use lazaret_types::sim::{SimMemory, SimRegisters};
    use std::rc::Rc;
    use std::vec::Vec;

    const BASE: PhysAddr = PhysAddr(0x50_0000);

    fn fault(device: u16, domain: u16, addr: u64, write: bool) -> [u64; 2] {
        let flags: u64 = if write { 1 << 5 } else { 0 };
        [
            (2 << 60) | (flags << 48) | ((domain as u64) << 32) | device as u64,
            addr,
        ]
    }

    fn running() -> (Rc<SimMemory>, SimRegisters, SimAmdVi, EventLog) {
        let mem = Rc::new(SimMemory::new());
        let regs = SimRegisters::new();
        let sim = SimAmdVi::install(&regs, mem.clone(), 0);
        regs.write64(
            regs::EVENT_LOG_BASE,
            RingLength::ONE_PAGE.base_register(BASE),
        );
        regs.write64(regs::CONTROL, control::IOMMU_EN | control::EVENT_LOG_EN);
        (mem, regs, sim, EventLog::new(BASE, RingLength::ONE_PAGE))
    }

    #[test]
    fn decodes_every_event_type() {
        let e = Event::decode(fault(0x0810, 7, 0xdead_b000, true)).unwrap();
        assert_eq!(
            e,
            Event::IoPageFault {
                device_id: 0x0810,
                domain_id: 7,
                address: 0xdead_b000,
                flags: EventFlags(1 << 5)
            }
        );
        assert_eq!(e.device_id(), Some(0x0810));
        assert_eq!(Event::decode([0, 5]), None);
        let codes: Vec<_> = (1..=9u64)
            .map(|c| Event::decode([(c << 60) | 3, 0x40]).unwrap())
            .collect();
        assert!(matches!(
            codes[0],
            Event::IllegalDevTableEntry { device_id: 3, .. }
        ));
        assert!(matches!(
            codes[2],
            Event::DevTabHardwareError { address: 0x40, .. }
        ));
        assert!(matches!(codes[3], Event::PageTabHardwareError { .. }));
        assert_eq!(codes[4], Event::IllegalCommandError { address: 0x40 });
        assert!(matches!(codes[5], Event::CommandHardwareError { .. }));
        assert_eq!(
            codes[6],
            Event::IotlbInvTimeout {
                device_id: 3,
                address: 0x40
            }
        );
        assert!(matches!(codes[7], Event::InvalidDeviceRequest { .. }));
        assert!(matches!(codes[8], Event::Other { code: 9, .. }));
        let flags = EventFlags((1 << 4) | (1 << 5) | (1 << 6));
        assert!(flags.present() && flags.write() && flags.permission());
        assert_eq!(format!("{flags:?}"), "W PR PE");
    }

    #[test]
    fn drains_across_the_wrap() {
        let (mem, regs, sim, log) = running();
        let mut seen = Vec::new();
        for round in 0..3u64 {
            for i in 0..200u64 {
                assert!(sim.post_event(&regs, fault(i as u16, 1, round << 32 | i << 12, false)));
            }
            let s = log.drain(&*mem, &regs, |e| seen.push(e));
            assert_eq!(
                (s.events, s.zero_code_skipped, s.overflowed),
                (200, 0, false)
            );
            assert_eq!(regs.get(regs::EVENT_HEAD), regs.get(regs::EVENT_TAIL));
        }
        assert_eq!(seen.len(), 600);
        assert_eq!(
            seen[599],
            Event::IoPageFault {
                device_id: 199,
                domain_id: 1,
                address: 2 << 32 | 199 << 12,
                flags: EventFlags(0)
            }
        );
    }

    #[test]
    fn overflow_is_reported_and_the_log_restarted() {
        let (mem, regs, sim, log) = running();
        let logged = (0..300)
            .filter(|i| sim.post_event(&regs, fault(*i, 0, 0, true)))
            .count();
        assert_eq!(logged, 255, "one slot stays free");
        assert_ne!(regs.get(regs::STATUS) & status::EVENT_OVERFLOW, 0);
        let s = log.drain(&*mem, &regs, |_| {});
        assert_eq!(s.events, 255);
        log.restart(&regs, &StepClock::default(), 100).unwrap();
        let st = regs.get(regs::STATUS);
        assert_eq!(st & status::EVENT_OVERFLOW, 0, "cleared by writing 1");
        assert_ne!(st & status::EVENT_LOG_RUN, 0, "running again");
        assert_eq!(
            (regs.get(regs::EVENT_HEAD), regs.get(regs::EVENT_TAIL)),
            (0, 0)
        );
        assert!(sim.post_event(&regs, fault(9, 0, 0x1000, false)));
        let mut seen = Vec::new();
        log.drain(&*mem, &regs, |e| seen.push(e));
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].device_id(), Some(9));
    }

    #[test]
    fn restart_times_out_if_logging_never_stops() {
        let regs = SimRegisters::new(); // no device model: EventLogRun stays as preset
        regs.set(regs::STATUS, status::EVENT_LOG_RUN);
        let log = EventLog::new(BASE, RingLength::ONE_PAGE);
        assert!(matches!(
            log.restart(&regs, &StepClock::default(), 10),
            Err(EventLogError::RestartTimedOut(_))
        ));
    }

    /// Memory whose event entry at `late_at` only becomes visible after `delay` reads, as with
    /// the erratum where the tail moves before the entry is written.
    struct LateEntry<'m> {
        mem: &'m SimMemory,
        late_at: PhysAddr,
        entry: [u64; 2],
        delay: Cell<u32>,
    }

    impl PhysMem for LateEntry<'_> {
        fn read_u64(&self, addr: PhysAddr) -> u64 {
            if addr == self.late_at {
                match self.delay.get() {
                    0 => {
                        self.mem.write_u64(addr, self.entry[0]);
                        self.mem.write_u64(PhysAddr(addr.0 + 8), self.entry[1]);
                    }
                    n => self.delay.set(n - 1),
                }
            }
            self.mem.read_u64(addr)
        }
        fn write_u64(&self, addr: PhysAddr, value: u64) {
            self.mem.write_u64(addr, value)
        }
        fn compare_exchange_u128(&self, a: PhysAddr, c: u128, n: u128) -> Result<u128, u128> {
            self.mem.compare_exchange_u128(a, c, n)
        }
        fn zero(&self, addr: PhysAddr, len: u64) {
            self.mem.zero(addr, len)
        }
        fn read_bytes(&self, addr: PhysAddr, buf: &mut [u8]) {
            self.mem.read_bytes(addr, buf)
        }
        fn write_bytes(&self, addr: PhysAddr, data: &[u8]) {
            self.mem.write_bytes(addr, data)
        }
    }

    #[test]
    fn zero_code_entries_are_reread_then_skipped() {
        let (mem, regs, sim, log) = running();
        // Entry 0 shows up after a few re-reads; entry 1 never does; entry 2 is fine.
        assert!(sim.post_event(&regs, [0, 0]));
        assert!(sim.post_event(&regs, [0, 0]));
        assert!(sim.post_event(&regs, fault(2, 0, 0, false)));
        let late = LateEntry {
            mem: &mem,
            late_at: BASE,
            entry: fault(1, 0, 0x2000, true),
            delay: Cell::new(5),
        };
        let mut seen = Vec::new();
        let s = log.drain(&late, &regs, |e| seen.push(e.device_id()));
        assert_eq!(seen, vec![Some(1), Some(2)]);
        assert_eq!((s.events, s.zero_code_skipped), (2, 1));
        assert_eq!(mem.read_u64(BASE), 0, "consumed entries are cleared");
    }
}
