//! The invalidation queue (§6.5.2): one 4 KiB page of 256 128-bit descriptors (IQA.QS = 0,
//! IQA.DW = 0), software owning the tail (IQT) and hardware the head (IQH), plus one status
//! dword that invalidation wait descriptors write.

use lazaret_types::{FrameAllocator, Mmio, PhysAddr, PhysMem, PAGE_SIZE};

use super::descriptor::{wait_descriptor, Invalidation};
use super::InvalidationError;
use crate::poll::{poll_until, Clock};
use crate::regs::{fsts, FSTS, IQA, IQH, IQT};

const SLOTS: usize = 256;
const DESCRIPTOR_SIZE: u64 = 16;
/// Largest batch: the queue keeps one slot free (head == tail means empty) and each batch
/// needs one more slot for its wait descriptor.
pub const MAX_BATCH: usize = SLOTS - 2;

/// Errors the unit reports in FSTS while processing the queue (§10.4.9).
const QUEUE_ERRORS: u32 = fsts::IQE | fsts::ICE | fsts::ITE;

pub struct InvalidationQueue {
    base: PhysAddr,
    status: PhysAddr,
    tail: usize,
    sequence: u32,
}

impl InvalidationQueue {
    /// Allocates the queue page and the status page (both zeroed), or neither.
    pub fn new<A: FrameAllocator + ?Sized>(
        alloc: &mut A,
    ) -> Result<InvalidationQueue, InvalidationError> {
        let base = alloc.alloc_frame().ok_or(InvalidationError::OutOfFrames)?;
        let Some(status) = alloc.alloc_frame() else {
            alloc.free_frame(base);
            return Err(InvalidationError::OutOfFrames);
        };
        Ok(InvalidationQueue {
            base,
            status,
            tail: 0,
            sequence: 0,
        })
    }

    /// Programs IQT = 0 and IQA before QIE is set (§6.5.2: "software must ... initialize the
    /// tail to zero").
    pub fn program<R: Mmio + ?Sized>(&mut self, regs: &R) {
        self.tail = 0;
        regs.write64(IQT, 0);
        regs.write64(IQA, self.base.0 & !0xfff);
    }

    pub fn frames(&self) -> [PhysAddr; 2] {
        [self.base, self.status]
    }

    fn head<R: Mmio + ?Sized>(regs: &R) -> usize {
        ((regs.read64(IQH) >> 4) as usize) % SLOTS
    }

    /// Writes `batch` and one wait descriptor, advances the tail once, and polls (bounded) the
    /// status dword. Descriptors are not cache-flushed: ECAP.C covers only the translation
    /// structures, and queue fetches and wait status writes are coherent (as Linux and Xen
    /// assume).
    pub fn submit_and_wait<R, M>(
        &mut self,
        regs: &R,
        mem: &M,
        batch: &[Invalidation],
        clock: &(impl Clock + ?Sized),
        timeout_us: u64,
    ) -> Result<(), InvalidationError>
    where
        R: Mmio + ?Sized,
        M: PhysMem + ?Sized,
    {
        if batch.len() > MAX_BATCH {
            return Err(InvalidationError::BatchTooLarge { len: batch.len() });
        }
        let needed = batch.len() + 1;
        // After an earlier time-out hardware may still own slots: wait (bounded) for room.
        let tail = self.tail;
        poll_until(clock, timeout_us, || {
            let free = (Self::head(regs) + SLOTS - tail - 1) % SLOTS;
            (free >= needed).then_some(())
        })
        .map_err(|t| InvalidationError::TimedOut {
            waited_us: t.waited_us,
            what: "invalidation queue space",
        })?;

        self.sequence = self.sequence.wrapping_add(1).max(1);
        let data = self.sequence;
        let wait = wait_descriptor(self.status, data);
        for d in batch.iter().map(Invalidation::descriptor).chain([wait]) {
            let slot = PhysAddr(self.base.0 + self.tail as u64 * DESCRIPTOR_SIZE);
            mem.write_bytes(slot, &d.to_le_bytes());
            self.tail = (self.tail + 1) % SLOTS;
        }
        // One doorbell for the whole batch (IQT bits 18:4 = descriptor index).
        regs.write64(IQT, (self.tail as u64) << 4);

        poll_until(clock, timeout_us, || {
            let errors = regs.read32(FSTS) & QUEUE_ERRORS;
            if errors != 0 {
                return Some(Err(InvalidationError::QueueError { fsts: errors }));
            }
            (mem.read_u64(self.status) as u32 == data).then_some(Ok(()))
        })
        .map_err(|t| InvalidationError::TimedOut {
            waited_us: t.waited_us,
            what: "invalidation wait descriptor",
        })?
    }

    /// Gives both pages back; only after QIE is cleared.
    pub fn free<A: FrameAllocator + ?Sized>(self, alloc: &mut A) {
        self.frames().iter().for_each(|f| alloc.free_frame(*f));
    }
}

const _: () = assert!(SLOTS as u64 * DESCRIPTOR_SIZE == PAGE_SIZE);
