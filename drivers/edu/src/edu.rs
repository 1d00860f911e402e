//! The driver proper: probe, DMA and the small extras (factorial, interrupt status).

use lazaret_types::Mmio;

use crate::dma::{self, DmaDirection, DmaMask};
use crate::regs::{self, Version};
use crate::EduError;

/// Values written to the liveness register during probe. Two distinct values, so that a
/// register stuck at one value cannot pass by luck.
const LIVENESS_PATTERNS: [u32; 2] = [0x4c41_5a52, 0x0123_4567];

/// An identified, live edu device behind its BAR0 registers.
pub struct Edu<R: Mmio> {
    regs: R,
    version: Version,
    mask: DmaMask,
    irq_when_done: bool,
}

impl<R: Mmio> Edu<R> {
    /// Identifies the device and checks that it answers, assuming QEMU's default 28-bit DMA
    /// mask.
    pub fn probe(regs: R) -> Result<Edu<R>, EduError> {
        Edu::probe_with_mask(regs, DmaMask::DEFAULT)
    }

    /// As [`Edu::probe`], for a device started with another `dma_mask` property.
    pub fn probe_with_mask(regs: R, mask: DmaMask) -> Result<Edu<R>, EduError> {
        let identification = regs.read32(regs::IDENTIFICATION);
        let version = regs::decode_identification(identification)
            .ok_or(EduError::NotEdu { identification })?;
        for wrote in LIVENESS_PATTERNS {
            regs.write32(regs::LIVENESS, wrote);
            let read = regs.read32(regs::LIVENESS);
            if read != !wrote {
                return Err(EduError::LivenessFailed { wrote, read });
            }
        }
        Ok(Edu {
            regs,
            version,
            mask,
            irq_when_done: false,
        })
    }

    pub fn version(&self) -> Version {
        self.version
    }

    pub fn dma_mask(&self) -> DmaMask {
        self.mask
    }

    /// Whether later DMAs ask for [`regs::IRQ_DMA`] on completion (off by default: the driver
    /// polls).
    pub fn set_irq_when_done(&mut self, on: bool) {
        self.irq_when_done = on;
    }

    pub fn regs(&self) -> &R {
        &self.regs
    }

    pub fn into_regs(self) -> R {
        self.regs
    }

    /// Whether a DMA is pending (command bit 0).
    pub fn dma_busy(&self) -> bool {
        self.regs.read64(regs::DMA_CMD) & regs::CMD_START != 0
    }

    /// Starts copying `len` bytes between the IOVA `iova` and offset `edu_offset` of the
    /// device buffer. Requests the device would abort on or clamp are refused, and so is any
    /// request while a DMA is pending (the device would silently ignore it).
    pub fn start_dma(
        &self,
        dir: DmaDirection,
        iova: u64,
        edu_offset: usize,
        len: usize,
    ) -> Result<(), EduError> {
        let p = dma::program(dir, iova, edu_offset, len, self.mask, self.irq_when_done)?;
        if self.dma_busy() {
            return Err(EduError::Busy);
        }
        self.regs.write64(regs::DMA_SRC, p.src);
        self.regs.write64(regs::DMA_DST, p.dst);
        self.regs.write64(regs::DMA_COUNT, p.count);
        self.regs.write64(regs::DMA_CMD, p.cmd);
        Ok(())
    }

    /// Polls until the pending DMA is done, or `deadline_passed` says time is up. The busy bit
    /// is read once more after the deadline, so a slow deadline check cannot turn a finished
    /// DMA into a time-out. After [`EduError::Timeout`] the DMA may still run: its RAM target
    /// must stay reserved (or the device quarantined) until [`Edu::dma_busy`] reads false.
    pub fn wait_dma(&self, deadline_passed: impl FnMut() -> bool) -> Result<(), EduError> {
        wait_until(|| !self.dma_busy(), deadline_passed)
    }

    /// Copies `len` bytes from buffer offset `edu_offset` to RAM at `iova`, waiting for the end.
    pub fn dma_to_ram(
        &self,
        iova: u64,
        edu_offset: usize,
        len: usize,
        deadline_passed: impl FnMut() -> bool,
    ) -> Result<(), EduError> {
        self.start_dma(DmaDirection::EduToRam, iova, edu_offset, len)?;
        self.wait_dma(deadline_passed)
    }

    /// Copies `len` bytes from RAM at `iova` to buffer offset `edu_offset`, waiting for the end.
    pub fn dma_from_ram(
        &self,
        iova: u64,
        edu_offset: usize,
        len: usize,
        deadline_passed: impl FnMut() -> bool,
    ) -> Result<(), EduError> {
        self.start_dma(DmaDirection::RamToEdu, iova, edu_offset, len)?;
        self.wait_dma(deadline_passed)
    }

    /// Computes `n!` on the device (modulo 2^32, as QEMU multiplies in `uint32_t`).
    pub fn factorial(
        &self,
        n: u32,
        deadline_passed: impl FnMut() -> bool,
    ) -> Result<u32, EduError> {
        if self.factorial_busy() {
            return Err(EduError::Busy);
        }
        self.regs.write32(regs::FACTORIAL, n);
        wait_until(|| !self.factorial_busy(), deadline_passed)?;
        Ok(self.regs.read32(regs::FACTORIAL))
    }

    fn factorial_busy(&self) -> bool {
        self.regs.read32(regs::STATUS) & regs::STATUS_COMPUTING != 0
    }

    /// Raised interrupt causes ([`regs::IRQ_DMA`], [`regs::IRQ_FACTORIAL`], ...).
    pub fn interrupt_status(&self) -> u32 {
        self.regs.read32(regs::IRQ_STATUS)
    }

    /// Raises an interrupt with the given cause bits (a self-test of the interrupt path).
    pub fn raise_interrupt(&self, causes: u32) {
        self.regs.write32(regs::IRQ_RAISE, causes);
    }

    /// Clears the given cause bits; INTx drops once none is left.
    pub fn ack_interrupt(&self, causes: u32) {
        self.regs.write32(regs::IRQ_ACK, causes);
    }
}

/// Polls `done` until it holds or `deadline_passed` does; `done` gets a last look after the
/// deadline.
fn wait_until(
    mut done: impl FnMut() -> bool,
    mut deadline_passed: impl FnMut() -> bool,
) -> Result<(), EduError> {
    loop {
        let late = deadline_passed();
        if done() {
            return Ok(());
        }
        if late {
            return Err(EduError::Timeout);
        }
        core::hint::spin_loop();
    }
}
