//! A simulated edu device for host tests: the register semantics of QEMU 7.2's `hw/misc/edu.c`
//! on top of [`SimRegisters`] (which records every access), with DMA performed in simulated
//! RAM through a caller-supplied IOMMU translation.
//!
//! The device logic sits in [`SimEdu`]'s own [`Mmio`] implementation rather than in a
//! [`SimRegisters::on_write`] hook: a hook must be `'static`, which would force the RAM and the
//! translation (typically a reference walker borrowing that same RAM) behind `Rc`s. Here both
//! are plain borrows, so a test can write
//! `SimEdu::new(&mem, |iova, write| walker.translate(&mem, iova, write))`.
//!
//! Only `alloc` is used, never `std`: with the `sim` feature this module is compiled into
//! workspace builds of the freestanding kernel too.

extern crate alloc;

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};

use lazaret_types::sim::SimRegisters;
use lazaret_types::{Mmio, PhysAddr, PhysMem, PAGE_SIZE};

use crate::dma::DmaMask;
use crate::regs::{self, BUFFER_SIZE, CMD_EDU_TO_RAM, CMD_IRQ, CMD_START};

/// What QEMU 7.2's edu reports in its identification register.
pub const QEMU_IDENTIFICATION: u32 = 0x0100_00ed;

/// The IOMMU as the device sees it: the host physical address of `iova` for a read
/// (`write == false`) or a write, or `None` when the IOMMU blocks the access. The answer is
/// taken to hold up to the end of `iova`'s 4 KiB page.
pub type Translate<'a> = Box<dyn Fn(u64, bool) -> Option<PhysAddr> + 'a>;

/// A translation without an IOMMU: IOVA = physical address.
pub fn identity(iova: u64, _write: bool) -> Option<PhysAddr> {
    Some(PhysAddr(iova))
}

/// When a started DMA finishes (in QEMU: from a timer 100 ms of virtual time later).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// Within the write of the start command.
    Immediate,
    /// At the n-th read of the command register after the start (n >= 1; 0 means immediate).
    AfterPolls(u32),
    /// Only when [`SimEdu::fire_timer`] is called: for time-out tests.
    Never,
}

/// A page-sized piece of a DMA that the translation refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockedAccess {
    pub iova: u64,
    pub write: bool,
}

/// The simulated device. Hand it (or a reference to it) to [`crate::Edu::probe`].
pub struct SimEdu<'a> {
    regs: SimRegisters,
    memory: &'a dyn PhysMem,
    translate: Translate<'a>,
    buffer: RefCell<Vec<u8>>,
    dma_mask: Cell<u64>,
    completion: Cell<Completion>,
    /// Command-register reads left before the pending DMA finishes; `None` = not counting.
    polls_left: Cell<Option<u32>>,
    blocked: RefCell<Vec<BlockedAccess>>,
}

