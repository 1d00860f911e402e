//! A cursor over untrusted table bytes: every read is bounds-checked.
use core::fmt;

/// Why a table could not be parsed. `offset` is the byte offset in the whole table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Fewer bytes than the structure at `offset` needs.
    Truncated {
        offset: usize,
        needed: usize,
        available: usize,
    },
    /// The header's length field disagrees with the bytes supplied.
    BadLength { declared: usize, available: usize },
    /// The ACPI checksum (all bytes sum to 0 mod 256) does not hold.
    BadChecksum { sum: u8 },
    /// The table is not the expected one.
    WrongSignature { expected: [u8; 4], found: [u8; 4] },
    /// A subtable or entry declares a length that cannot be right (zero, shorter than its
    /// own header, or running past its parent).
    BadSubtableLength { offset: usize, length: usize },
    /// A field holds a value the spec does not allow.
    InvalidField { offset: usize, what: &'static str },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ParseError::Truncated {
                offset,
                needed,
                available,
            } => write!(
                f,
                "truncated at offset {offset:#x}: need {needed} bytes, {available} left"
            ),
            ParseError::BadLength {
                declared,
                available,
            } => write!(
                f,
                "header length {declared} does not match the {available} bytes supplied"
            ),
            ParseError::BadChecksum { sum } => {
                write!(f, "bad checksum: bytes sum to {sum:#04x}, not 0")
            }
            ParseError::WrongSignature { expected, found } => write!(
                f,
                "expected signature {:?}, found {:?}",
                Ascii(&expected),
                Ascii(&found)
            ),
            ParseError::BadSubtableLength { offset, length } => {
                write!(
                    f,
                    "subtable at offset {offset:#x} has impossible length {length}"
                )
            }
            ParseError::InvalidField { offset, what } => {
                write!(f, "invalid field at offset {offset:#x}: {what}")
            }
        }
    }
}

/// Prints a signature as text, escaping what is not printable ASCII.
pub struct Ascii<'a>(pub &'a [u8]);

impl fmt::Debug for Ascii<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for &b in self.0 {
            if b.is_ascii_graphic() || b == b' ' {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        f.write_str("\"")
    }
}

/// A bounds-checked little-endian cursor. `base` is the offset of `bytes[0]` in the whole
/// table, so errors name table offsets that match iasl's listing.
#[derive(Clone, Copy, Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8], base: usize) -> Reader<'a> {
        Reader {
            bytes,
            pos: 0,
            base,
        }
    }

    /// Offset of the cursor within the whole table.
    pub fn table_offset(&self) -> usize {
        self.base + self.pos
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The next `n` bytes, advancing past them.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], ParseError> {
        if n > self.remaining() {
            return Err(ParseError::Truncated {
                offset: self.table_offset(),
                needed: n,
                available: self.remaining(),
            });
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// A sub-reader over the next `n` bytes, advancing past them.
    pub fn sub(&mut self, n: usize) -> Result<Reader<'a>, ParseError> {
        let base = self.table_offset();
        Ok(Reader::new(self.bytes(n)?, base))
    }

    /// The next `n` bytes without advancing.
    pub fn peek(&self, n: usize) -> Result<&'a [u8], ParseError> {
        let mut copy = *self;
        copy.bytes(n)
    }

    pub fn skip(&mut self, n: usize) -> Result<(), ParseError> {
        self.bytes(n).map(|_| ())
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], ParseError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, ParseError> {
        Ok(self.array::<1>()?[0])
    }

    pub fn u16(&mut self) -> Result<u16, ParseError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> Result<u32, ParseError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, ParseError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// All bytes not yet read.
    pub fn rest(&mut self) -> &'a [u8] {
        let out = &self.bytes[self.pos..];
        self.pos = self.bytes.len();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian_and_reports_table_offsets() {
        let data = [1, 0, 2, 0, 0, 0, 9];
        let mut r = Reader::new(&data, 0x30);
        assert_eq!(r.u16(), Ok(1));
        assert_eq!(r.u32(), Ok(2));
        assert_eq!(r.table_offset(), 0x36);
        assert_eq!(
            r.u16(),
            Err(ParseError::Truncated {
                offset: 0x36,
                needed: 2,
                available: 1
            })
        );
        assert_eq!(r.u8(), Ok(9), "a failed read does not advance");
        assert!(r.is_empty());
    }

    #[test]
    fn sub_readers_keep_table_offsets() {
        let data = [0u8; 10];
        let mut r = Reader::new(&data, 4);
        r.skip(3).expect("in range");
        let mut s = r.sub(4).expect("in range");
        assert_eq!(s.table_offset(), 7);
        assert!(s.bytes(5).is_err());
        assert_eq!(r.remaining(), 3);
    }
}
