//! SPCR, the table through which firmware names the serial console it redirects to
//! (Microsoft "Serial Port Console Redirection Table" specification, revision 2 and later).
//!
//! Servers put their BMC's serial-over-LAN UART in it, often not at COM1; Lazaret's console
//! follows it unless `console=` says otherwise. Only what the console needs is decoded; the
//! layout offsets are those of the specification's table 1.
use crate::reader::ParseError;
use crate::sdt::SdtHeader;

/// Where the UART's registers are (the Generic Address Structure's address space ID, ACPI
/// 6.5 §5.2.3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UartAddress {
    /// System I/O space: a PC-style port such as 0x3f8.
    Port(u16),
    /// System memory (MMIO UARTs).
    Memory(u64),
    /// Another address space (PCI configuration, …), given by its ID.
    Other(u8, u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spcr {
    /// Interface type (DBG2 serial subtypes): 0 full 16550, 1 16450 subset, 0x12 16550
    /// compatible with parameters in the GAS.
    pub interface_type: u8,
    pub address: UartAddress,
    /// The baud rate the firmware configured; `None` when the table says "as is" (0) or
    /// gives a code the specification does not define.
    pub baud: Option<u32>,
}

impl Spcr {
    /// A 16550-compatible UART (the only kind Lazaret's console drives).
    pub fn is_16550(&self) -> bool {
        matches!(self.interface_type, 0x00 | 0x01 | 0x12)
    }

    pub fn parse(table: &[u8]) -> Result<Spcr, ParseError> {
        let (_, mut r) = SdtHeader::parse_table(table, b"SPCR")?;
        // +36 interface type, +37 three reserved bytes, +40 the 12-byte base address GAS.
        let interface_type = r.u8()?;
        r.skip(3)?;
        let space = r.u8()?;
        r.skip(3)?; // register bit width, bit offset, access size
        let addr = r.u64()?;
        // +52 interrupt type, +53 IRQ, +54 GSI (4 bytes), +58 configured baud rate.
        r.skip(6)?;
        let baud = match r.u8()? {
            3 => Some(9600),
            4 => Some(19_200),
            6 => Some(57_600),
            7 => Some(115_200),
            _ => None,
        };
        let address = match space {
            1 => UartAddress::Port(u16::try_from(addr).map_err(|_| ParseError::InvalidField {
                offset: 44,
                what: "I/O port address above 0xffff",
            })?),
            0 => UartAddress::Memory(addr),
            other => UartAddress::Other(other, addr),
        };
        Ok(Spcr {
            interface_type,
            address,
            baud,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdt::fix_checksum;

    /// An 80-byte revision-2 SPCR as a server's firmware writes it: 16550 at `port`.
    fn spcr(space: u8, addr: u64, baud_code: u8) -> Vec<u8> {
        let mut t = vec![0u8; 80];
        t[..4].copy_from_slice(b"SPCR");
        t[4..8].copy_from_slice(&80u32.to_le_bytes());
        t[8] = 2;
        t[36] = 0; // full 16550
        t[40] = space;
        t[41] = 8;
        t[43] = 1;
        t[44..52].copy_from_slice(&addr.to_le_bytes());
        t[52] = 1;
        t[53] = 3;
        t[58] = baud_code;
        t[60] = 1;
        fix_checksum(&mut t);
        t
    }

    #[test]
    fn reads_an_io_port_console_and_its_baud() {
        let s = Spcr::parse(&spcr(1, 0x2f8, 7)).expect("valid");
        assert_eq!(s.address, UartAddress::Port(0x2f8));
        assert_eq!(s.baud, Some(115_200));
        assert!(s.is_16550());
        assert_eq!(
            Spcr::parse(&spcr(1, 0x3f8, 6)).expect("valid").baud,
            Some(57_600)
        );
        assert_eq!(
            Spcr::parse(&spcr(1, 0x3f8, 3)).expect("valid").baud,
            Some(9600)
        );
        assert_eq!(Spcr::parse(&spcr(1, 0x3f8, 0)).expect("valid").baud, None);
    }

    #[test]
    fn mmio_and_bad_ports_are_told_apart() {
        let s = Spcr::parse(&spcr(0, 0xfe03_2000, 7)).expect("valid");
        assert_eq!(s.address, UartAddress::Memory(0xfe03_2000));
        assert!(Spcr::parse(&spcr(1, 0x1_0000, 7)).is_err());
    }

    #[test]
    fn refuses_truncated_or_corrupt_tables() {
        let mut t = spcr(1, 0x3f8, 7);
        t.truncate(56);
        t[4..8].copy_from_slice(&56u32.to_le_bytes());
        fix_checksum(&mut t);
        assert!(matches!(Spcr::parse(&t), Err(ParseError::Truncated { .. })));
        let mut t = spcr(1, 0x3f8, 7);
        t[44] ^= 1;
        assert!(matches!(
            Spcr::parse(&t),
            Err(ParseError::BadChecksum { .. })
        ));
    }
}
