//! Guests: the vendor-neutral policy a vCPU exit is answered with (what CPUID shows, what the
//! hypercall console prints, which ports answer), a guest's memory made ready per the guest
//! contract, and the lifecycle under the device lock.
pub mod console;
pub mod cpuid;
pub mod exits;
pub mod image;
pub mod interrupts;
pub mod lifecycle;
pub mod memory_io;
pub mod modules;
pub mod run;
pub mod spec;
pub mod vectors;
pub mod vlapic;
