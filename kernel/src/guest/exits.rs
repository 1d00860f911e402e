//! What Lazaret does with each vCPU exit — vendor-neutral, so SVM and VMX share it. The
//! guest's world (its memory, its virtual PCI bus, its console) is behind [`GuestEnv`], so
//! every rule here is host-tested; the exit loop only applies the [`Action`].
use alloc::string::String;
use core::fmt;

use lazaret_guest_abi::hypercall::{
    CONSOLE_WRITE_MAX, HC_CONSOLE_WRITE, HC_ERROR_TOO_LONG, HC_ERROR_UNKNOWN, HC_EXIT,
    HC_INTERRUPT_STAMP, HC_OK,
};

use super::cpuid;
use crate::vcpu::{Exit, GuestRegs};

/// #GP: what a guest gets for an MSR Lazaret does not virtualise.
pub const GP: u8 = 13;
/// Host interrupts/NMIs in a row without the guest completing anything: a livelock, not
/// progress (design: a hostile guest ends itself, never the host).
pub const MAX_SPURIOUS_EXITS: u32 = 10_000;

/// What the guest's world answers; implemented by the guest lifecycle over real memory and
/// the virtual bus, and by fakes in tests.
pub trait GuestEnv {
    /// CPUID of the host, for the whitelist to filter.
    fn host_cpuid(&self, leaf: u32, subleaf: u32) -> cpuid::Regs;
    /// An IN from `port`; `None` when nothing answers there.
    fn port_read(&mut self, port: u16, size: u8) -> Option<u32>;
    /// An OUT; returns whether anything took it.
    fn port_write(&mut self, port: u16, size: u8, value: u32) -> bool;
    /// Copies the guest's `len` console bytes at `gpa` to its console; `Err` with the
    /// hypercall error code when the range is not the guest's.
    fn console_write(&mut self, gpa: u64, len: usize) -> Result<(), u64>;
    /// RDMSR of a register Lazaret virtualises (the virtual LAPIC's); `None`: #GP.
    fn msr_read(&mut self, msr: u32) -> Option<u64>;
    /// WRMSR; `false`: #GP, nothing changed.
    fn msr_write(&mut self, msr: u32, value: u64) -> bool;
    /// Whether an interrupt could wake the guest from HLT now (interrupts enabled, and a
    /// device routed or an interrupt requested).
    fn can_wake(&self) -> bool;
    /// The guest's handler for `vector` began at TSC `tsc` (for the latency figure).
    fn interrupt_stamp(&mut self, tsc: u64, vector: u8);
}

/// Why a guest stopped running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// HC_EXIT with this status.
    Exited(u64),
    /// It touched guest-physical memory that is not its own.
    NestedPageFault { gpa: u64, write: bool, fetch: bool },
    /// Triple fault or another shutdown.
    Shutdown,
    /// HLT with nothing that could wake it (interrupts off, or no device interrupt routed).
    Halted,
    /// HLT, and the interrupt it waited for did not come within this many milliseconds.
    NoInterrupt(u64),
    /// The vCPU could not go on (state check, VMEXIT_INVALID, an exit it cannot complete).
    Invalid(String),
    /// Its device raised DMA faults past the threshold (the IOMMU stopped it).
    DmaFaults(u64),
    /// Host interrupts without guest progress past [`MAX_SPURIOUS_EXITS`].
    Livelock,
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ending::Exited(s) => write!(f, "exited with status {s:#x}"),
            Ending::NestedPageFault { gpa, write, fetch } => write!(
                f,
                "stopped by nested paging: {} guest-physical {gpa:#x}, which is not its own",
                if *fetch {
                    "executed at"
                } else if *write {
                    "wrote"
                } else {
                    "read"
                }
            ),
            Ending::Shutdown => f.write_str("triple-faulted (shutdown)"),
            Ending::Halted => f.write_str("halted with nothing to wake it"),
            Ending::NoInterrupt(ms) => {
                write!(
                    f,
                    "halted for {ms} ms waiting for an interrupt that never came"
                )
            }
            Ending::Invalid(why) => write!(f, "could not run: {why}"),
            Ending::DmaFaults(n) => write!(f, "its device raised {n} DMA fault(s): stopped"),
            Ending::Livelock => f.write_str("made no progress (host interrupts only)"),
        }
    }
}

