//! Ending a run with a status CI can read.
//!
//! In QEMU, `-device isa-debug-exit,iobase=0xf4,iosize=4` turns a write of `v` to port 0xf4
//! into process exit status `(v << 1) | 1`. We write [`ExitCode`] values whose statuses (33,
//! 35) cannot be confused with QEMU's own 0/1 (clean shutdown / its errors); `scripts/demo`
//! and the tests map them back to 0 and 1. Without that device the write is ignored and we
//! halt, as on real hardware.
use crate::port;

/// The isa-debug-exit port used by every QEMU configuration of ours.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitCode {
    /// QEMU exits with status 33.
    Success = 0x10,
    /// QEMU exits with status 35.
    Failure = 0x11,
}

impl ExitCode {
    /// The status the QEMU process exits with.
    pub const fn qemu_status(self) -> i32 {
        ((self as i32) << 1) | 1
    }
}

/// Ends the run: QEMU exits; real hardware halts with interrupts off.
pub fn exit(code: ExitCode) -> ! {
    // SAFETY: port 0xf4 is either QEMU's debug-exit device or unclaimed ISA space, where a
    // write has no effect.
    unsafe { port::outl(DEBUG_EXIT_PORT, code as u32) };
    halt_forever()
}

pub fn halt_forever() -> ! {
    loop {
        // SAFETY: cli/hlt only stop this CPU; nothing else depends on it running.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_statuses_are_distinct_from_qemus_own() {
        assert_eq!(ExitCode::Success.qemu_status(), 33);
        assert_eq!(ExitCode::Failure.qemu_status(), 35);
    }
}
