//! *rogue-irq* (issue 11 part 5, guest side): a hostile guest attacks through its device's
//! interrupts. It asks its virtual MSI capability for messages Lazaret must refuse, raising
//! edu's interrupt (register 0x60) after each so a wrongly routed one would fire; then for two
//! legal ones (its vector 0x80, which is also a host vector number, and [`DMA_DONE_VECTOR`]);
//! then has edu DMA into the interrupt window. It counts what its own IDT saw and exits
//! [`GuestExit::RogueDmaTried`]: whether anything got through is for Lazaret to say.
//!
//! It halts only after a legal message's raise: a HLT with nothing routed would end it
//! (Lazaret's "halted with nothing to wake it"), and a forged message that Lazaret wrongly
//! routed shows anyway, as an extra interrupt taken in the next wait.
use core::fmt::Write;

use lazaret_edu::{DmaMask, Edu};
use lazaret_guest_abi::interrupts::{DMA_DONE_VECTOR, MSI_ADDRESS};
use lazaret_guest_abi::GuestExit;

use super::Guest;
use crate::pci::{Config, Function};
use crate::{irq, HandlerRecord, Platform};

/// An MSI the guest asks for: Message Address (32-bit) and the vector in Message Data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message {
    pub address: u32,
    pub vector: u8,
    pub what: &'static str,
}

/// What Lazaret must refuse (Intel SDM Vol. 3A §11.11.1: address 31:20 = 0xFEE, destination
/// ID in 19:12; data 7:0 the vector, below 32 an exception).
pub const FORGED: [Message; 3] = [
    Message {
        address: MSI_ADDRESS | (1 << 12),
        vector: DMA_DONE_VECTOR,
        what: "a CPU I do not have (destination 1)",
    },
    Message {
        address: MSI_ADDRESS,
        vector: 0x0E,
        what: "an exception vector (#PF)",
    },
    Message {
        address: 0xFED0_0000,
        vector: DMA_DONE_VECTOR,
        what: "an address outside the interrupt window",
    },
];

/// Legal requests, in order: a vector that is also a host vector's number (Lazaret's start at
/// 0x80) aimed at destination 0 — the guest's own vector 0x80, to be delivered to the guest
/// only — and then its DMA-done vector.
pub const LEGAL: [Message; 2] = [
    Message {
        address: MSI_ADDRESS,
        vector: 0x80,
        what: "vector 0x80 at destination 0 (a host vector's number)",
    },
    Message {
        address: MSI_ADDRESS,
        vector: DMA_DONE_VECTOR,
        what: "my DMA-done vector",
    },
];

/// IOVAs in the interrupt window edu writes to: 0xFEE0_0000 (VT-d compatibility format, AMD-Vi
/// offset = the data) and 0xFEE0_0010 (VT-d remappable format, handle 0: not ours).
pub const WINDOW_TARGETS: [u64; 2] = [0xFEE0_0000, 0xFEE0_0010];
/// What each window DMA carries: a vector below Lazaret's host vectors, as interrupt data.
pub const WINDOW_DATA: u32 = 0x30;
/// edu's interrupt cause bit for a raise from software.
const CAUSE: u32 = 1;
/// edu's DMA must reach 0xFEE0_0000 (the QEMU device needs `dma_mask=0xffffffff`).
const WINDOW_DMA_BITS: u32 = 32;

impl<P: Platform> Guest<'_, P> {
    pub fn rogue_irq(&mut self) -> GuestExit {
        let Some(s) = self.scratch else {
            return self.no_room();
        };
        let Some((edu, bar, at)) = self.open_edu() else {
            return GuestExit::NoDevice;
        };
        let Some(edu) = DmaMask::from_bits(WINDOW_DMA_BITS)
            .ok()
            .and_then(|mask| Edu::probe_with_mask(edu.into_regs(), mask).ok())
        else {
            let _ = writeln!(
                self.con,
                "FAIL: edu refuses a {WINDOW_DMA_BITS}-bit DMA mask"
            );
            return GuestExit::CheckFailed;
        };
        self.p.install_interrupt_handlers(bar.gpa);
        irq::enable_x2apic(self.p);
        for m in FORGED {
            self.ask(at, m);
            edu.raise_interrupt(CAUSE);
            edu.ack_interrupt(CAUSE);
        }
        for m in LEGAL {
            self.ask(at, m);
            let before = self.p.handler_record();
            edu.raise_interrupt(CAUSE);
            let waited = irq::wait_for_any_interrupt(self.p, before);
            edu.ack_interrupt(CAUSE);
            let after = self.p.handler_record();
            let _ = match waited {
                Ok(_) => writeln!(self.con, "  taken: {}", Taken(before, after)),
                Err(why) => writeln!(self.con, "  {why}"),
            };
        }
        self.p.write_ram(s.source, &WINDOW_DATA.to_le_bytes());
        let loaded = edu.dma_from_ram(s.source, 0, 4, self.deadline());
        if let Err(e) = loaded {
            let _ = writeln!(self.con, "DMA RAM->edu of the window data: {e}");
        }
        for iova in WINDOW_TARGETS {
            let _ = writeln!(
                self.con,
                "DMA edu->RAM of {WINDOW_DATA:#x} to {iova:#x} (the interrupt window)"
            );
            let r = edu.dma_to_ram(iova, 0, 4, self.deadline());
            let _ = match r {
                Ok(()) => writeln!(self.con, "  the device finished the DMA to {iova:#x}"),
                Err(e) => writeln!(self.con, "  DMA to {iova:#x}: {e}"),
            };
        }
        let r = self.p.handler_record();
        let _ = writeln!(
            self.con,
            "rogue-irq: my IDT saw {} on vector {DMA_DONE_VECTOR:#x} and {} on other vectors; done trying",
            r.dma_done, r.unexpected
        );
        GuestExit::RogueDmaTried
    }

    /// Programs edu's MSI with `m` through the virtual configuration space and says so.
    fn ask(&mut self, at: Function, m: Message) {
        let r = Config::new(self.p).enable_msi(at, m.address, u16::from(m.vector));
        let (address, vector, what) = (m.address, m.vector, m.what);
        let _ = match r {
            Ok(_) => writeln!(
                self.con,
                "MSI {address:#x} vector {vector:#x} ({what}), then raise"
            ),
            Err(e) => writeln!(
                self.con,
                "MSI {address:#x} vector {vector:#x} ({what}): {e}; raise anyway"
            ),
        };
    }
}

/// What one wait's interrupts were, from the handlers' records before and after it.
struct Taken(HandlerRecord, HandlerRecord);

impl core::fmt::Display for Taken {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let (a, b) = (self.0, self.1);
        write!(
            f,
            "{} on vector {DMA_DONE_VECTOR:#x}, {} on other vectors",
            b.dma_done.wrapping_sub(a.dma_done),
            b.unexpected.wrapping_sub(a.unexpected)
        )
    }
}
