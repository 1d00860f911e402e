//! Hypercalls (guest contract): VMMCALL (`0F 01 D9`) with RAX = number, RDI, RSI, RDX =
//! arguments; the result comes back in RAX, [`HC_OK`] or an `HC_ERROR_*` code
//! (`u64::MAX - n`, so no valid result can be mistaken for one).

use core::fmt;

/// `(gpa, len)`: print up to [`CONSOLE_WRITE_MAX`] bytes of UTF-8 at `gpa`; Lazaret prefixes
/// the line with the domain's name.
pub const HC_CONSOLE_WRITE: u64 = 1;
/// `(status)`: the guest is done; see [`GuestExit`] for what the statuses mean.
pub const HC_EXIT: u64 = 2;
/// `(tsc, vector)`: the TSC the guest's interrupt handler read first thing on entry, and the
/// vector it handled. Lazaret subtracts the TSC of its own host-interrupt entry to report the
/// device-to-guest-handler latency: the guest's TSC is the host's (TSC_OFFSET is 0). Returns
/// [`HC_OK`]; a guest that makes it without an interrupt only spoils a figure.
pub const HC_INTERRUPT_STAMP: u64 = 3;

/// The most bytes one [`HC_CONSOLE_WRITE`] carries.
pub const CONSOLE_WRITE_MAX: usize = 256;

/// The hypercall did what was asked.
pub const HC_OK: u64 = 0;
/// No such hypercall number.
pub const HC_ERROR_UNKNOWN: u64 = u64::MAX;
/// An argument names guest memory that is not the guest's RAM (or wraps).
pub const HC_ERROR_BAD_ADDRESS: u64 = u64::MAX - 1;
/// A length above the call's maximum.
pub const HC_ERROR_TOO_LONG: u64 = u64::MAX - 2;
/// Console bytes that are not UTF-8.
pub const HC_ERROR_NOT_UTF8: u64 = u64::MAX - 3;

/// A failed hypercall, as the guest sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HypercallError {
    Unknown,
    BadAddress,
    TooLong,
    NotUtf8,
    /// A result that is neither [`HC_OK`] nor a known error code.
    Unexpected(u64),
}

impl HypercallError {
    /// The RAX value that carries this error.
    pub const fn code(self) -> u64 {
        match self {
            HypercallError::Unknown => HC_ERROR_UNKNOWN,
            HypercallError::BadAddress => HC_ERROR_BAD_ADDRESS,
            HypercallError::TooLong => HC_ERROR_TOO_LONG,
            HypercallError::NotUtf8 => HC_ERROR_NOT_UTF8,
            HypercallError::Unexpected(v) => v,
        }
    }

    /// Interprets a returned RAX: `Ok` for [`HC_OK`].
    pub const fn check(rax: u64) -> Result<(), HypercallError> {
        match rax {
            HC_OK => Ok(()),
            HC_ERROR_UNKNOWN => Err(HypercallError::Unknown),
            HC_ERROR_BAD_ADDRESS => Err(HypercallError::BadAddress),
            HC_ERROR_TOO_LONG => Err(HypercallError::TooLong),
            HC_ERROR_NOT_UTF8 => Err(HypercallError::NotUtf8),
            other => Err(HypercallError::Unexpected(other)),
        }
    }
}

impl fmt::Display for HypercallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            HypercallError::Unknown => write!(f, "unknown hypercall"),
            HypercallError::BadAddress => write!(f, "hypercall argument outside guest RAM"),
            HypercallError::TooLong => write!(f, "hypercall length too large"),
            HypercallError::NotUtf8 => write!(f, "console bytes are not UTF-8"),
            HypercallError::Unexpected(v) => write!(f, "unexpected hypercall result {v:#x}"),
        }
    }
}

/// The statuses a guest passes to [`HC_EXIT`]. Only [`GuestExit::Pass`] means "every check
/// held"; the rest say which variant ended how, so the kernel can tell a rogue guest that
/// tried (and should have been stopped) from one that broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum GuestExit {
    /// Every check the guest made passed (the *good* variant's round trip matched).
    Pass = 0,
    /// A check failed (the data came back different, a DMA timed out, ...).
    CheckFailed = 1,
    /// The BootInfo or the command line was unusable.
    BadBoot = 2,
    /// No edu device on the virtual bus, or its BAR0 was unusable.
    NoDevice = 3,
    /// *rogue-dma*: both forbidden DMAs were issued (whether they landed is for the IOMMU and
    /// the kernel to say).
    RogueDmaTried = 0x10,
    /// *rogue-mmio*: a forbidden read returned instead of ending the guest.
    RogueMmioSurvived = 0x11,
    /// *crash*: the triple fault did not end the guest.
    CrashSurvived = 0x12,
    /// The guest panicked.
    Panic = 0xff,
}

impl GuestExit {
    pub const fn code(self) -> u64 {
        self as u64
    }

    /// The status for `code`, if it is one of ours.
    pub const fn from_code(code: u64) -> Option<GuestExit> {
        Some(match code {
            0 => GuestExit::Pass,
            1 => GuestExit::CheckFailed,
            2 => GuestExit::BadBoot,
            3 => GuestExit::NoDevice,
            0x10 => GuestExit::RogueDmaTried,
            0x11 => GuestExit::RogueMmioSurvived,
            0x12 => GuestExit::CrashSurvived,
            0xff => GuestExit::Panic,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_round_trip_and_ok_is_not_an_error() {
        assert_eq!(HypercallError::check(HC_OK), Ok(()));
        for e in [
            HypercallError::Unknown,
            HypercallError::BadAddress,
            HypercallError::TooLong,
            HypercallError::NotUtf8,
            HypercallError::Unexpected(7),
        ] {
            assert_eq!(HypercallError::check(e.code()), Err(e));
        }
        assert_eq!(HC_ERROR_UNKNOWN, u64::MAX);
    }

    #[test]
    fn exit_codes_round_trip() {
        for e in [
            GuestExit::Pass,
            GuestExit::CheckFailed,
            GuestExit::BadBoot,
            GuestExit::NoDevice,
            GuestExit::RogueDmaTried,
            GuestExit::RogueMmioSurvived,
            GuestExit::CrashSurvived,
            GuestExit::Panic,
        ] {
            assert_eq!(GuestExit::from_code(e.code()), Some(e));
        }
        assert_eq!(GuestExit::from_code(4), None);
        assert_eq!(GuestExit::Pass.code(), 0);
    }
}
