//! Instruction lengths for the exits Lazaret completes, needed when the CPU has no NRIP save
//! (CPUID 8000_000A EDX bit 3 clear; QEMU's TCG) and no decode assists. Only the handful of
//! encodings such an exit can come from are accepted (AMD64 APM vol. 3: CPUID `0F A2`,
//! HLT `F4`, VMMCALL `0F 01 D9`, RDMSR `0F 32`, WRMSR `0F 30`, IN `E4 ib`/`E5 ib`/`EC`/`ED`,
//! OUT `E6 ib`/`E7 ib`/`EE`/`EF`), after any legacy prefixes and one REX prefix; the whole
//! instruction is at most 15 bytes (vol. 3 §1.1). Everything else is refused: a guest that
//! exits on some other bytes (self-modifying code racing the exit, a LOCK prefix that makes
//! the instruction #UD) must not have its RIP moved by a guess.
use core::fmt;

/// An instruction whose exit Lazaret completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Instruction {
    Cpuid,
    Hlt,
    Vmmcall,
    Rdmsr,
    Wrmsr,
    /// IN or OUT: `port` is the immediate, or `None` for DX; `size` in bytes.
    Io {
        write: bool,
        port: Option<u8>,
        size: u8,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub instruction: Instruction,
    /// Length in bytes, prefixes included (1–15).
    pub len: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes ended before the instruction did.
    Truncated,
    /// More than 15 bytes: the CPU raises #GP on it.
    TooLong,
    /// LOCK on an instruction that does not take it (#UD).
    Lock,
    /// Not one of the instructions listed above (the opcode byte where decoding stopped).
    Unsupported(u8),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => {
                f.write_str("the instruction bytes end before the instruction does")
            }
            DecodeError::TooLong => f.write_str("the instruction is longer than 15 bytes"),
            DecodeError::Lock => {
                f.write_str("a LOCK prefix on an instruction that does not take one")
            }
            DecodeError::Unsupported(b) => {
                write!(f, "opcode {b:#04x} is not an instruction Lazaret completes")
            }
        }
    }
}

pub const MAX_LEN: usize = 15;

fn is_legacy_prefix(b: u8) -> bool {
    matches!(
        b,
        0x66 | 0x67 | 0xF2 | 0xF3 | 0x2E | 0x36 | 0x3E | 0x26 | 0x64 | 0x65
    )
}

