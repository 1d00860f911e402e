//! [`BootInfo`]: what Lazaret tells a guest at [`crate::layout::BOOT_INFO_GPA`].
//!
//! Wire layout (guest contract; little-endian, the `repr(C)` layout of the fields in this
//! order, 56 bytes): `magic: u64` @0, `version: u32` @8, `_pad: u32` @12, `memory_size: u64`
//! @16, `cmdline_gpa: u64` @24, `cmdline_len: u64` @32, `mmio_window_gpa: u64` @40,
//! `mmio_window_size: u64` @48. It is encoded and decoded field by field, so neither side
//! depends on the other's struct layout or alignment.

use core::fmt;

use crate::layout::{
    CMDLINE_GPA, DEFAULT_MEMORY_SIZE, IMAGE_BASE_GPA, MAX_CMDLINE, MMIO_WINDOW_GPA,
    MMIO_WINDOW_SIZE, PAGE_SIZE,
};

/// "LZRTBOOT" read as a little-endian u64.
pub const BOOT_INFO_MAGIC: u64 = u64::from_le_bytes(*b"LZRTBOOT");
/// The only version this crate reads or writes.
pub const BOOT_INFO_VERSION: u32 = 1;
/// Encoded size in bytes.
pub const BOOT_INFO_SIZE: usize = 56;

const MAGIC: usize = 0;
const VERSION: usize = 8;
const PAD: usize = 12;
const MEMORY_SIZE: usize = 16;
const CMDLINE_GPA_AT: usize = 24;
const CMDLINE_LEN: usize = 32;
const MMIO_GPA: usize = 40;
const MMIO_SIZE: usize = 48;

/// The decoded record (magic, version and padding are checked, not kept).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootInfo {
    /// Guest RAM is gpa 0 .. `memory_size`.
    pub memory_size: u64,
    pub cmdline_gpa: u64,
    pub cmdline_len: u64,
    pub mmio_window_gpa: u64,
    pub mmio_window_size: u64,
}

/// Why bytes are not a usable [`BootInfo`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootInfoError {
    /// Fewer than [`BOOT_INFO_SIZE`] bytes.
    Truncated {
        len: usize,
    },
    BadMagic(u64),
    UnsupportedVersion(u32),
    /// Guest RAM must be a whole number of pages reaching past the image base.
    BadMemorySize(u64),
    /// The command line must lie at [`CMDLINE_GPA`], be at most [`MAX_CMDLINE`] bytes and fit
    /// in guest RAM.
    BadCmdline {
        gpa: u64,
        len: u64,
    },
    /// The MMIO window must be page-aligned, non-empty, not wrap, and not overlap guest RAM.
    BadMmioWindow {
        gpa: u64,
        size: u64,
    },
}

impl fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BootInfoError::Truncated { len } => {
                write!(f, "boot info truncated: {len} of {BOOT_INFO_SIZE} bytes")
            }
            BootInfoError::BadMagic(m) => write!(f, "boot info magic {m:#018x} is wrong"),
            BootInfoError::UnsupportedVersion(v) => write!(f, "boot info version {v} unsupported"),
            BootInfoError::BadMemorySize(s) => write!(f, "guest memory size {s:#x} unusable"),
            BootInfoError::BadCmdline { gpa, len } => {
                write!(
                    f,
                    "command line of {len:#x} bytes at {gpa:#x} out of bounds"
                )
            }
            BootInfoError::BadMmioWindow { gpa, size } => {
                write!(f, "MMIO window {gpa:#x}+{size:#x} unusable")
            }
        }
    }
}

impl BootInfo {
    /// The standard record: the given RAM size and command-line length, the contract's
    /// addresses for everything else.
    pub const fn new(memory_size: u64, cmdline_len: u64) -> BootInfo {
        BootInfo {
            memory_size,
            cmdline_gpa: CMDLINE_GPA,
            cmdline_len,
            mmio_window_gpa: MMIO_WINDOW_GPA,
            mmio_window_size: MMIO_WINDOW_SIZE,
        }
    }

