//! Shared vocabulary for Lazaret's drivers and kernel.
//!
//! Everything here is small and dependency-free so that every driver crate can name the same
//! physical address, the same PCI requester ID and the same hardware seams. The seams
//! ([`PhysMem`], [`FrameAllocator`], [`Mmio`]) let table builders and drivers run against real
//! hardware in the kernel and against the simulated backends of [`sim`] in host tests.
#![cfg_attr(not(test), no_std)]

mod addr;
#[cfg(any(test, feature = "sim"))]
pub mod counting;
mod mem;
mod pci_id;
pub mod poll;
#[cfg(any(test, feature = "sim"))]
pub mod sim;

pub use addr::{PhysAddr, PAGE_SIZE};
pub use mem::{FrameAllocator, Mmio, PhysMem};
pub use pci_id::{Bdf, Sbdf};