/// Decodes the instruction at the start of `bytes` (up to 15 of them; more are ignored).
pub fn decode_length(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    let bytes = &bytes[..bytes.len().min(MAX_LEN)];
    let at = |i: usize| {
        bytes.get(i).copied().ok_or(if bytes.len() == MAX_LEN {
            DecodeError::TooLong
        } else {
            DecodeError::Truncated
        })
    };
    let mut i = 0;
    let mut operand16 = false;
    loop {
        let b = at(i)?;
        if b == 0xF0 {
            return Err(DecodeError::Lock);
        }
        if is_legacy_prefix(b) {
            operand16 |= b == 0x66;
            i += 1;
            continue;
        }
        break;
    }
    // One REX prefix, immediately before the opcode (it changes nothing for these opcodes:
    // IN/OUT have no 64-bit form).
    if (0x40..=0x4F).contains(&at(i)?) {
        i += 1;
    }
    let wide = if operand16 { 2 } else { 4 };
    let opcode = at(i)?;
    let (instruction, rest) = match opcode {
        0xF4 => (Instruction::Hlt, 0),
        0xE4..=0xE7 => {
            let port = at(i + 1)?;
            let size = if opcode & 1 == 0 { 1 } else { wide };
            (
                Instruction::Io {
                    write: opcode & 2 != 0,
                    port: Some(port),
                    size,
                },
                1,
            )
        }
        0xEC..=0xEF => {
            let size = if opcode & 1 == 0 { 1 } else { wide };
            (
                Instruction::Io {
                    write: opcode & 2 != 0,
                    port: None,
                    size,
                },
                0,
            )
        }
        0x0F => match at(i + 1)? {
            0xA2 => (Instruction::Cpuid, 1),
            0x30 => (Instruction::Wrmsr, 1),
            0x32 => (Instruction::Rdmsr, 1),
            0x01 => match at(i + 2)? {
                0xD9 => (Instruction::Vmmcall, 2),
                other => return Err(DecodeError::Unsupported(other)),
            },
            other => return Err(DecodeError::Unsupported(other)),
        },
        other => return Err(DecodeError::Unsupported(other)),
    };
    let len = i + 1 + rest;
    if len > MAX_LEN {
        return Err(DecodeError::TooLong);
    }
    Ok(Decoded {
        instruction,
        len: len as u8,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Instruction::*;

    fn ok(bytes: &[u8]) -> (Instruction, u8) {
        let d = decode_length(bytes).unwrap_or_else(|e| panic!("{bytes:x?}: {e}"));
        (d.instruction, d.len)
    }

    #[test]
    fn plain_encodings() {
        let table: &[(&[u8], Instruction, u8)] = &[
            (&[0x0F, 0xA2], Cpuid, 2),
            (&[0xF4], Hlt, 1),
            (&[0x0F, 0x01, 0xD9], Vmmcall, 3),
            (&[0x0F, 0x32], Rdmsr, 2),
            (&[0x0F, 0x30], Wrmsr, 2),
            (
                &[0xE4, 0x60],
                Io {
                    write: false,
                    port: Some(0x60),
                    size: 1,
                },
                2,
            ),
            (
                &[0xE5, 0x60],
                Io {
                    write: false,
                    port: Some(0x60),
                    size: 4,
                },
                2,
            ),
            (
                &[0xE6, 0x80],
                Io {
                    write: true,
                    port: Some(0x80),
                    size: 1,
                },
                2,
            ),
            (
                &[0xE7, 0x80],
                Io {
                    write: true,
                    port: Some(0x80),
                    size: 4,
                },
                2,
            ),
            (
                &[0xEC],
                Io {
                    write: false,
                    port: None,
                    size: 1,
                },
                1,
            ),
            (
                &[0xED],
                Io {
                    write: false,
                    port: None,
                    size: 4,
                },
                1,
            ),
            (
                &[0xEE],
                Io {
                    write: true,
                    port: None,
                    size: 1,
                },
                1,
            ),
            (
                &[0xEF],
                Io {
                    write: true,
                    port: None,
                    size: 4,
                },
                1,
            ),
        ];
        for (bytes, insn, len) in table {
            assert_eq!(ok(bytes), (*insn, *len), "{bytes:x?}");
            // Trailing bytes (the next instruction) change nothing.
            let mut longer = bytes.to_vec();
            longer.extend([0x90, 0x90]);
            assert_eq!(ok(&longer), (*insn, *len), "{longer:x?}");
        }
    }

    #[test]
    fn prefixes_count_and_0x66_narrows_in_and_out() {
        assert_eq!(
            ok(&[0x66, 0xED]),
            (
                Io {
                    write: false,
                    port: None,
                    size: 2
                },
                2
            )
        );
        assert_eq!(
            ok(&[0x66, 0xE7, 0x70]),
            (
                Io {
                    write: true,
                    port: Some(0x70),
                    size: 2
                },
                3
            )
        );
        assert_eq!(ok(&[0x48, 0xEF]).1, 2, "REX.W gives no 64-bit OUT");
        assert_eq!(ok(&[0x2E, 0x3E, 0x0F, 0xA2]), (Cpuid, 4));
        assert_eq!(ok(&[0x66, 0x41, 0x0F, 0x01, 0xD9]), (Vmmcall, 5));
        assert_eq!(
            ok(&[0x66; 13]
                .iter()
                .copied()
                .chain([0x0F, 0xA2])
                .collect::<Vec<_>>()),
            (Cpuid, 15)
        );
    }

    #[test]
    fn refusals() {
        let mut sixteen = vec![0x66; 14];
        sixteen.extend([0x0F, 0xA2]);
        assert_eq!(decode_length(&sixteen), Err(DecodeError::TooLong));
        assert_eq!(decode_length(&[0x66; 15]), Err(DecodeError::TooLong));
        assert_eq!(decode_length(&[]), Err(DecodeError::Truncated));
        assert_eq!(decode_length(&[0x0F]), Err(DecodeError::Truncated));
        assert_eq!(decode_length(&[0xE4]), Err(DecodeError::Truncated));
        assert_eq!(decode_length(&[0x0F, 0x01]), Err(DecodeError::Truncated));
        assert_eq!(decode_length(&[0xF0, 0x0F, 0xA2]), Err(DecodeError::Lock));
        assert_eq!(
            decode_length(&[0x6C]),
            Err(DecodeError::Unsupported(0x6C)),
            "INSB"
        );
        assert_eq!(
            decode_length(&[0xF3, 0x6E]),
            Err(DecodeError::Unsupported(0x6E)),
            "REP OUTSB"
        );
        assert_eq!(
            decode_length(&[0x0F, 0x01, 0xD8]),
            Err(DecodeError::Unsupported(0xD8)),
            "VMRUN"
        );
        assert_eq!(
            decode_length(&[0x0F, 0x0B]),
            Err(DecodeError::Unsupported(0x0B))
        );
        assert_eq!(decode_length(&[0x90]), Err(DecodeError::Unsupported(0x90)));
        assert_eq!(
            decode_length(&[0x48, 0x48, 0xF4]),
            Err(DecodeError::Unsupported(0x48)),
            "two REX"
        );
    }
}
