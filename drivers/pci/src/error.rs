use core::fmt;

use lazaret_types::Sbdf;

use crate::CapabilityList;

/// Everything that can go wrong reading PCI configuration space.
///
/// Helpers return these; the enumerator never stops on them but records each one in
/// [`crate::Enumeration::issues`], because a hypervisor that quarantines devices must still
/// find every function it can when firmware or a device misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciError {
    /// An ECAM window must cover `start_bus..=end_bus` with `start_bus <= end_bus`.
    EcamBusRange { start_bus: u8, end_bus: u8 },
    /// No function answers at this address (Vendor ID reads 0xFFFF).
    Absent(Sbdf),
    /// Header Type 0x03–0x7f: the layout of the rest of the header is unknown.
    UnknownHeaderType { function: Sbdf, header_type: u8 },
    /// The header type of this function has no BAR with this index.
    NoSuchBar { function: Sbdf, index: u8 },
    /// A memory BAR with the reserved type 01b or 11b (PCI Local Bus Spec 3.0 §6.2.5.1).
    ReservedBarType { function: Sbdf, index: u8 },
    /// A 64-bit memory BAR in the last slot has no register for its upper half.
    Bar64WithoutUpperHalf { function: Sbdf, index: u8 },
    /// A capability pointer into the header (below 0x40 for the standard list, below 0x100
    /// for the extended one).
    CapabilityPointerOutOfRange {
        function: Sbdf,
        list: CapabilityList,
        pointer: u16,
    },
    /// The list did not end within the most entries that fit (48 standard, 480 extended):
    /// it loops.
    CapabilityLoop {
        function: Sbdf,
        list: CapabilityList,
    },
    /// A bridge's secondary bus is not above its own bus: following it would loop.
    BridgeLoop { bridge: Sbdf, secondary: u8 },
    /// A bus reached a second time (two bridges claim it, or a root bus is also behind a bridge).
    BusVisitedTwice { segment: u16, bus: u8 },
    /// The scan stopped recording functions at this bound.
    FunctionLimit { limit: usize },
}

impl fmt::Display for PciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PciError::EcamBusRange { start_bus, end_bus } => {
                write!(f, "ECAM bus range {start_bus:02x}-{end_bus:02x} is empty")
            }
            PciError::Absent(at) => write!(f, "{at}: no function present"),
            PciError::UnknownHeaderType {
                function,
                header_type,
            } => write!(f, "{function}: unknown header type {header_type:#04x}"),
            PciError::NoSuchBar { function, index } => {
                write!(f, "{function}: header has no BAR{index}")
            }
            PciError::ReservedBarType { function, index } => {
                write!(f, "{function}: BAR{index} has a reserved memory type")
            }
            PciError::Bar64WithoutUpperHalf { function, index } => write!(
                f,
                "{function}: 64-bit BAR{index} is in the last slot, no upper half"
            ),
            PciError::CapabilityPointerOutOfRange {
                function,
                list,
                pointer,
            } => write!(f, "{function}: {list} pointer {pointer:#x} out of range"),
            PciError::CapabilityLoop { function, list } => {
                write!(f, "{function}: {list} list does not terminate")
            }
            PciError::BridgeLoop { bridge, secondary } => write!(
                f,
                "{bridge}: secondary bus {secondary:02x} not above the bridge's own bus"
            ),
            PciError::BusVisitedTwice { segment, bus } => {
                write!(
                    f,
                    "{segment:04x}:{bus:02x}: bus reached twice, not rescanned"
                )
            }
            PciError::FunctionLimit { limit } => {
                write!(f, "scan stopped after {limit} functions")
            }
        }
    }
}