impl<'a> SimEdu<'a> {
    /// A freshly reset device (QEMU defaults: 28-bit DMA mask, zeroed buffer) whose DMA goes
    /// to `memory` through `translate`.
    pub fn new(
        memory: &'a dyn PhysMem,
        translate: impl Fn(u64, bool) -> Option<PhysAddr> + 'a,
    ) -> SimEdu<'a> {
        let regs = SimRegisters::new();
        regs.set(regs::IDENTIFICATION, QEMU_IDENTIFICATION.into());
        SimEdu {
            regs,
            memory,
            translate: Box::new(translate),
            buffer: RefCell::new(vec![0; BUFFER_SIZE]),
            dma_mask: Cell::new(DmaMask::DEFAULT.value()),
            completion: Cell::new(Completion::Immediate),
            polls_left: Cell::new(None),
            blocked: RefCell::new(Vec::new()),
        }
    }

    /// QEMU's `dma_mask` property: RAM-side start addresses are ANDed with it.
    pub fn set_dma_mask(&self, mask: u64) {
        self.dma_mask.set(mask);
    }

    /// When DMAs started from now on finish.
    pub fn set_completion(&self, completion: Completion) {
        self.completion.set(completion);
    }

    /// Finishes the pending DMA now, as QEMU's timer would.
    pub fn fire_timer(&self) {
        self.finish_dma();
    }

    /// Whether a started DMA has not finished yet.
    pub fn dma_pending(&self) -> bool {
        self.regs.get(regs::DMA_CMD) & CMD_START != 0
    }

    /// The recorded register block: access log, write count, raw values.
    pub fn registers(&self) -> &SimRegisters {
        &self.regs
    }

    /// A copy of the 4 KiB device buffer.
    pub fn buffer(&self) -> Vec<u8> {
        self.buffer.borrow().clone()
    }

    /// Presets buffer bytes from `offset` (test set-up; the real buffer is reachable only by
    /// DMA). Panics if the bytes do not fit in the 4 KiB buffer.
    pub fn fill_buffer(&self, offset: usize, data: &[u8]) {
        let mut buffer = self.buffer.borrow_mut();
        let target = offset
            .checked_add(data.len())
            .and_then(|end| buffer.get_mut(offset..end));
        match target {
            Some(t) => t.copy_from_slice(data),
            None => panic!("{} bytes at {offset:#x} do not fit the buffer", data.len()),
        }
    }

    /// Every page-sized piece of a DMA the translation refused, in order.
    pub fn blocked_accesses(&self) -> Vec<BlockedAccess> {
        self.blocked.borrow().clone()
    }

    /// QEMU's access-size rule (`edu_mmio_read`/`edu_mmio_write`): 32-bit only below 0x80,
    /// 32 or 64 bits from 0x80 on.
    fn size_ok(offset: usize, bytes: usize) -> bool {
        bytes == 4 || (bytes == 8 && offset >= regs::DMA_SRC)
    }

    fn on_read(&self, offset: usize) {
        if offset != regs::DMA_CMD || !self.dma_pending() {
            return;
        }
        match self.polls_left.get() {
            Some(n) if n <= 1 => self.finish_dma(),
            Some(n) => self.polls_left.set(Some(n - 1)),
            None => {}
        }
    }

    /// The device's reaction to a write that [`SimRegisters`] has already stored, given the
    /// register's value before it.
    fn on_write(&self, offset: usize, value: u64, bytes: usize, before: u64) {
        let ignore = || self.regs.set(offset, before);
        if !Self::size_ok(offset, bytes) {
            return ignore();
        }
        match offset {
            regs::LIVENESS => self.regs.set(offset, u64::from(!(value as u32))),
            regs::FACTORIAL => self.compute_factorial(value as u32),
            regs::STATUS => self.regs.set(
                offset,
                (before & u64::from(regs::STATUS_COMPUTING))
                    | (value & u64::from(regs::STATUS_IRQ_ON_FACTORIAL)),
            ),
            regs::IRQ_RAISE => self.raise_irq(value as u32),
            regs::IRQ_ACK => {
                let status = self.regs.get(regs::IRQ_STATUS) & !u64::from(value as u32);
                self.regs.set(regs::IRQ_STATUS, status);
            }
            // While a DMA is pending, QEMU ignores writes to every DMA register (`dma_rw`).
            regs::DMA_SRC | regs::DMA_DST | regs::DMA_COUNT if self.dma_pending() => ignore(),
            regs::DMA_CMD => {
                if before & CMD_START != 0 || value & CMD_START == 0 {
                    return ignore();
                }
                self.arm_dma();
            }
            regs::IDENTIFICATION | regs::IRQ_STATUS => ignore(),
            _ => {}
        }
    }

    fn compute_factorial(&self, n: u32) {
        // QEMU multiplies in uint32_t; once the product wraps to 0 (from 34! on) it stays 0,
        // so stop there instead of looping up to 4 billion times.
        let result = (1..=n)
            .try_fold(1u32, |acc, k| match acc.wrapping_mul(k) {
                0 => Err(0),
                p => Ok(p),
            })
            .unwrap_or(0);
        self.regs.set(regs::FACTORIAL, result.into());
        if self.regs.get(regs::STATUS) & u64::from(regs::STATUS_IRQ_ON_FACTORIAL) != 0 {
            self.raise_irq(regs::IRQ_FACTORIAL);
        }
    }

    fn raise_irq(&self, causes: u32) {
        let status = self.regs.get(regs::IRQ_STATUS) | u64::from(causes);
        self.regs.set(regs::IRQ_STATUS, status);
    }

    fn arm_dma(&self) {
        match self.completion.get() {
            Completion::Immediate | Completion::AfterPolls(0) => self.finish_dma(),
            Completion::AfterPolls(n) => self.polls_left.set(Some(n)),
            Completion::Never => self.polls_left.set(None),
        }
    }

    /// `edu_dma_timer`: check the device-side range (QEMU 7.2 aborts the VM when it is bad,
    /// and so does this model, by panicking), mask the RAM-side address, copy, clear the busy
    /// bit, raise the interrupt if asked.
    fn finish_dma(&self) {
        let cmd = self.regs.get(regs::DMA_CMD);
        if cmd & CMD_START == 0 {
            return;
        }
        self.polls_left.set(None);
        let src = self.regs.get(regs::DMA_SRC);
        let dst = self.regs.get(regs::DMA_DST);
        let count = self.regs.get(regs::DMA_COUNT);
        let to_ram = cmd & CMD_EDU_TO_RAM != 0;
        let (device_addr, ram_addr) = if to_ram { (src, dst) } else { (dst, src) };
        let Some(offset) = regs::buffer_offset(device_addr, count) else {
            panic!(
                "EDU: DMA range {device_addr:#x}+{count:#x} out of bounds: \
                 QEMU 7.2 hw_error() aborts the VM"
            );
        };
        // `buffer_offset` accepted the range, so it lies inside the 4 KiB buffer.
        let range = offset..offset + count as usize;
        let iova = ram_addr & self.dma_mask.get();
        if to_ram {
            let mut data = self.buffer.borrow()[range].to_vec();
            self.ram_transfer(iova, &mut data, true);
        } else {
            let mut data = vec![0; range.len()];
            self.ram_transfer(iova, &mut data, false);
            self.buffer.borrow_mut()[range].copy_from_slice(&data);
        }
        self.regs.set(regs::DMA_CMD, cmd & !CMD_START);
        if cmd & CMD_IRQ != 0 {
            self.raise_irq(regs::IRQ_DMA);
        }
    }

    /// Moves `data` to (`write`) or from RAM at `iova`, one IOVA page at a time as QEMU's
    /// IOMMU regions do. A blocked page is dropped on writes and reads as zeros (QEMU's
    /// unassigned memory), and is recorded.
    fn ram_transfer(&self, iova: u64, data: &mut [u8], write: bool) {
        let mut done = 0;
        while done < data.len() {
            let addr = iova.wrapping_add(done as u64);
            let in_page = (PAGE_SIZE - addr % PAGE_SIZE) as usize;
            let n = in_page.min(data.len() - done);
            let chunk = &mut data[done..done + n];
            match (self.translate)(addr, write) {
                Some(pa) if write => self.memory.write_bytes(pa, chunk),
                Some(pa) => self.memory.read_bytes(pa, chunk),
                None => {
                    self.blocked
                        .borrow_mut()
                        .push(BlockedAccess { iova: addr, write });
                    chunk.fill(0);
                }
            }
            done += n;
        }
    }
}

