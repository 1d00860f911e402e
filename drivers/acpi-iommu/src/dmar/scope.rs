//! Device scope entries (VT-d spec §8.3.1): which PCI functions, IOAPICs, HPETs and ACPI
//! namespace devices a remapping structure applies to, named by a path from a start bus.
use core::fmt;

use lazaret_types::Bdf;

use super::flags::ScopeFlags;
use super::walk;
use crate::reader::{ParseError, Reader};

/// Type, length, flags, reserved, enumeration ID, start bus (§8.3.1, Table 8-4).
const SCOPE_HEADER_LEN: usize = 6;

/// What a device scope names (§8.3.1, "Type").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeType {
    /// 1: a PCI endpoint; the path ends at the function itself.
    PciEndpoint,
    /// 2: a PCI-PCI bridge and everything below it.
    PciSubHierarchy,
    /// 3: an I/O APIC; the enumeration ID is its APIC ID. Matters for interrupt remapping.
    IoApic,
    /// 4: an MSI-capable HPET; the enumeration ID is its HPET number.
    MsiCapableHpet,
    /// 5: an ACPI namespace device; the enumeration ID matches an ANDD's device number.
    AcpiNamespaceDevice,
    /// Any other value: reserved by the spec, kept so a tool can report it.
    Reserved(u8),
}

impl From<u8> for ScopeType {
    fn from(value: u8) -> ScopeType {
        match value {
            1 => ScopeType::PciEndpoint,
            2 => ScopeType::PciSubHierarchy,
            3 => ScopeType::IoApic,
            4 => ScopeType::MsiCapableHpet,
            5 => ScopeType::AcpiNamespaceDevice,
            other => ScopeType::Reserved(other),
        }
    }
}

impl ScopeType {
    /// The value of the type byte.
    pub const fn code(self) -> u8 {
        match self {
            ScopeType::PciEndpoint => 1,
            ScopeType::PciSubHierarchy => 2,
            ScopeType::IoApic => 3,
            ScopeType::MsiCapableHpet => 4,
            ScopeType::AcpiNamespaceDevice => 5,
            ScopeType::Reserved(code) => code,
        }
    }
}

impl fmt::Display for ScopeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeType::PciEndpoint => f.write_str("endpoint"),
            ScopeType::PciSubHierarchy => f.write_str("bridge"),
            ScopeType::IoApic => f.write_str("IOAPIC"),
            ScopeType::MsiCapableHpet => f.write_str("HPET"),
            ScopeType::AcpiNamespaceDevice => f.write_str("ACPI device"),
            ScopeType::Reserved(code) => write!(f, "reserved type {code}"),
        }
    }
}

/// One hop of a device scope path: a device and function on the bus reached so far. Kept raw
/// (firmware may put out-of-range numbers here); [`PathEntry::on_bus`] checks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathEntry {
    pub device: u8,
    pub function: u8,
}

impl PathEntry {
    /// This hop as a function on `bus`; `None` when device > 31 or function > 7.
    pub const fn on_bus(self, bus: u8) -> Option<Bdf> {
        Bdf::new(bus, self.device, self.function)
    }
}

impl fmt::Display for PathEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}.{:x}", self.device, self.function)
    }
}

/// A validated device scope entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceScope<'a> {
    /// Offset of the entry in the whole table.
    pub offset: usize,
    pub scope_type: ScopeType,
    pub flags: ScopeFlags,
    /// APIC ID, HPET number or ANDD device number; unused for PCI scopes.
    pub enumeration_id: u8,
    /// The bus on which the first path hop sits.
    pub start_bus: u8,
    /// The (device, function) byte pairs; never empty, always even.
    path: &'a [u8],
}

impl<'a> DeviceScope<'a> {
    /// The hops from the start bus to the named device.
    pub fn path(&self) -> impl ExactSizeIterator<Item = PathEntry> + Clone + 'a {
        let (pairs, _odd) = self.path.as_chunks::<2>();
        pairs
            .iter()
            .map(|&[device, function]| PathEntry { device, function })
    }

    /// Walks the path to the final function (§8.3.1 and its "Device Scope Example"): the first hop
    /// sits on the start bus, and each later hop on the secondary bus of the bridge reached by
    /// the hop before, which `read_secondary_bus` supplies (config offset 0x19 of a type-1
    /// header). `None` when a hop is out of range or a bridge cannot be read.
    pub fn resolve(&self, mut read_secondary_bus: impl FnMut(Bdf) -> Option<u8>) -> Option<Bdf> {
        let mut hops = self.path();
        let mut bdf = hops.next()?.on_bus(self.start_bus)?;
        for hop in hops {
            bdf = hop.on_bus(read_secondary_bus(bdf)?)?;
        }
        Some(bdf)
    }

    /// [`DeviceScope::resolve`] without bridges to read: the function for a one-hop path, `None`
    /// for a longer one. Enough for IOAPIC/HPET scopes and for devices on the start bus.
    pub fn resolve_direct(&self) -> Option<Bdf> {
        self.resolve(|_| None)
    }
}

impl fmt::Display for DeviceScope<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:02x}:", self.scope_type, self.start_bus)?;
        for (i, hop) in self.path().enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            write!(f, "{hop}")?;
        }
        if matches!(
            self.scope_type,
            ScopeType::IoApic | ScopeType::MsiCapableHpet | ScopeType::AcpiNamespaceDevice
        ) {
            write!(f, " id {}", self.enumeration_id)?;
        }
        if self.flags.bits() != 0 {
            write!(f, " flags {}", self.flags)?;
        }
        Ok(())
    }
}

