//! Exit codes (APM vol. 2 appendix C, table C-1) and what EXITINFO1/EXITINFO2 mean for each
//! exit Lazaret handles (§15.7–§15.25).
use core::fmt;

/// Exit codes Lazaret handles or names.
pub mod code {
    /// 0x40 + vector: an intercepted exception.
    pub const EXCP_BASE: u64 = 0x40;
    pub const INTR: u64 = 0x60;
    pub const NMI: u64 = 0x61;
    pub const SMI: u64 = 0x62;
    pub const INIT: u64 = 0x63;
    /// VINTR: the guest became able to take the virtual interrupt V_IRQ announces (§15.21.6).
    pub const VINTR: u64 = 0x64;
    /// A CR0 write changing bits other than TS and MP (the selective CR0 write intercept).
    pub const CR0_SEL_WRITE: u64 = 0x65;
    pub const CPUID: u64 = 0x72;
    pub const HLT: u64 = 0x78;
    pub const IOIO: u64 = 0x7B;
    pub const MSR: u64 = 0x7C;
    pub const SHUTDOWN: u64 = 0x7F;
    pub const VMRUN: u64 = 0x80;
    pub const VMMCALL: u64 = 0x81;
    pub const NPF: u64 = 0x400;
    /// VMEXIT_INVALID (-1): VMRUN refused the guest state.
    pub const INVALID: u64 = u64::MAX;
    /// VMEXIT_INVALID as QEMU's TCG writes it: -1 truncated to 32 bits (seen on 7.2 and 10.0).
    pub const INVALID_32: u64 = 0xFFFF_FFFF;
}

/// An IOIO exit (§15.10.2, figure 15-2): EXITINFO1 bit 0 TYPE (1 = IN), bit 2 STR, bit 3 REP,
/// bits 6:4 SZ8/SZ16/SZ32, bits 9:7 address size, bits 31:16 port; EXITINFO2 = next RIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoExit {
    pub port: u16,
    /// 1, 2 or 4 bytes.
    pub size: u8,
    pub write: bool,
    pub next_rip: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoDecodeError {
    /// INS/OUTS (STR) or a REP prefix: Lazaret does not emulate string I/O.
    StringIo { port: u16 },
    /// No or several of SZ8/SZ16/SZ32.
    BadSize(u64),
}

impl fmt::Display for IoDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoDecodeError::StringIo { port } => {
                write!(f, "string I/O at port {port:#x} is not supported")
            }
            IoDecodeError::BadSize(info) => write!(
                f,
                "IOIO exit with no single operand size (EXITINFO1 {info:#x})"
            ),
        }
    }
}

impl IoExit {
    pub fn decode(info1: u64, info2: u64) -> Result<IoExit, IoDecodeError> {
        let port = (info1 >> 16) as u16;
        if info1 & (1 << 2) != 0 || info1 & (1 << 3) != 0 {
            return Err(IoDecodeError::StringIo { port });
        }
        let size = match (info1 >> 4) & 7 {
            1 => 1,
            2 => 2,
            4 => 4,
            _ => return Err(IoDecodeError::BadSize(info1)),
        };
        Ok(IoExit {
            port,
            size,
            write: info1 & 1 == 0,
            next_rip: info2,
        })
    }
}

/// A nested page fault (§15.25.6): EXITINFO1 is a page-fault error code (bit 0 P, 1 RW, 2 US,
/// 3 RSV, 4 ID; bit 32 "during the final gpa translation", bit 33 "during a guest page-table
/// walk"), EXITINFO2 the faulting guest-physical address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NpfExit {
    pub gpa: u64,
    pub present: bool,
    pub write: bool,
    pub user: bool,
    pub reserved_bit: bool,
    pub fetch: bool,
    pub final_translation: bool,
    pub guest_table_walk: bool,
}

impl NpfExit {
    pub fn decode(info1: u64, info2: u64) -> NpfExit {
        let bit = |n: u32| info1 & (1 << n) != 0;
        NpfExit {
            gpa: info2,
            present: bit(0),
            write: bit(1),
            user: bit(2),
            reserved_bit: bit(3),
            fetch: bit(4),
            final_translation: bit(32),
            guest_table_walk: bit(33),
        }
    }
}

/// One decoded exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Exception {
        vector: u8,
        error_code: Option<u32>,
        info2: u64,
    },
    Intr,
    Nmi,
    /// The virtual-interrupt window opened (intercepted before the guest takes V_IRQ).
    Vintr,
    Cr0SelectiveWrite,
    Cpuid,
    Hlt,
    Io(IoExit),
    /// An IOIO exit Lazaret does not emulate.
    BadIo(IoDecodeError),
    Msr {
        write: bool,
    },
    Vmmcall,
    Shutdown,
    Npf(NpfExit),
    Invalid,
    /// Any other code (an intercept Lazaret set but does not emulate, e.g. VMRUN, INIT).
    Other(u64),
}

