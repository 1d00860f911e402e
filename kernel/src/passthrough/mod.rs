//! The passthrough core: the device registry, DomIO quarantine, and the assignment API, all
//! behind the one coarse device lock. The flow both vendors share is here, once; a vendor
//! implements only the steps of [`iommu::Vendor`].
//!
//! Rules every operation keeps (design.md §4):
//! - everything that can fail (tables, scratch page, domain IDs) is obtained when a device is
//!   added or a domain created; deassign and destroy never allocate and never fail;
//! - an owner switch writes each entry once, atomically, never through not-present, then
//!   invalidates for the previous domain with one ordered batch and one bounded wait;
//! - what the hardware may still reach after a time-out is parked, never freed;
//! - a domain ID is flushed before it is reused;
//! - a refused request changes nothing;
//! - a device's interrupt entries are built (blocked) when it is added, and blocked again
//!   whenever it leaves a guest — never allocated then, invalidated in the switch's batch.
pub mod dids;
pub mod errors;
pub mod faults;
pub mod interrupts;
pub mod iommu;
pub mod lock;
pub mod ops;
pub mod registry;
pub mod requester;
pub mod switch;

pub use errors::PassthroughError;
pub use faults::{drain_faults, FaultReport};
pub use interrupts::{block_interrupt, program_interrupt};
pub use lock::{DeviceLock, DevicesGuard, LockHeld};
pub use ops::{
    add_device, assign, create_domain, deassign, destroy_domain, reassign, reclaim_parked,
    DestroyReport, QuarantineInfo,
};
pub use registry::{Device, DeviceKind, Group, State, Stats};
pub use switch::SwitchReport;

#[cfg(test)]
mod tests;