    /// The little-endian wire form.
    pub fn encode(&self) -> [u8; BOOT_INFO_SIZE] {
        let mut b = [0; BOOT_INFO_SIZE];
        put(&mut b, MAGIC, BOOT_INFO_MAGIC);
        b[VERSION..VERSION + 4].copy_from_slice(&BOOT_INFO_VERSION.to_le_bytes());
        b[PAD..PAD + 4].copy_from_slice(&0u32.to_le_bytes());
        put(&mut b, MEMORY_SIZE, self.memory_size);
        put(&mut b, CMDLINE_GPA_AT, self.cmdline_gpa);
        put(&mut b, CMDLINE_LEN, self.cmdline_len);
        put(&mut b, MMIO_GPA, self.mmio_window_gpa);
        put(&mut b, MMIO_SIZE, self.mmio_window_size);
        b
    }

    /// Decodes and checks a record: magic, version, then that every range it names is one
    /// the contract allows (so a guest can use them without further checks).
    pub fn decode(bytes: &[u8]) -> Result<BootInfo, BootInfoError> {
        let Some(b) = bytes.get(..BOOT_INFO_SIZE) else {
            return Err(BootInfoError::Truncated { len: bytes.len() });
        };
        let magic = get(b, MAGIC);
        if magic != BOOT_INFO_MAGIC {
            return Err(BootInfoError::BadMagic(magic));
        }
        let version =
            u32::from_le_bytes([b[VERSION], b[VERSION + 1], b[VERSION + 2], b[VERSION + 3]]);
        if version != BOOT_INFO_VERSION {
            return Err(BootInfoError::UnsupportedVersion(version));
        }
        let info = BootInfo {
            memory_size: get(b, MEMORY_SIZE),
            cmdline_gpa: get(b, CMDLINE_GPA_AT),
            cmdline_len: get(b, CMDLINE_LEN),
            mmio_window_gpa: get(b, MMIO_GPA),
            mmio_window_size: get(b, MMIO_SIZE),
        };
        info.check()?;
        Ok(info)
    }

    /// The semantic checks of [`BootInfo::decode`], also for the writer to run before it
    /// hands a record to a guest.
    pub fn check(&self) -> Result<(), BootInfoError> {
        let m = self.memory_size;
        if !m.is_multiple_of(PAGE_SIZE) || m <= IMAGE_BASE_GPA {
            return Err(BootInfoError::BadMemorySize(m));
        }
        let cmdline_ok = self.cmdline_gpa == CMDLINE_GPA && self.cmdline_len <= MAX_CMDLINE;
        if !cmdline_ok {
            return Err(BootInfoError::BadCmdline {
                gpa: self.cmdline_gpa,
                len: self.cmdline_len,
            });
        }
        let (gpa, size) = (self.mmio_window_gpa, self.mmio_window_size);
        let window_ok = gpa.is_multiple_of(PAGE_SIZE)
            && size.is_multiple_of(PAGE_SIZE)
            && size != 0
            && gpa >= m
            && gpa.checked_add(size).is_some();
        if !window_ok {
            return Err(BootInfoError::BadMmioWindow { gpa, size });
        }
        Ok(())
    }

    /// Whether `[gpa, gpa + len)` lies inside the MMIO window.
    pub fn in_mmio_window(&self, gpa: u64, len: u64) -> bool {
        gpa >= self.mmio_window_gpa
            && gpa.checked_add(len).is_some_and(|end| {
                end <= self.mmio_window_gpa.saturating_add(self.mmio_window_size)
            })
    }
}

impl Default for BootInfo {
    fn default() -> BootInfo {
        BootInfo::new(DEFAULT_MEMORY_SIZE, 0)
    }
}

