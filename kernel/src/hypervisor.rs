//! What the kernel has once it is up, handed to the scenarios: memory, PCI, and the
//! passthrough state behind the device lock (when the platform has an IOMMU).
use alloc::boxed::Box;

use lazaret_pci::Enumeration;

use crate::cmdline::Options;
use crate::mm::frames::Frames;
use crate::passthrough::iommu::Iommu;
use crate::passthrough::{DeviceLock, State};
use crate::platform::pci::ConfigAccess;

pub type Passthrough = DeviceLock<State<Box<dyn Iommu>>>;

pub struct Hypervisor {
    pub options: Options,
    pub frames: Frames,
    pub pci: Enumeration,
    pub config: ConfigAccess,
    pub passthrough: Option<Passthrough>,
}
