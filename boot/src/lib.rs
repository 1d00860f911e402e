//! The loader's decisions, kept apart from its hardware entry so they are host-tested:
//! which command line the kernel gets, where the kernel goes, whether module 0 is an ELF
//! we can hand to hermit-entry without it tripping over a malformed file, and the one
//! multiboot1 structure the kernel receives from every boot path.
#![cfg_attr(not(test), no_std)]

pub mod cmdline;
pub mod elf_check;
pub mod handoff;
pub mod placement;
