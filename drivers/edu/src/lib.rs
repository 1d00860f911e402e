//! Driver for QEMU's `edu` educational PCI device (vendor 0x1234, device 0x11e8), the DMA
//! engine of Lazaret's QEMU scenarios: it copies between its 4 KiB buffer and RAM at an IOVA,
//! so a scenario can show that the IOMMU lets a device reach exactly what its owner mapped.
//!
//! Behaviour follows QEMU 7.2's `hw/misc/edu.c` (`docs/specs/edu.txt`), including the parts
//! that punish a bad request: an out-of-buffer range aborts the emulator and an address above
//! the DMA mask is silently clamped. [`Edu`] refuses both up front.
//!
//! Use: [`Edu::probe`] on BAR0, then [`Edu::dma_to_ram`] / [`Edu::dma_from_ram`] with a deadline
//! closure (or [`Edu::start_dma`] + [`Edu::wait_dma`]). Host tests drive the same driver against
//! [`sim::SimEdu`] (feature `sim`).
#![cfg_attr(not(test), no_std)]

mod dma;
mod edu;
mod error;
pub mod regs;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
#[cfg(test)]
mod tests;

pub use dma::{DmaDirection, DmaMask};
pub use edu::Edu;
pub use error::EduError;
pub use regs::Version;

/// PCI vendor ID of the edu device (QEMU's, `PCI_VENDOR_ID_QEMU`).
pub const PCI_VENDOR_ID: u16 = 0x1234;
/// PCI device ID of the edu device.
pub const PCI_DEVICE_ID: u16 = 0x11e8;