fn put(b: &mut [u8; BOOT_INFO_SIZE], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn get(b: &[u8], at: usize) -> u64 {
    let mut v = [0; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_contract_offsets_little_endian() {
        let b = BootInfo::new(0x80_0000, 0x11).encode();
        assert_eq!(&b[0..8], b"LZRTBOOT");
        assert_eq!(&b[8..16], &[1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&b[16..24], &0x80_0000u64.to_le_bytes());
        assert_eq!(&b[24..32], &0x2000u64.to_le_bytes());
        assert_eq!(&b[32..40], &0x11u64.to_le_bytes());
        assert_eq!(&b[40..48], &0xC000_0000u64.to_le_bytes());
        assert_eq!(&b[48..56], &0x1000_0000u64.to_le_bytes());
    }

    #[test]
    fn round_trips_and_ignores_trailing_bytes() {
        let info = BootInfo::new(16 << 20, 4096);
        let mut bytes = info.encode().to_vec();
        bytes.extend([0xff; 8]);
        assert_eq!(BootInfo::decode(&bytes), Ok(info));
    }

    #[test]
    fn refuses_short_foreign_and_future_records() {
        let good = BootInfo::default().encode();
        assert_eq!(
            BootInfo::decode(&good[..55]),
            Err(BootInfoError::Truncated { len: 55 })
        );
        let mut b = good;
        b[0] ^= 1;
        assert!(matches!(
            BootInfo::decode(&b),
            Err(BootInfoError::BadMagic(_))
        ));
        let mut b = good;
        b[8] = 2;
        assert_eq!(
            BootInfo::decode(&b),
            Err(BootInfoError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn refuses_ranges_outside_the_contract() {
        let bad = |info: BootInfo| BootInfo::decode(&info.encode());
        let base = BootInfo::default();
        for m in [0, IMAGE_BASE_GPA, DEFAULT_MEMORY_SIZE + 1] {
            let info = BootInfo {
                memory_size: m,
                ..base
            };
            assert_eq!(bad(info), Err(BootInfoError::BadMemorySize(m)));
        }
        let long = BootInfo {
            cmdline_len: MAX_CMDLINE + 1,
            ..base
        };
        assert!(matches!(bad(long), Err(BootInfoError::BadCmdline { .. })));
        let moved = BootInfo {
            cmdline_gpa: 0x1000,
            ..base
        };
        assert!(matches!(bad(moved), Err(BootInfoError::BadCmdline { .. })));
        let overlaps = BootInfo {
            mmio_window_gpa: 0x40_0000,
            ..base
        };
        assert!(matches!(
            bad(overlaps),
            Err(BootInfoError::BadMmioWindow { .. })
        ));
        let wraps = BootInfo {
            mmio_window_gpa: u64::MAX - 0xfff,
            ..base
        };
        assert!(matches!(
            bad(wraps),
            Err(BootInfoError::BadMmioWindow { .. })
        ));
        let empty = BootInfo {
            mmio_window_size: 0,
            ..base
        };
        assert!(matches!(
            bad(empty),
            Err(BootInfoError::BadMmioWindow { .. })
        ));
        let ragged = BootInfo {
            mmio_window_size: 0x1800,
            ..base
        };
        assert!(matches!(
            bad(ragged),
            Err(BootInfoError::BadMmioWindow { .. })
        ));
    }

    #[test]
    fn mmio_window_membership_is_whole_range() {
        let info = BootInfo::default();
        assert!(info.in_mmio_window(MMIO_WINDOW_GPA, 4));
        assert!(info.in_mmio_window(MMIO_WINDOW_GPA + MMIO_WINDOW_SIZE - 4, 4));
        assert!(!info.in_mmio_window(MMIO_WINDOW_GPA + MMIO_WINDOW_SIZE - 2, 4));
        assert!(!info.in_mmio_window(MMIO_WINDOW_GPA - 1, 2));
        assert!(!info.in_mmio_window(u64::MAX, 2));
    }
}