/// What the exit loop does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Run again without completing anything (the exit was the host's).
    Resume,
    /// Complete the exiting instruction; an IN's value.
    Complete(Option<u32>),
    /// Deliver an exception (vector, error code) instead of completing.
    Inject(u8, u32),
    /// Complete the HLT and leave the guest asleep until an interrupt is deliverable.
    Halt,
    End(Ending),
}

/// The answer to one exit; `regs` are the guest's and may be changed (CPUID results,
/// hypercall return values).
pub fn handle(exit: &Exit, regs: &mut GuestRegs, env: &mut dyn GuestEnv) -> Action {
    match *exit {
        Exit::Cpuid { leaf, subleaf } => {
            let [a, b, c, d] = cpuid::answer(leaf, subleaf, |l, s| env.host_cpuid(l, s));
            (regs.rax, regs.rbx, regs.rcx, regs.rdx) = (a.into(), b.into(), c.into(), d.into());
            Action::Complete(None)
        }
        Exit::Io {
            port,
            size,
            write: false,
            ..
        } => {
            // Nothing there reads as all-ones, as on a real bus.
            let ones = if size >= 4 {
                u32::MAX
            } else {
                (1u32 << (size * 8)) - 1
            };
            Action::Complete(Some(env.port_read(port, size).unwrap_or(ones)))
        }
        Exit::Io {
            port,
            size,
            write: true,
            value,
        } => {
            // Unclaimed writes (isa-debug-exit, the reset port, …) are dropped: the host's
            // ports are never the guest's.
            env.port_write(port, size, value);
            Action::Complete(None)
        }
        Exit::MsrRead { msr } => match env.msr_read(msr) {
            Some(value) => {
                (regs.rax, regs.rdx) = (value & 0xFFFF_FFFF, value >> 32);
                Action::Complete(None)
            }
            None => Action::Inject(GP, 0),
        },
        Exit::MsrWrite { msr, value } => {
            if env.msr_write(msr, value) {
                Action::Complete(None)
            } else {
                Action::Inject(GP, 0)
            }
        }
        Exit::Hypercall => match regs.rax {
            HC_CONSOLE_WRITE => {
                let len = regs.rsi;
                regs.rax = if len > CONSOLE_WRITE_MAX as u64 {
                    HC_ERROR_TOO_LONG
                } else {
                    match env.console_write(regs.rdi, len as usize) {
                        Ok(()) => HC_OK,
                        Err(code) => code,
                    }
                };
                Action::Complete(None)
            }
            HC_EXIT => Action::End(Ending::Exited(regs.rdi)),
            HC_INTERRUPT_STAMP => {
                regs.rax = match u8::try_from(regs.rsi) {
                    Ok(vector) => {
                        env.interrupt_stamp(regs.rdi, vector);
                        HC_OK
                    }
                    Err(_) => HC_ERROR_UNKNOWN,
                };
                Action::Complete(None)
            }
            _ => {
                regs.rax = HC_ERROR_UNKNOWN;
                Action::Complete(None)
            }
        },
        Exit::Hlt if env.can_wake() => Action::Halt,
        Exit::Hlt => Action::End(Ending::Halted),
        Exit::NestedPageFault {
            gpa, write, fetch, ..
        } => Action::End(Ending::NestedPageFault { gpa, write, fetch }),
        Exit::Shutdown => Action::End(Ending::Shutdown),
        Exit::Interrupt | Exit::Nmi | Exit::InterruptWindow => Action::Resume,
        Exit::Exception { vector, error } => Action::End(Ending::Invalid(alloc::format!(
            "exception {vector} (error code {error:?}) intercepted"
        ))),
        Exit::Invalid { ref reason } => Action::End(Ending::Invalid(reason.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lazaret_guest_abi::hypercall::HC_ERROR_BAD_ADDRESS;

    #[derive(Default)]
    struct Fake {
        written: Vec<(u16, u8, u32)>,
        console: Vec<(u64, usize)>,
        msrs: Vec<(u32, u64)>,
        wakeable: bool,
        stamps: Vec<(u64, u8)>,
    }

    impl GuestEnv for Fake {
        fn host_cpuid(&self, leaf: u32, _: u32) -> cpuid::Regs {
            if leaf == 1 {
                [0x00a2_0f12, 0, u32::MAX, u32::MAX]
            } else {
                [0; 4]
            }
        }
        fn port_read(&mut self, port: u16, _: u8) -> Option<u32> {
            (port == 0xcfc).then_some(0x11e8_1234)
        }
        fn port_write(&mut self, port: u16, size: u8, value: u32) -> bool {
            self.written.push((port, size, value));
            port == 0xcf8
        }
        fn console_write(&mut self, gpa: u64, len: usize) -> Result<(), u64> {
            if gpa >= 0x80_0000 {
                return Err(HC_ERROR_BAD_ADDRESS);
            }
            self.console.push((gpa, len));
            Ok(())
        }
        fn msr_read(&mut self, msr: u32) -> Option<u64> {
            (msr == 0x808).then_some(0x1234_5678_9abc_def0)
        }
        fn msr_write(&mut self, msr: u32, value: u64) -> bool {
            self.msrs.push((msr, value));
            msr == 0x80b
        }
        fn can_wake(&self) -> bool {
            self.wakeable
        }
        fn interrupt_stamp(&mut self, tsc: u64, vector: u8) {
            self.stamps.push((tsc, vector));
        }
    }

    fn io(port: u16, size: u8, write: bool, value: u32) -> Exit {
        Exit::Io {
            port,
            size,
            write,
            value,
        }
    }

    #[test]
    fn cpuid_answers_from_the_whitelist() {
        let mut regs = GuestRegs::default();
        let a = handle(
            &Exit::Cpuid {
                leaf: 1,
                subleaf: 0,
            },
            &mut regs,
            &mut Fake::default(),
        );
        assert_eq!(a, Action::Complete(None));
        assert_eq!(regs.rax, 0x00a2_0f12);
        assert_eq!(regs.rcx & (1 << 5), 0, "no VMX");
        assert_ne!(regs.rcx & (1 << 31), 0, "hypervisor bit");
    }

    #[test]
    fn ports_nobody_claims_read_all_ones_and_swallow_writes() {
        let mut env = Fake::default();
        let mut regs = GuestRegs::default();
        assert_eq!(
            handle(&io(0xcfc, 4, false, 0), &mut regs, &mut env),
            Action::Complete(Some(0x11e8_1234))
        );
        assert_eq!(
            handle(&io(0x60, 1, false, 0), &mut regs, &mut env),
            Action::Complete(Some(0xff))
        );
        assert_eq!(
            handle(&io(0x60, 2, false, 0), &mut regs, &mut env),
            Action::Complete(Some(0xffff))
        );
        assert_eq!(
            handle(&io(0x60, 4, false, 0), &mut regs, &mut env),
            Action::Complete(Some(u32::MAX))
        );
        // The QEMU exit port: the guest's write goes nowhere, and the guest goes on.
        assert_eq!(
            handle(&io(0xf4, 4, true, 0x10), &mut regs, &mut env),
            Action::Complete(None)
        );
        assert_eq!(env.written, [(0xf4, 4, 0x10)]);
    }

    #[test]
    fn virtualised_msrs_answer_and_the_rest_raise_gp() {
        let mut env = Fake::default();
        let mut regs = GuestRegs::default();
        assert_eq!(
            handle(&Exit::MsrRead { msr: 0x808 }, &mut regs, &mut env),
            Action::Complete(None)
        );
        assert_eq!((regs.rax, regs.rdx), (0x9abc_def0, 0x1234_5678));
        let eoi = Exit::MsrWrite {
            msr: 0x80b,
            value: 0,
        };
        assert_eq!(handle(&eoi, &mut regs, &mut env), Action::Complete(None));
        let icr = Exit::MsrWrite {
            msr: 0x830,
            value: 0x4050,
        };
        assert_eq!(handle(&icr, &mut regs, &mut env), Action::Inject(GP, 0));
        assert_eq!(env.msrs, [(0x80b, 0), (0x830, 0x4050)]);
    }

    #[test]
    fn hlt_sleeps_only_when_an_interrupt_can_wake_it() {
        let mut regs = GuestRegs::default();
        let mut env = Fake::default();
        assert_eq!(
            handle(&Exit::Hlt, &mut regs, &mut env),
            Action::End(Ending::Halted)
        );
        env.wakeable = true;
        assert_eq!(handle(&Exit::Hlt, &mut regs, &mut env), Action::Halt);
    }

    #[test]
    fn the_interrupt_stamp_takes_a_vector_or_is_refused() {
        let mut env = Fake::default();
        let mut regs = GuestRegs {
            rax: HC_INTERRUPT_STAMP,
            rdi: 123_456,
            rsi: 0x50,
            ..Default::default()
        };
        assert_eq!(
            handle(&Exit::Hypercall, &mut regs, &mut env),
            Action::Complete(None)
        );
        assert_eq!(
            (regs.rax, env.stamps.as_slice()),
            (HC_OK, [(123_456, 0x50)].as_slice())
        );
        let mut regs = GuestRegs {
            rax: HC_INTERRUPT_STAMP,
            rsi: 0x150,
            ..Default::default()
        };
        handle(&Exit::Hypercall, &mut regs, &mut env);
        assert_eq!((regs.rax, env.stamps.len()), (HC_ERROR_UNKNOWN, 1));
    }

    #[test]
    fn msrs_raise_gp() {
        let mut regs = GuestRegs::default();
        let efer = Exit::MsrWrite {
            msr: 0xc000_0080,
            value: 0,
        };
        assert_eq!(
            handle(&efer, &mut regs, &mut Fake::default()),
            Action::Inject(GP, 0)
        );
        let hsave = Exit::MsrRead { msr: 0xc001_0117 };
        assert_eq!(
            handle(&hsave, &mut regs, &mut Fake::default()),
            Action::Inject(GP, 0)
        );
    }

    #[test]
    fn hypercalls_print_exit_and_refuse_the_unknown() {
        let mut env = Fake::default();
        let mut regs = GuestRegs {
            rax: HC_CONSOLE_WRITE,
            rdi: 0x4000,
            rsi: 12,
            ..Default::default()
        };
        assert_eq!(
            handle(&Exit::Hypercall, &mut regs, &mut env),
            Action::Complete(None)
        );
        assert_eq!(
            (regs.rax, env.console.as_slice()),
            (HC_OK, [(0x4000, 12)].as_slice())
        );
        let mut regs = GuestRegs {
            rax: HC_CONSOLE_WRITE,
            rdi: 0x90_0000,
            rsi: 4,
            ..Default::default()
        };
        handle(&Exit::Hypercall, &mut regs, &mut env);
        assert_eq!(regs.rax, HC_ERROR_BAD_ADDRESS);
        let mut regs = GuestRegs {
            rax: HC_CONSOLE_WRITE,
            rdi: 0x4000,
            rsi: CONSOLE_WRITE_MAX as u64,
            ..Default::default()
        };
        handle(&Exit::Hypercall, &mut regs, &mut env);
        assert_eq!(regs.rax, HC_OK, "exactly the maximum is accepted");
        let mut regs = GuestRegs {
            rax: HC_CONSOLE_WRITE,
            rdi: 0x4000,
            rsi: 257,
            ..Default::default()
        };
        handle(&Exit::Hypercall, &mut regs, &mut env);
        assert_eq!(regs.rax, HC_ERROR_TOO_LONG);
        assert_eq!(
            env.console.len(),
            2,
            "refused writes never reach the console"
        );
        let mut regs = GuestRegs {
            rax: 99,
            ..Default::default()
        };
        assert_eq!(
            handle(&Exit::Hypercall, &mut regs, &mut env),
            Action::Complete(None)
        );
        assert_eq!(regs.rax, HC_ERROR_UNKNOWN);
        let mut regs = GuestRegs {
            rax: HC_EXIT,
            rdi: 0x10,
            ..Default::default()
        };
        assert_eq!(
            handle(&Exit::Hypercall, &mut regs, &mut env),
            Action::End(Ending::Exited(0x10))
        );
    }

    #[test]
    fn faults_and_broken_states_end_the_guest_and_host_events_resume_it() {
        let mut regs = GuestRegs::default();
        let mut env = Fake::default();
        let npf = Exit::NestedPageFault {
            gpa: 0xfed9_0000,
            write: false,
            fetch: false,
            present: false,
        };
        let end = handle(&npf, &mut regs, &mut env);
        assert_eq!(
            end,
            Action::End(Ending::NestedPageFault {
                gpa: 0xfed9_0000,
                write: false,
                fetch: false
            })
        );
        if let Action::End(e) = end {
            assert!(alloc::format!("{e}").contains("read guest-physical 0xfed90000"));
        }
        assert_eq!(
            handle(&Exit::Shutdown, &mut regs, &mut env),
            Action::End(Ending::Shutdown)
        );
        let invalid = Exit::Invalid {
            reason: "EFER.SVME is clear".into(),
        };
        assert_eq!(
            handle(&invalid, &mut regs, &mut env),
            Action::End(Ending::Invalid("EFER.SVME is clear".into()))
        );
        assert_eq!(
            handle(&Exit::Interrupt, &mut regs, &mut env),
            Action::Resume
        );
        assert_eq!(handle(&Exit::Nmi, &mut regs, &mut env), Action::Resume);
    }
}
