//! What can go wrong when driving the edu device.

use core::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EduError {
    /// The identification register's low byte is not 0xed: not an edu device, or BAR0 is not
    /// mapped (an absent device reads all ones).
    NotEdu { identification: u32 },
    /// The liveness register did not return the inverse of the written value.
    LivenessFailed { wrote: u32, read: u32 },
    /// A DMA mask must cover 1 to 64 address bits.
    InvalidDmaMaskBits(u32),
    /// A zero-length DMA: QEMU 7.2 treats it as out of bounds and aborts.
    EmptyTransfer,
    /// The device-side range is not one QEMU 7.2 accepts (see [`crate::regs::buffer_offset`]):
    /// it would abort the emulator, so it is refused before the device sees it.
    BufferRange { offset: usize, len: usize },
    /// The RAM-side range does not fit under the device's DMA mask; QEMU would silently clamp
    /// the address and transfer somewhere else.
    IovaOutOfRange { iova: u64, len: usize, mask: u64 },
    /// A DMA (or factorial) is still running; the device would ignore the new request.
    Busy,
    /// The deadline passed before the device finished.
    Timeout,
}

impl fmt::Display for EduError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EduError::NotEdu { identification } => {
                write!(
                    f,
                    "not an edu device (identification {identification:#010x})"
                )
            }
            EduError::LivenessFailed { wrote, read } => write!(
                f,
                "edu liveness check failed: wrote {wrote:#010x}, read {read:#010x}"
            ),
            EduError::InvalidDmaMaskBits(bits) => {
                write!(f, "edu DMA mask of {bits} bits (must be 1 to 64)")
            }
            EduError::EmptyTransfer => write!(f, "edu DMA of zero bytes"),
            EduError::BufferRange { offset, len } => write!(
                f,
                "edu DMA of {len:#x} bytes at buffer offset {offset:#x} leaves the buffer"
            ),
            EduError::IovaOutOfRange { iova, len, mask } => write!(
                f,
                "edu DMA of {len:#x} bytes at IOVA {iova:#x} exceeds the DMA mask {mask:#x}"
            ),
            EduError::Busy => write!(f, "edu device busy"),
            EduError::Timeout => write!(f, "edu device did not finish before the deadline"),
        }
    }
}
