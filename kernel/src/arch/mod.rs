//! x86_64 bring-up: time (TSC), descriptor tables with IST stacks, exception reporting, and
//! the kernel's own page tables; per-CPU state and the VMRUN path (`vmrun.s`).
pub mod gdt;
pub mod idt;
pub mod lapic;
pub mod mmio;
pub mod paging;
pub mod percpu;
pub mod tsc;