impl Exit {
    pub fn decode(exit_code: u64, info1: u64, info2: u64) -> Exit {
        match exit_code {
            c @ 0x40..=0x5F => {
                let vector = (c - code::EXCP_BASE) as u8;
                Exit::Exception {
                    vector,
                    error_code: crate::event::exception_has_error_code(vector)
                        .then_some(info1 as u32),
                    info2,
                }
            }
            code::INTR => Exit::Intr,
            code::NMI => Exit::Nmi,
            code::VINTR => Exit::Vintr,
            code::CR0_SEL_WRITE => Exit::Cr0SelectiveWrite,
            code::CPUID => Exit::Cpuid,
            code::HLT => Exit::Hlt,
            code::IOIO => match IoExit::decode(info1, info2) {
                Ok(io) => Exit::Io(io),
                Err(e) => Exit::BadIo(e),
            },
            code::MSR => Exit::Msr {
                write: info1 & 1 != 0,
            },
            code::VMMCALL => Exit::Vmmcall,
            code::SHUTDOWN => Exit::Shutdown,
            code::NPF => Exit::Npf(NpfExit::decode(info1, info2)),
            code::INVALID | code::INVALID_32 => Exit::Invalid,
            other => Exit::Other(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioio_fields_follow_figure_15_2() {
        // OUT DX, AL to 0x80: TYPE 0, SZ8 (bit 4), A64 (bit 9), port in 31:16.
        let out = IoExit::decode(0x0080_0210, 0x20_0005).unwrap();
        assert_eq!(
            out,
            IoExit {
                port: 0x80,
                size: 1,
                write: true,
                next_rip: 0x20_0005
            }
        );
        // IN EAX, DX from 0xCFC: TYPE 1, SZ32 (bit 6).
        let inl = IoExit::decode(0x0CFC_0241, 0).unwrap();
        assert_eq!((inl.port, inl.size, inl.write), (0xCFC, 4, false));
        assert_eq!(IoExit::decode(0x0CF8_0221, 0).unwrap().size, 2);
        // INSB (STR, bit 2), REP OUTSB (bit 3): refused cleanly.
        assert_eq!(
            IoExit::decode(0x0060_0215, 0),
            Err(IoDecodeError::StringIo { port: 0x60 })
        );
        assert_eq!(
            IoExit::decode(0x0060_0218, 0),
            Err(IoDecodeError::StringIo { port: 0x60 })
        );
        assert_eq!(
            IoExit::decode(0x0060_0230, 0),
            Err(IoDecodeError::BadSize(0x0060_0230))
        );
        assert_eq!(
            IoExit::decode(0x0060_0200, 0),
            Err(IoDecodeError::BadSize(0x0060_0200))
        );
    }

    #[test]
    fn npf_error_code_and_gpa() {
        let n = NpfExit::decode((1 << 32) | 0b10011, 0xC000_1000);
        assert_eq!(n.gpa, 0xC000_1000);
        assert!(n.present && n.write && n.fetch && n.final_translation);
        assert!(!n.user && !n.reserved_bit && !n.guest_table_walk);
        let walk = NpfExit::decode(1 << 33, 0x1_0000);
        assert!(walk.guest_table_walk && !walk.present && !walk.write);
    }

    #[test]
    fn exit_codes_per_appendix_c() {
        assert_eq!(Exit::decode(0x72, 0, 0), Exit::Cpuid);
        assert_eq!(Exit::decode(0x65, 0, 0), Exit::Cr0SelectiveWrite);
        assert_eq!(Exit::decode(0x78, 0, 0), Exit::Hlt);
        assert_eq!(Exit::decode(0x81, 0, 0), Exit::Vmmcall);
        assert_eq!(Exit::decode(0x7F, 0, 0), Exit::Shutdown);
        assert_eq!(Exit::decode(0x60, 0, 0), Exit::Intr);
        assert_eq!(Exit::decode(0x61, 0, 0), Exit::Nmi);
        assert_eq!(Exit::decode(0x64, 0, 0), Exit::Vintr);
        assert_eq!(
            Exit::decode(0x63, 0, 0),
            Exit::Other(0x63),
            "INIT is not VINTR"
        );
        assert_eq!(Exit::decode(0x7C, 1, 0), Exit::Msr { write: true });
        assert_eq!(Exit::decode(0x7C, 0, 0), Exit::Msr { write: false });
        assert_eq!(Exit::decode(u64::MAX, 0, 0), Exit::Invalid);
        assert_eq!(
            Exit::decode(0xFFFF_FFFF, 0, 0),
            Exit::Invalid,
            "TCG's 32-bit -1"
        );
        assert_eq!(
            Exit::decode(0x4E, 0x2, 0xdead),
            Exit::Exception {
                vector: 14,
                error_code: Some(2),
                info2: 0xdead
            }
        );
        assert_eq!(
            Exit::decode(0x46, 0x2, 0),
            Exit::Exception {
                vector: 6,
                error_code: None,
                info2: 0
            }
        );
        assert!(matches!(Exit::decode(0x400, 1, 0x5000), Exit::Npf(n) if n.gpa == 0x5000));
        assert!(matches!(Exit::decode(0x7B, 0x0060_0214, 0), Exit::BadIo(_)));
        assert_eq!(Exit::decode(0x80, 0, 0), Exit::Other(0x80));
    }
}
