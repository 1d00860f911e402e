//! Guests: the vendor-neutral policy a vCPU exit is answered with (what CPUID shows, what the
//! hypercall console prints), the guest lifecycle under the device lock, and the exit loop.
pub mod console;
pub mod cpuid;
pub mod spec;