/// Parses the scope entry at the cursor. Its length must cover the header plus a non-empty,
/// even path, and must stay within the parent structure.
fn parse_scope<'a>(list: &mut Reader<'a>) -> Result<DeviceScope<'a>, ParseError> {
    let offset = list.table_offset();
    let mut peek = *list;
    peek.skip(1)?;
    let length = usize::from(peek.u8()?);
    if length < SCOPE_HEADER_LEN
        || !(length - SCOPE_HEADER_LEN).is_multiple_of(2)
        || length > list.remaining()
    {
        return Err(ParseError::BadSubtableLength { offset, length });
    }
    if length == SCOPE_HEADER_LEN {
        return Err(ParseError::InvalidField {
            offset,
            what: "device scope with an empty path",
        });
    }
    let mut entry = list.sub(length)?;
    let scope_type = ScopeType::from(entry.u8()?);
    entry.skip(1)?;
    let flags = ScopeFlags(entry.u8()?);
    entry.skip(1)?;
    Ok(DeviceScope {
        offset,
        scope_type,
        flags,
        enumeration_id: entry.u8()?,
        start_bus: entry.u8()?,
        path: entry.rest(),
    })
}

/// The device scope list at the end of a DRHD, RMRR, ATSR, SATC or SIDP.
#[derive(Clone, Copy, Debug)]
pub struct DeviceScopes<'a> {
    list: Reader<'a>,
}

impl<'a> DeviceScopes<'a> {
    /// Checks every entry of `list`, then wraps it for infallible iteration.
    pub(crate) fn validate(list: Reader<'a>) -> Result<DeviceScopes<'a>, ParseError> {
        walk::validate(list, parse_scope)?;
        Ok(DeviceScopes { list })
    }
}

impl<'a> Iterator for DeviceScopes<'a> {
    type Item = DeviceScope<'a>;

    fn next(&mut self) -> Option<DeviceScope<'a>> {
        walk::next_validated(&mut self.list, parse_scope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn scopes(bytes: &[u8]) -> Result<Vec<DeviceScope<'_>>, ParseError> {
        DeviceScopes::validate(Reader::new(bytes, 0x40)).map(Iterator::collect)
    }

    #[test]
    fn parses_fields_and_path() {
        let bytes = [2, 10, 0x08, 0, 7, 0x80, 0x1c, 4, 0, 0];
        let list = scopes(&bytes).expect("valid");
        let scope = list[0];
        assert_eq!(scope.offset, 0x40);
        assert_eq!(scope.scope_type, ScopeType::PciSubHierarchy);
        assert!(scope.flags.contains(ScopeFlags::ATC_HARDENED));
        assert_eq!((scope.enumeration_id, scope.start_bus), (7, 0x80));
        let hops: Vec<PathEntry> = scope.path().collect();
        assert_eq!(
            hops,
            [
                PathEntry {
                    device: 0x1c,
                    function: 4
                },
                PathEntry {
                    device: 0,
                    function: 0
                }
            ]
        );
        assert_eq!(scope.to_string(), "bridge 80:1c.4/00.0 flags ATC_HARDENED");
    }

    #[test]
    fn resolves_through_bridges() {
        // 00:1c.4 is a bridge whose secondary bus is 3; 03:00.0 is a bridge to bus 4.
        let bytes = [1, 12, 0, 0, 0, 0, 0x1c, 4, 0, 0, 2, 1];
        let scope = scopes(&bytes).expect("valid")[0];
        let mut asked = Vec::new();
        let bdf = scope.resolve(|bridge| {
            asked.push(bridge);
            match bridge.requester_id() {
                0x00e4 => Some(3),
                0x0300 => Some(4),
                _ => None,
            }
        });
        assert_eq!(bdf, Bdf::new(4, 2, 1));
        assert_eq!(
            asked,
            [Bdf::new(0, 0x1c, 4).unwrap(), Bdf::new(3, 0, 0).unwrap()]
        );
        assert_eq!(scope.resolve_direct(), None, "needs a bridge read");
        assert_eq!(scope.resolve(|_| None), None);
    }

    #[test]
    fn direct_resolution_and_out_of_range_hops() {
        let bytes = [3, 8, 0, 0, 2, 0xf0, 0x1f, 0, 1, 8, 0, 0, 0, 0, 0x20, 0];
        let list = scopes(&bytes).expect("valid");
        assert_eq!(list[0].resolve_direct(), Bdf::new(0xf0, 0x1f, 0));
        assert_eq!(list[0].to_string(), "IOAPIC f0:1f.0 id 2");
        assert_eq!(list[1].resolve_direct(), None, "device 0x20 does not exist");
    }

    #[test]
    fn rejects_impossible_lengths() {
        for (bytes, offset, length) in [
            (&[1u8, 0][..], 0x40, 0),
            (&[1, 5, 0, 0, 0][..], 0x40, 5),
            (&[1, 9, 0, 0, 0, 0, 1, 0, 0][..], 0x40, 9),
            (&[1, 10, 0, 0, 0, 0, 1, 0][..], 0x40, 10),
            (&[1, 8, 0, 0, 0, 0, 1, 0, 1, 0xff][..], 0x48, 0xff),
        ] {
            assert_eq!(
                scopes(bytes),
                Err(ParseError::BadSubtableLength { offset, length }),
                "{bytes:?}"
            );
        }
        assert!(matches!(
            scopes(&[1, 6, 0, 0, 0, 0]),
            Err(ParseError::InvalidField { offset: 0x40, .. })
        ));
        assert!(matches!(
            scopes(&[1]),
            Err(ParseError::Truncated { offset: 0x41, .. })
        ));
    }

    #[test]
    fn reserved_types_are_kept() {
        let list = scopes(&[9, 8, 0, 0, 0, 0, 1, 0]).expect("valid");
        assert_eq!(list[0].scope_type, ScopeType::Reserved(9));
        assert_eq!(list[0].scope_type.code(), 9);
    }
}