impl Mmio for SimEdu<'_> {
    fn read32(&self, offset: usize) -> u32 {
        self.on_read(offset);
        self.regs.read32(offset)
    }

    fn write32(&self, offset: usize, value: u32) {
        let before = self.regs.get(offset);
        self.regs.write32(offset, value);
        self.on_write(offset, value.into(), 4, before);
    }

    fn read64(&self, offset: usize) -> u64 {
        self.on_read(offset);
        let value = self.regs.read64(offset);
        if Self::size_ok(offset, 8) {
            value
        } else {
            u64::MAX
        }
    }

    fn write64(&self, offset: usize, value: u64) {
        let before = self.regs.get(offset);
        self.regs.write64(offset, value);
        self.on_write(offset, value, 8, before);
    }
}

/// Lets a test keep the device while the driver borrows it: `Edu::probe(&sim)`.
impl Mmio for &SimEdu<'_> {
    fn read32(&self, offset: usize) -> u32 {
        (**self).read32(offset)
    }

    fn write32(&self, offset: usize, value: u32) {
        (**self).write32(offset, value)
    }

    fn read64(&self, offset: usize) -> u64 {
        (**self).read64(offset)
    }

    fn write64(&self, offset: usize, value: u64) {
        (**self).write64(offset, value)
    }
}
