//! The variants of the guest command line, each a method on [`Guest`].

use core::fmt::Write;

use lazaret_edu::{regs::BAR0_SIZE, DmaDirection, Edu, EduError};
use lazaret_guest_abi::hypercall::HC_OK;
use lazaret_guest_abi::interrupts::{DMA_DONE_VECTOR, MSI_ADDRESS};
use lazaret_guest_abi::layout::{DMA_LIMIT, PAGE_SIZE};
use lazaret_guest_abi::{BootInfo, GuestArgs, GuestExit, Wait};

use crate::irq;
use crate::paging::{self, PagePool};
use crate::pci::{self, Config, Function, MemoryBar};
use crate::{Console, Platform, Scratch, DMA_LEN, DMA_TIMEOUT_TICKS};

mod rogue_irq;

/// How many faulting DMAs *dma-storm* issues before it gives up waiting to be stopped.
pub const STORM_DMAS: u32 = 256;

/// How the interrupt waits of one variant went.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    /// Waits that ended with the handler's count moved.
    taken: u32,
    /// HLTs over all waits.
    halts: u32,
    /// Interrupt windows opened over all waits (`wait=window`).
    windows: u32,
    /// Waits that gave up.
    missed: u32,
    stamps_refused: u32,
}

pub(crate) struct Guest<'p, P: Platform> {
    pub p: &'p P,
    pub con: Console<'p, P>,
    pub info: BootInfo,
    pub args: GuestArgs,
    pub scratch: Option<Scratch>,
}

