//! What the kernel has once it is up, handed to the scenarios: memory, PCI, and the
//! passthrough state behind the device lock (when the platform has an IOMMU).
use lazaret_pci::Enumeration;

use crate::cmdline::Options;
use crate::iommu::discover::{KernelAmd, KernelVtd};
use crate::mm::frames::Frames;
use crate::passthrough::iommu::Vendor;
use crate::passthrough::DeviceLock;
use crate::platform::pci::ConfigAccess;

/// The platform's IOMMU under its device lock, whichever vendor it is.
pub enum Passthrough {
    Vtd(DeviceLock<KernelVtd>),
    Amd(DeviceLock<KernelAmd>),
}

pub struct Hypervisor<V: Vendor> {
    pub options: Options,
    pub frames: Frames,
    pub pci: Enumeration,
    pub config: ConfigAccess,
    pub passthrough: Option<DeviceLock<V>>,
    /// Why the IOMMU is not in use, when the platform has one but bring-up failed.
    pub iommu_failure: Option<alloc::string::String>,
    /// The guest images the loader brought (multiboot modules after the kernel).
    pub guest_images: alloc::vec::Vec<crate::guest::lifecycle::GuestImage>,
    /// Host vectors given to guests' devices.
    pub host_vectors: crate::guest::vectors::HostVectors,
}
