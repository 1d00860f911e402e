//! The contract between Lazaret and the guests it runs (issue 9, "the guest contract"). Both
//! sides build against this crate, so a layout or hypercall number cannot drift between the
//! hypervisor and the payload:
//!
//! - [`layout`]: where things sit in guest-physical memory, and the GDT Lazaret writes;
//! - [`BootInfo`]: the little-endian record at [`layout::BOOT_INFO_GPA`], encoded and decoded
//!   with bounds checks (never a pointer cast);
//! - [`hypercall`]: VMMCALL numbers, result codes and the guest's exit statuses;
//! - [`cmdline`]: the guest command line (`variant=`, `other=`, `iommu=`);
//! - [`interrupts`]: the MSI message a guest asks for and the x2APIC MSRs of its virtual LAPIC;
//! - [`image`]: the loader of a static x86_64 ELF64 guest image into guest RAM.
//!
//! The kernel writes all of it into a fresh guest (`kernel/src/guest/image.rs`), with the
//! guest's own page tables from `lazaret-paging`, the builder nested paging uses too.
//!
//! Everything here takes its input from a guest, a module or the user, so nothing panics or
//! overflows on hostile bytes.
#![cfg_attr(not(test), no_std)]

mod boot_info;
pub mod cmdline;
pub mod hypercall;
pub mod image;
pub mod interrupts;
pub mod layout;

pub use boot_info::{BootInfo, BootInfoError, BOOT_INFO_MAGIC, BOOT_INFO_SIZE, BOOT_INFO_VERSION};
pub use cmdline::{ArgsError, GuestArgs, Variant, Wait};
pub use hypercall::{GuestExit, HypercallError};
pub use image::{load, GuestWriter, ImageError, LoadedImage};
