//! The I/O APICs of the MADT (ACPI 6.5 §5.2.12, "Multiple APIC Description Table"): the IDs
//! an IVRS must name for AMD-Vi interrupt remapping to be relied on
//! ([`crate::ivrs::remapping_doubt`]). The kernel reads the CPUs from the MADT through the
//! `acpi` crate; this reader exists so the IVRS check and the pre-flight tool can take the
//! raw table, as they take the IVRS.
//!
//! Layout: the ACPI header (36 bytes), Local Interrupt Controller Address (u32), Flags (u32),
//! then interrupt controller structures back to back, each type (u8) and length (u8) first.
//! Type 1, I/O APIC (§5.2.12.3), is 12 bytes: I/O APIC ID at 2, reserved, address (u32) at 4,
//! Global System Interrupt base (u32) at 8. Every length is checked before anything is read.
extern crate alloc;

use alloc::vec::Vec;

use crate::reader::ParseError;
use crate::sdt::{SdtHeader, SDT_HEADER_LEN};

/// Offset of the first interrupt controller structure.
pub const MADT_ENTRIES_OFFSET: usize = SDT_HEADER_LEN + 8;

/// Interrupt controller structure type 1 (§5.2.12, Table "Interrupt Controller Structure
/// Types").
const IO_APIC: u8 = 1;
/// Its length.
const IO_APIC_LEN: usize = 12;

/// The I/O APIC IDs the MADT lists, in table order.
pub fn ioapic_ids(table: &[u8]) -> Result<Vec<u8>, ParseError> {
    let (_, mut body) = SdtHeader::parse_table(table, b"APIC")?;
    body.skip(8)?;
    let mut ids = Vec::new();
    while !body.is_empty() {
        let offset = body.table_offset();
        let head = body.peek(2)?;
        let (kind, length) = (head[0], usize::from(head[1]));
        let too_short = length < 2 || (kind == IO_APIC && length < IO_APIC_LEN);
        if too_short || length > body.remaining() {
            return Err(ParseError::BadSubtableLength { offset, length });
        }
        let entry = body.bytes(length)?;
        if kind == IO_APIC {
            ids.push(entry[2]);
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdt::fix_checksum;

    /// A MADT around `entries`: local APIC address 0xfee00000, flags PCAT_COMPAT.
    fn madt(entries: &[u8]) -> std::vec::Vec<u8> {
        let fixed = [0, 0, 0xe0, 0xfe, 1, 0, 0, 0];
        crate::sdt::sealed(b"APIC", &[&fixed[..], entries].concat())
    }

    /// What QEMU's q35 writes for one CPU: a local APIC, the IOAPIC (ID 0 at 0xfec00000), an
    /// interrupt source override and a local APIC NMI.
    const Q35: [u8; 36] = [
        0, 8, 0, 0, 1, 0, 0, 0, // local APIC, processor 0, APIC ID 0, enabled
        1, 12, 0, 0, 0, 0, 0xc0, 0xfe, 0, 0, 0, 0, // IOAPIC ID 0, 0xfec00000, GSI base 0
        2, 10, 0, 0, 2, 0, 0, 0, 0, 0, // IRQ0 -> GSI 2
        4, 6, 0xff, 0, 0, 1, // LAPIC NMI, all processors, LINT1
    ];

    #[test]
    fn the_ioapic_ids_are_read_and_other_entries_skipped() {
        assert_eq!(ioapic_ids(&madt(&Q35)), Ok(std::vec![0]));
        let mut two = Q35.to_vec();
        two.extend_from_slice(&[1, 12, 0x21, 0, 0, 0x10, 0xc0, 0xfe, 24, 0, 0, 0]);
        assert_eq!(ioapic_ids(&madt(&two)), Ok(std::vec![0, 0x21]));
        assert_eq!(ioapic_ids(&madt(&[])), Ok(std::vec![]));
    }

    #[test]
    fn impossible_lengths_and_truncations_are_errors() {
        for (bad, length) in [
            (&[0u8, 0][..], 0),
            (&[0, 1], 1),
            (&[1, 8, 0, 0, 0, 0, 0, 0], 8),
        ] {
            let mut entries = Q35.to_vec();
            entries.extend_from_slice(bad);
            assert_eq!(
                ioapic_ids(&madt(&entries)),
                Err(ParseError::BadSubtableLength {
                    offset: MADT_ENTRIES_OFFSET + Q35.len(),
                    length
                })
            );
        }
        let mut over = Q35.to_vec();
        over.extend_from_slice(&[1, 13, 0, 0]);
        assert!(matches!(
            ioapic_ids(&madt(&over)),
            Err(ParseError::BadSubtableLength { length: 13, .. })
        ));
        let whole = madt(&Q35);
        for cut in 0..whole.len() {
            let mut t = whole[..cut].to_vec();
            if t.len() >= 8 {
                t[4..8].copy_from_slice(&(cut as u32).to_le_bytes());
                fix_checksum(&mut t);
            }
            // Whole entries only: a cut between two is a shorter, valid table.
            let boundary = [0, 8, 20, 30, 36].map(|b| MADT_ENTRIES_OFFSET + b);
            assert_eq!(ioapic_ids(&t).is_ok(), boundary.contains(&cut), "{cut}");
        }
    }
}
