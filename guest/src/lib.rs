//! Lazaret's guest payload, as a library: everything the guest does, written against the
//! [`Platform`] seam so it runs unchanged in `guest/bin` (port I/O, VMMCALL, RDTSC, volatile
//! loads) and in host tests (fake configuration space, simulated edu and RAM).
//!
//! [`run`] reads the BootInfo and command line, finds its edu device on the virtual PCI bus,
//! runs the variant the command line names and returns the status for `HC_EXIT`. Every wait
//! on the device is bounded by [`DMA_TIMEOUT_TICKS`] of the TSC. The *good* variant waits for
//! its DMAs by interrupt ([`irq`]): edu's MSI, programmed through the virtual configuration
//! space, and an IDT whose handler lives in `guest/bin`.
#![cfg_attr(not(test), no_std)]

mod console;
pub mod irq;
pub mod paging;
pub mod pci;
mod platform;
#[cfg(test)]
mod tests;
mod variants;

use core::fmt::Write;

use lazaret_guest_abi::layout::{BOOT_INFO_GPA, DMA_LIMIT, MAX_CMDLINE, PAGE_SIZE};
use lazaret_guest_abi::{BootInfo, GuestArgs, GuestExit, Variant, BOOT_INFO_SIZE};

pub use console::Console;
pub use platform::{HandlerRecord, Platform};

/// TSC ticks a guest waits for one edu DMA. edu completes on a 100 ms virtual-clock timer;
/// the guest has no calibrated clock, so this assumes at most 4 GHz: under `-icount` TCG's TSC
/// counts virtual nanoseconds (1 GHz: 2 s), without it the host TSC (a few GHz: ≥ 0.5 s).
pub const DMA_TIMEOUT_TICKS: u64 = 2_000_000_000;
/// Bytes moved by each DMA: half the edu buffer (QEMU 7.2 refuses a DMA reaching its last byte).
pub const DMA_LEN: usize = 2048;

/// Where the guest is, beyond what BootInfo says.
#[derive(Clone, Copy, Debug)]
pub struct Env {
    /// RDI at entry.
    pub boot_info_gpa: u64,
    /// One past the last byte of the loaded image (bss included), from the linker.
    pub image_end: u64,
}

/// Pages of guest RAM above the image the guest uses: two DMA buffers and a few pages for
/// page tables, all below edu's DMA limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scratch {
    pub source: u64,
    pub destination: u64,
    pub tables: u64,
    pub tables_end: u64,
}

/// Page-table pages [`Scratch`] sets aside (one per level that may be missing).
const TABLE_PAGES: u64 = 2;

impl Scratch {
    pub fn new(image_end: u64, memory_size: u64) -> Option<Scratch> {
        let (source, destination) = lazaret_guest_abi::layout::dma_buffers(image_end)?;
        let tables = destination.checked_add(PAGE_SIZE)?;
        let end = tables.checked_add(TABLE_PAGES * PAGE_SIZE)?;
        (end <= memory_size.min(DMA_LIMIT)).then_some(Scratch {
            source,
            destination,
            tables,
            tables_end: end,
        })
    }
}

/// Everything the guest does; returns the status for `HC_EXIT`.
pub fn run<P: Platform>(p: &P, env: Env) -> GuestExit {
    let mut con = Console::new(p);
    // The contract fixes the address; reading anywhere else could touch page 0 or beyond RAM.
    if env.boot_info_gpa != BOOT_INFO_GPA {
        let _ = writeln!(
            con,
            "boot info at {:#x}, not {BOOT_INFO_GPA:#x}",
            env.boot_info_gpa
        );
        return GuestExit::BadBoot;
    }
    let mut bytes = [0u8; BOOT_INFO_SIZE];
    p.read_ram(BOOT_INFO_GPA, &mut bytes);
    let info = match BootInfo::decode(&bytes) {
        Ok(info) => info,
        Err(e) => {
            let _ = writeln!(con, "{e}");
            return GuestExit::BadBoot;
        }
    };
    let mut cmdline = [0u8; MAX_CMDLINE as usize];
    // BootInfo::decode checked cmdline_len <= MAX_CMDLINE.
    let line = &mut cmdline[..info.cmdline_len as usize];
    p.read_ram(info.cmdline_gpa, line);
    let Ok(line) = core::str::from_utf8(line) else {
        let _ = writeln!(con, "command line is not UTF-8");
        return GuestExit::BadBoot;
    };
    let args = match GuestArgs::parse(line) {
        Ok(args) => args,
        Err(e) => {
            let _ = writeln!(con, "{e}");
            return GuestExit::BadBoot;
        }
    };
    let _ = writeln!(
        con,
        "up: variant {}, {} MiB of RAM",
        args.variant.name(),
        info.memory_size >> 20
    );
    let scratch = Scratch::new(env.image_end, info.memory_size);
    let mut g = variants::Guest {
        p,
        con,
        info,
        args,
        scratch,
    };
    match args.variant {
        Variant::Good => g.good(),
        Variant::RogueDma => g.rogue_dma(),
        Variant::RogueMmio => g.rogue_mmio(),
        Variant::Crash => g.crash(),
        Variant::DmaStorm => g.dma_storm(),
        Variant::RogueIrq => g.rogue_irq(),
    }
}
