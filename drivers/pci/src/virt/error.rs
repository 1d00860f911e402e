use core::fmt;

use lazaret_types::Sbdf;

/// Why a virtual bus could not be built or changed. Building is all or nothing: on an error
/// no bus exists and nothing was written anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VirtualBusError {
    /// The MMIO window is empty, not 4 KiB aligned in base and size, or wraps around.
    BadWindow { gpa: u64, size: u64 },
    /// More functions than devices on one virtual bus ([`super::MAX_VIRTUAL_FUNCTIONS`]).
    TooManyFunctions { count: usize },
    /// The same real function assigned twice.
    DuplicateFunction(Sbdf),
    /// Functions from two PCI segments on one bus: the guest's 0xCF8/0xCFC reach one
    /// configuration space, so a bus holds one segment's functions.
    MixedSegments { first: Sbdf, other: Sbdf },
    /// A BAR whose slot, kind or size no header can have (slot past 5, a 64-bit BAR in slot 5,
    /// two BARs in one slot, a size that is not a power of two, an end past 2^64).
    BadBar { function: Sbdf, index: u8 },
    /// A memory BAR firmware left at address 0: mapping it would hand the guest host page 0.
    BarNotProgrammed { function: Sbdf, index: u8 },
    /// A memory BAR smaller than a page or not page aligned on the host: nested paging maps
    /// whole pages, so the guest would also reach whatever shares the page.
    BarNotPageAligned { function: Sbdf, index: u8 },
    /// The BAR did not fit in what remained of the window.
    WindowTooSmall { function: Sbdf, index: u8 },
    /// A 32-bit BAR would land above 4 GiB (the window reaches past it).
    Bar32OutOfReach { function: Sbdf, index: u8 },
    /// The function is not on this bus.
    NotAssigned(Sbdf),
    /// The function has no MSI capability (or no longer answers).
    NoMsi(Sbdf),
    /// A host message the real MSI capability cannot hold: data wider than 16 bits, address
    /// bits 1:0 set, or an address above 4 GiB for a 32-bit capability.
    MsiMessageUnfit {
        function: Sbdf,
        address: u64,
        data: u32,
    },
}

impl fmt::Display for VirtualBusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            VirtualBusError::BadWindow { gpa, size } => {
                write!(
                    f,
                    "MMIO window {gpa:#x}+{size:#x} is empty, unaligned or wraps"
                )
            }
            VirtualBusError::TooManyFunctions { count } => write!(
                f,
                "{count} functions do not fit on one virtual bus (at most {})",
                super::MAX_VIRTUAL_FUNCTIONS
            ),
            VirtualBusError::DuplicateFunction(at) => write!(f, "{at}: assigned twice"),
            VirtualBusError::MixedSegments { first, other } => write!(
                f,
                "{other} is on another PCI segment than {first}: one virtual bus holds one segment"
            ),
            VirtualBusError::BadBar { function, index } => {
                write!(f, "{function}: BAR{index} is malformed")
            }
            VirtualBusError::BarNotProgrammed { function, index } => {
                write!(f, "{function}: BAR{index} has no address")
            }
            VirtualBusError::BarNotPageAligned { function, index } => {
                write!(
                    f,
                    "{function}: BAR{index} is not page aligned in base and size"
                )
            }
            VirtualBusError::WindowTooSmall { function, index } => {
                write!(f, "{function}: BAR{index} does not fit in the MMIO window")
            }
            VirtualBusError::Bar32OutOfReach { function, index } => {
                write!(f, "{function}: 32-bit BAR{index} would sit above 4 GiB")
            }
            VirtualBusError::NotAssigned(at) => write!(f, "{at}: not on this virtual bus"),
            VirtualBusError::NoMsi(at) => write!(f, "{at}: no MSI capability"),
            VirtualBusError::MsiMessageUnfit {
                function,
                address,
                data,
            } => write!(
                f,
                "{function}: MSI capability cannot hold address {address:#x} data {data:#x}"
            ),
        }
    }
}
