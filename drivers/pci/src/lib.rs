//! PCI configuration space access and enumeration.
//!
//! The kernel reads configuration space through one seam, [`ConfigSpace`], with three
//! backends: [`Ecam`] over an MCFG window (any [`lazaret_types::Mmio`]), [`PortIo`] through
//! ports 0xCF8/0xCFC for early boot, and `FakeConfigSpace` (feature `sim`) for host tests.
//! [`enumerate`] walks a segment depth first through the bridges as firmware programmed them
//! and returns every function with its class, BARs, capabilities, PCI Express port type and
//! the bridge above it — what the device registry needs to quarantine each function and to
//! compute requester-ID aliases. Nothing read from hardware can make it panic or loop: bad
//! topology and bad registers end up in [`Enumeration::issues`]. [`virt`] is the other side:
//! the virtual bus a guest scans through intercepted ports 0xCF8/0xCFC, holding only its
//! assigned functions, answered from the real ones with BARs, ROM and Command virtualised.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

mod bar;
mod capability;
mod class;
mod command;
mod config_space;
mod display;
mod ecam;
mod enumerate;
#[cfg(test)]
mod enumerate_props;
mod error;
#[cfg(any(test, feature = "sim"))]
mod fake;
mod function;
mod pcie;
#[cfg(target_arch = "x86_64")]
mod port_io;
mod regs;
#[cfg(test)]
mod topology_tests;
pub mod virt;

pub use bar::{bar_address, Bar, BarKind};
pub use capability::{
    capabilities, extended_capabilities, find_capability, find_extended_capability, Capabilities,
    Capability, CapabilityList, ExtendedCapabilities, ExtendedCapability,
};
pub use class::ClassCode;
pub use command::{read_command, set_bus_master, set_memory_space, update_command};
pub use config_space::ConfigSpace;
pub use ecam::{ecam_window, Ecam};
pub use enumerate::{enumerate, enumerate_bounded, Enumeration, MAX_FUNCTIONS};
pub use error::PciError;
#[cfg(any(test, feature = "sim"))]
pub use fake::{FakeConfigSpace, FakeFunction, FakeWrite};
pub use function::{HeaderKind, PciFunction};
pub use pcie::{PcieInfo, PciePortType};
#[cfg(target_arch = "x86_64")]
pub use port_io::PortIo;

/// Capability IDs the kernel looks up (PCI Code and ID Assignment Spec §2 and §3).
pub mod cap_id {
    /// PCI Express capability (standard list).
    pub const PCI_EXPRESS: u8 = crate::regs::CAP_ID_PCI_EXPRESS;
    /// MSI (standard list).
    pub const MSI: u8 = 0x05;
    /// MSI-X (standard list).
    pub const MSIX: u8 = 0x11;
    /// Access Control Services (extended list): peer-to-peer isolation below a port.
    pub const EXT_ACS: u16 = 0x000d;
    /// Alternative Routing-ID Interpretation (extended list): 256 functions per device.
    pub const EXT_ARI: u16 = 0x000e;
    /// Address Translation Services (extended list): the function caches translations.
    pub const EXT_ATS: u16 = 0x000f;
    /// Single Root I/O Virtualization (extended list).
    pub const EXT_SRIOV: u16 = 0x0010;
}
