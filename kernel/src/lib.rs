//! Lazaret, the hypervisor. `boot::start` runs the bring-up sequence of `design.md` §1;
//! each module below is one stage of it. Logic that does not touch hardware (command line,
//! memory-range arithmetic, frame accounting) is host-tested with plain `cargo test`.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod arch;
pub mod boot;
pub mod cmdline;
pub mod console;
pub mod domain;
pub mod guest;
pub mod hypervisor;
pub mod iommu;
pub mod mm;
pub mod panic;
pub mod passthrough;
pub mod platform;
pub mod scenario;
pub mod vcpu;