impl<P: Platform> Guest<'_, P> {
    /// Fill a buffer with a fresh pattern, DMA it RAM→edu and edu→RAM into a second buffer,
    /// and compare; each DMA asks for edu's completion interrupt (MSI on
    /// [`DMA_DONE_VECTOR`]) and the guest sleeps in HLT until it comes. Exit 0 only if every
    /// byte came back and every DMA's interrupt arrived, on its vector alone.
    pub fn good(&mut self) -> GuestExit {
        let Some(s) = self.scratch else {
            return self.no_room();
        };
        let Some((mut edu, bar, at)) = self.open_edu() else {
            return GuestExit::NoDevice;
        };
        let mut tally = self.arm_dma_interrupts(at, bar.gpa);
        edu.set_irq_when_done(tally.is_some());
        let seed = self.p.rdtsc() | 1;
        let mut expected = [0u8; DMA_LEN];
        fill_pattern(seed, &mut expected);
        self.p.write_ram(s.source, &expected);
        // The destination starts as the complement, so a DMA that never lands cannot pass.
        let mut back = expected.map(|b| !b);
        self.p.write_ram(s.destination, &back);
        let to_edu = self.dma(&edu, DmaDirection::RamToEdu, s.source, &mut tally);
        if let Err(e) = to_edu {
            let _ = writeln!(self.con, "FAIL: DMA RAM->edu from {:#x}: {e}", s.source);
            return GuestExit::CheckFailed;
        }
        let to_ram = self.dma(&edu, DmaDirection::EduToRam, s.destination, &mut tally);
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
        } else {
            let _ = writeln!(self.con, "FAIL: DMA round trip {from:#x} -> edu -> {to:#x}: {wrong} of {DMA_LEN} bytes differ");
        }
        let interrupts_held = self.report_interrupts(tally);
        if wrong == 0 && interrupts_held {
            GuestExit::Pass
        } else {
            GuestExit::CheckFailed
        }
    }

    /// Handlers, LAPIC and edu's MSI, in the order that cannot deliver an interrupt to a
    /// missing handler. `None` (and a FAIL line) when edu's MSI cannot be programmed.
    fn arm_dma_interrupts(&mut self, at: Function, edu_bar: u64) -> Option<Tally> {
        self.p.install_interrupt_handlers(edu_bar);
        irq::enable_x2apic(self.p);
        let data = u16::from(DMA_DONE_VECTOR);
        match Config::new(self.p).enable_msi(at, MSI_ADDRESS, data) {
            Ok(cap) => {
                let _ = writeln!(
                    self.con,
                    "edu MSI (capability {cap:#x}): address {MSI_ADDRESS:#x}, vector {DMA_DONE_VECTOR:#x}"
                );
                Some(Tally::default())
            }
            Err(e) => {
                let _ = writeln!(
                    self.con,
                    "FAIL: cannot wait for DMA by interrupt: edu at {at}: {e}"
                );
                None
            }
        }
    }

    /// One DMA of `DMA_LEN` bytes at buffer offset 0. With `tally`, waits for its interrupt
    /// first (and stamps it); either way the device's busy bit has the last word, so a missing
    /// interrupt is counted and reported, then the DMA is polled to its end.
    fn dma(
        &mut self,
        edu: &Edu<P::Bar>,
        dir: DmaDirection,
        iova: u64,
        tally: &mut Option<Tally>,
    ) -> Result<(), EduError> {
        let before = self.p.handler_record().dma_done;
        edu.start_dma(dir, iova, 0, DMA_LEN)?;
        if let Some(t) = tally {
            let waited = match self.args.wait {
                Wait::Hlt => irq::wait_for_dma_interrupt(self.p, before).map(|n| (n, 0)),
                // Interrupts off while the device works: its interrupt arrives when the
                // guest cannot take it, and must still be there when the window opens.
                Wait::Window => {
                    edu.wait_dma(self.deadline())?;
                    irq::take_dma_interrupt_in_window(self.p, before).map(|n| (0, n))
                }
            };
            match waited {
                Ok((halts, windows)) => {
                    t.taken += 1;
                    t.halts += halts;
                    t.windows += windows;
                    let tsc = self.p.handler_record().last_tsc;
                    if self.p.interrupt_stamp(tsc, DMA_DONE_VECTOR) != HC_OK {
                        t.stamps_refused += 1;
                    }
                }
                Err(why) => {
                    t.missed += 1;
                    let name = match dir {
                        DmaDirection::RamToEdu => "RAM->edu",
                        DmaDirection::EduToRam => "edu->RAM",
                    };
                    let _ = writeln!(self.con, "FAIL: DMA {name}: {why}; polling instead");
                }
            }
        }
        edu.wait_dma(self.deadline())
    }

    /// The line a person reads, and whether interrupt delivery held: one interrupt per DMA,
    /// on [`DMA_DONE_VECTOR`] only, every stamp accepted.
    fn report_interrupts(&mut self, tally: Option<Tally>) -> bool {
        let Some(t) = tally else {
            return false;
        };
        let r = self.p.handler_record();
        match self.args.wait {
            Wait::Hlt => writeln!(
                self.con,
                "DMA completion interrupts: {} on vector {DMA_DONE_VECTOR:#x}, waited in HLT {} times",
                r.dma_done, t.halts
            ),
            Wait::Window => writeln!(
                self.con,
                "DMA completion interrupts: {} on vector {DMA_DONE_VECTOR:#x}, polled with IF=0, taken in {} window(s)",
                r.dma_done, t.windows
            ),
        }
        .ok();
        let held = [
            self.check(
                t.missed == 0,
                format_args!("{} DMAs ended without their interrupt", t.missed),
            ),
            self.check(
                r.dma_done == u64::from(t.taken),
                format_args!(
                    "{} interrupts on vector {DMA_DONE_VECTOR:#x} for {} awaited",
                    r.dma_done, t.taken
                ),
            ),
            self.check(
                r.unexpected == 0,
                format_args!("{} interrupts on other vectors", r.unexpected),
            ),
            self.check(
                t.stamps_refused == 0,
                format_args!("{} HC_INTERRUPT_STAMP calls refused", t.stamps_refused),
            ),
        ];
        held.iter().all(|h| *h)
    }

    /// `holds`, with a FAIL line saying what did not.
    fn check(&mut self, holds: bool, failure: core::fmt::Arguments) -> bool {
        if !holds {
            let _ = writeln!(self.con, "FAIL: {failure}");
        }
        holds
    }

    /// DMA to a gpa just past its RAM and to another guest's host-physical address (as an
    /// IOVA). The IOMMU must stop both; the guest can only say it tried.
    pub fn rogue_dma(&mut self) -> GuestExit {
        let Some((edu, _, _)) = self.open_edu() else {
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
        let Some((edu, _, _)) = self.open_edu() else {
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
        let bar = self.open_edu().map(|(_, bar, _)| bar);
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
    fn open_edu(&mut self) -> Option<(Edu<P::Bar>, MemoryBar, Function)> {
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
            Ok(edu) => Some((edu, bar, at)),
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
