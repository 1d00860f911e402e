//! The 36-byte header every ACPI system description table starts with (ACPI 6.5 §5.2.6).
use crate::reader::{ParseError, Reader};

/// Size of [`SdtHeader`] on the wire.
pub const SDT_HEADER_LEN: usize = 36;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SdtHeader {
    pub signature: [u8; 4],
    pub length: u32,
    pub revision: u8,
    pub checksum: u8,
    pub oem_id: [u8; 6],
    pub oem_table_id: [u8; 8],
    pub oem_revision: u32,
    pub creator_id: [u8; 4],
    pub creator_revision: u32,
}

impl SdtHeader {
    /// Parses the header of `table` and checks that it names `signature`, that its length
    /// field equals `table.len()` and that the checksum holds. Returns the header and a
    /// reader over the table body (the bytes after the header).
    pub fn parse_table<'a>(
        table: &'a [u8],
        signature: &[u8; 4],
    ) -> Result<(SdtHeader, Reader<'a>), ParseError> {
        let mut r = Reader::new(table, 0);
        let header = SdtHeader {
            signature: r.array()?,
            length: r.u32()?,
            revision: r.u8()?,
            checksum: r.u8()?,
            oem_id: r.array()?,
            oem_table_id: r.array()?,
            oem_revision: r.u32()?,
            creator_id: r.array()?,
            creator_revision: r.u32()?,
        };
        if &header.signature != signature {
            return Err(ParseError::WrongSignature {
                expected: *signature,
                found: header.signature,
            });
        }
        if header.length as usize != table.len() {
            return Err(ParseError::BadLength {
                declared: header.length as usize,
                available: table.len(),
            });
        }
        let sum = table.iter().fold(0u8, |s, b| s.wrapping_add(*b));
        if sum != 0 {
            return Err(ParseError::BadChecksum { sum });
        }
        Ok((header, r))
    }
}

/// Sets the checksum byte (offset 9) so the table sums to zero: for tests that build or
/// mutate tables.
pub fn fix_checksum(table: &mut [u8]) {
    if table.len() > 9 {
        table[9] = 0;
        let sum = table.iter().fold(0u8, |s, b| s.wrapping_add(*b));
        table[9] = 0u8.wrapping_sub(sum);
    }
}

/// A table with signature `sig`, `body` after the header, length and checksum set: for the
/// crate's unit tests.
#[cfg(test)]
pub(crate) fn sealed(sig: &[u8; 4], body: &[u8]) -> std::vec::Vec<u8> {
    let mut t = std::vec![0u8; SDT_HEADER_LEN];
    t[..4].copy_from_slice(sig);
    t.extend_from_slice(body);
    let len = t.len() as u32;
    t[4..8].copy_from_slice(&len.to_le_bytes());
    fix_checksum(&mut t);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(sig: &[u8; 4], body: &[u8]) -> std::vec::Vec<u8> {
        sealed(sig, body)
    }

    #[test]
    fn accepts_a_well_formed_header() {
        let t = table(b"DMAR", &[1, 2, 3]);
        let (h, mut body) = SdtHeader::parse_table(&t, b"DMAR").expect("valid");
        assert_eq!(h.length, 39);
        assert_eq!(body.table_offset(), SDT_HEADER_LEN);
        assert_eq!(body.rest(), &[1, 2, 3]);
    }

    #[test]
    fn rejects_signature_length_and_checksum_errors() {
        let t = table(b"IVRS", &[]);
        assert!(matches!(
            SdtHeader::parse_table(&t, b"DMAR"),
            Err(ParseError::WrongSignature { .. })
        ));
        assert!(matches!(
            SdtHeader::parse_table(&t[..30], b"IVRS"),
            Err(ParseError::Truncated { .. })
        ));
        let mut longer = t.clone();
        longer.push(0);
        assert!(matches!(
            SdtHeader::parse_table(&longer, b"IVRS"),
            Err(ParseError::BadLength {
                declared: 36,
                available: 37
            })
        ));
        let mut bad = t.clone();
        bad[20] ^= 1;
        assert!(matches!(
            SdtHeader::parse_table(&bad, b"IVRS"),
            Err(ParseError::BadChecksum { .. })
        ));
    }
}
