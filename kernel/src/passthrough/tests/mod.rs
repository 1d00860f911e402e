//! Host tests of the passthrough core on a simulated VT-d unit (design.md §5, ring 1): the
//! reference walker reads the tables the core built, so "translates to" below is what the
//! hardware would do with the device's DMA.
mod alias;
mod amd_interrupts;
mod errors;
mod failures;
mod faults;
mod fixture;
mod holes;
mod interrupt_failures;
mod interrupts;
mod props;
mod reassign;
mod unit;
