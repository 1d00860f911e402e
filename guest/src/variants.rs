//! The four variants of the guest command line, each a method on [`Guest`].

use core::fmt::Write;

use lazaret_edu::{regs::BAR0_SIZE, Edu};
use lazaret_guest_abi::layout::{DMA_LIMIT, PAGE_SIZE};
use lazaret_guest_abi::{BootInfo, GuestArgs, GuestExit};

use crate::paging::{self, PagePool};
use crate::pci::{self, Config, MemoryBar};
use crate::{Console, Platform, Scratch, DMA_LEN, DMA_TIMEOUT_TICKS};

/// How many faulting DMAs *dma-storm* issues before it gives up waiting to be stopped.
pub const STORM_DMAS: u32 = 256;

pub(crate) struct Guest<'p, P: Platform> {
    pub p: &'p P,
    pub con: Console<'p, P>,
    pub info: BootInfo,
    pub args: GuestArgs,
    pub scratch: Option<Scratch>,
}

impl<P: Platform> Guest<'_, P> {
    /// Fill a buffer with a fresh pattern, DMA it RAM→edu and edu→RAM into a second buffer,
    /// and compare: exit 0 only if every byte came back.
    pub fn good(&mut self) -> GuestExit {
        let Some(s) = self.scratch else {
            return self.no_room();
        };
        let Some((edu, _)) = self.open_edu() else {
            return GuestExit::NoDevice;
        };
        let seed = self.p.rdtsc() | 1;
        let mut expected = [0u8; DMA_LEN];
        fill_pattern(seed, &mut expected);
        self.p.write_ram(s.source, &expected);
        // The destination starts as the complement, so a DMA that never lands cannot pass.
        let mut back = expected.map(|b| !b);
        self.p.write_ram(s.destination, &back);
        let to_edu = edu.dma_from_ram(s.source, 0, DMA_LEN, self.deadline());
        if let Err(e) = to_edu {
            let _ = writeln!(self.con, "FAIL: DMA RAM->edu from {:#x}: {e}", s.source);
            return GuestExit::CheckFailed;
        }
        let to_ram = edu.dma_to_ram(s.destination, 0, DMA_LEN, self.deadline());
        if let Err(e) = to_ram {
            let _ = writeln!(self.con, "FAIL: DMA edu->RAM to {:#x}: {e}", s.destination);
            return GuestExit::CheckFailed;
        }
        self.p.read_ram(s.destination, &mut back);
        let wrong = expected.iter().zip(&back).filter(|(a, b)| a != b).count();
        let (from, to) = (s.source, s.destination);
        if wrong == 0 {
            let _ = writeln!(
                self.con,
                "PASS: DMA round trip {from:#x} -> edu -> {to:#x}: {DMA_LEN} bytes match"
            );
            GuestExit::Pass
        } else {
            let _ = writeln!(self.con, "FAIL: DMA round trip {from:#x} -> edu -> {to:#x}: {wrong} of {DMA_LEN} bytes differ");
            GuestExit::CheckFailed
        }
    }

    /// DMA to a gpa just past its RAM and to another guest's host-physical address (as an
    /// IOVA). The IOMMU must stop both; the guest can only say it tried.
    pub fn rogue_dma(&mut self) -> GuestExit {
        let Some((edu, _)) = self.open_edu() else {
            return GuestExit::NoDevice;
        };
        let outside = self.info.memory_size;
        if outside.saturating_add(DMA_LEN as u64) <= DMA_LIMIT {
            self.try_dma(&edu, "outside my RAM", outside);
        } else {
            let _ = writeln!(
                self.con,
                "my RAM reaches the DMA limit: no gpa outside it to try"
            );
        }
        match self.args.other {
            Some(other) => self.try_dma(&edu, "another guest's memory", other),
            None => {
                let _ = writeln!(
                    self.con,
                    "no other= given: skipped the DMA to another guest"
                );
            }
        }
        let _ = writeln!(
            self.con,
            "rogue-dma: done trying; the IOMMU must have stopped both"
        );
        GuestExit::RogueDmaTried
    }

    fn try_dma<R: lazaret_types::Mmio>(&mut self, edu: &Edu<R>, what: &str, iova: u64) {
        let _ = writeln!(self.con, "DMA edu->RAM to {iova:#x} ({what})");
        let r = edu.dma_to_ram(iova, 0, DMA_LEN, self.deadline());
        let _ = match r {
            Ok(()) => writeln!(self.con, "  the device finished the DMA to {iova:#x}"),
            Err(e) => writeln!(self.con, "  DMA to {iova:#x}: {e}"),
        };
    }

    /// DMAs past its RAM up to [`STORM_DMAS`] times, one console line each (so Lazaret sees
    /// exits between them): Lazaret must stop it when its device crosses the fault threshold.
    pub fn dma_storm(&mut self) -> GuestExit {
        let Some((edu, _)) = self.open_edu() else {
            return GuestExit::NoDevice;
        };
        let outside = self.info.memory_size;
        if outside.saturating_add(DMA_LEN as u64) > DMA_LIMIT {
            let _ = writeln!(self.con, "my RAM reaches the DMA limit: no gpa outside it");
            return GuestExit::CheckFailed;
        }
        for n in 1..=STORM_DMAS {
            let r = edu.dma_to_ram(outside, 0, DMA_LEN, self.deadline());
            let _ = writeln!(
                self.con,
                "storm DMA {n} to {outside:#x}: {}",
                if r.is_ok() { "done" } else { "failed" }
            );
        }
        let _ = writeln!(
            self.con,
            "FAIL: {STORM_DMAS} faulting DMAs and still running"
        );
        GuestExit::RogueDmaTried
    }

    /// Reads a page of the MMIO window that is not its BAR, then the IOMMU's registers: each
    /// must end the guest with a nested page fault.
    pub fn rogue_mmio(&mut self) -> GuestExit {
        let bar = self.open_edu().map(|(_, bar)| bar);
        let Some(foreign) = foreign_window_page(&self.info, bar) else {
            let _ = writeln!(self.con, "no page of the MMIO window outside my BAR");
            return GuestExit::CheckFailed;
        };
        self.forbidden_read("an MMIO-window page that is not my BAR", foreign);
        match self.args.iommu {
            Some(iommu) => {
                let Some(s) = self.scratch else {
                    return self.no_room();
                };
                let mut pool = PagePool {
                    next: s.tables,
                    end: s.tables_end,
                };
                match paging::map_uncached_2m(self.p, iommu, self.info.memory_size, &mut pool) {
                    Ok(_) => self.forbidden_read("the IOMMU's registers", iommu),
                    Err(e) => {
                        let _ = writeln!(self.con, "cannot map {iommu:#x}: {e}");
                    }
                }
            }
            None => {
                let _ = writeln!(self.con, "no iommu= given: skipped the IOMMU read");
            }
        }
        GuestExit::RogueMmioSurvived
    }

    fn forbidden_read(&mut self, what: &str, gpa: u64) {
        let _ = writeln!(self.con, "reading {gpa:#x} ({what})");
        let value = self.p.forbidden_read32(gpa);
        let _ = writeln!(
            self.con,
            "FAIL: survived reading {gpa:#x} ({what}): {value:#010x}"
        );
    }

    /// Triple fault: the CPU shuts down, and Lazaret must end only this guest.
    pub fn crash(&mut self) -> GuestExit {
        let _ = writeln!(self.con, "crash: IDT limit 0, then #UD");
        self.p.triple_fault();
        let _ = writeln!(self.con, "FAIL: survived a triple fault");
        GuestExit::CrashSurvived
    }

    /// Finds edu on bus 0, sizes and enables BAR0, and probes the device.
    fn open_edu(&mut self) -> Option<(Edu<P::Bar>, MemoryBar)> {
        let cfg = Config::new(self.p);
        let Some(at) = cfg.find(lazaret_edu::PCI_VENDOR_ID, lazaret_edu::PCI_DEVICE_ID) else {
            let _ = writeln!(self.con, "{}", pci::PciError::NotFound);
            return None;
        };
        let (bar, command) = match cfg.enable_bar0(at, &self.info, BAR0_SIZE as u64) {
            Ok(found) => found,
            Err(e) => {
                let _ = writeln!(self.con, "edu at {at}: {e}");
                return None;
            }
        };
        let master = if command & pci::COMMAND_BUS_MASTER != 0 {
            "on"
        } else {
            "off"
        };
        let _ = writeln!(
            self.con,
            "edu at {at}, BAR0 {:#x} ({} KiB), bus mastering {master}",
            bar.gpa,
            bar.size >> 10
        );
        match Edu::probe(self.p.bar(bar.gpa)) {
            Ok(edu) => Some((edu, bar)),
            Err(e) => {
                let _ = writeln!(self.con, "edu at {at}: {e}");
                None
            }
        }
    }

    fn deadline(&self) -> impl FnMut() -> bool + '_ {
        let start = self.p.rdtsc();
        move || self.p.rdtsc().wrapping_sub(start) >= DMA_TIMEOUT_TICKS
    }

    fn no_room(&mut self) -> GuestExit {
        let _ = writeln!(
            self.con,
            "FAIL: no room in RAM above the image for DMA buffers"
        );
        GuestExit::CheckFailed
    }
}

/// The first page of the MMIO window outside `bar` (any page when there is no BAR).
fn foreign_window_page(info: &BootInfo, bar: Option<MemoryBar>) -> Option<u64> {
    let (start, end) = (
        info.mmio_window_gpa,
        info.mmio_window_gpa + info.mmio_window_size,
    );
    let mut page = start;
    while page < end {
        let inside = bar.is_some_and(|b| page >= b.gpa && page - b.gpa < b.size);
        if !inside {
            return Some(page);
        }
        page = bar.map_or(page + PAGE_SIZE, |b| b.gpa + b.size);
    }
    None
}

/// A xorshift64 byte stream from `seed` (nonzero): fresh per run, cheap, no SSE needed.
pub(crate) fn fill_pattern(seed: u64, buf: &mut [u8]) {
    let mut x = seed;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}
