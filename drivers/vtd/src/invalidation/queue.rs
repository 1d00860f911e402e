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
    /// tail to zero"). Only while QIES is clear: IQA written with queued invalidation enabled
    /// is undefined (§10.4.24); [`crate::VtdUnit::enable_queued_invalidation`] makes sure.
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
    /// status dword (see [`InvalidationQueue::submit_segments`]).
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
        self.submit_segments(regs, mem, &[batch], clock, timeout_us)
    }

    /// Writes each non-empty segment followed by a fenced wait descriptor (§6.5.2.8 FN = 1:
    /// nothing after it is processed before everything before it has completed), advances the
    /// tail once, and polls (bounded) the status dword of the last wait only: one status poll
    /// for the whole batch. Only the last wait's status is polled; the fences write a separate
    /// dword (QEMU refuses a wait with neither SW nor IF).
    ///
    /// Descriptors are not cache-flushed: ECAP.C covers only the translation structures, and
    /// queue fetches and wait status writes are coherent (as Linux and Xen assume).
    ///
    /// Queue errors (FSTS.IQE / ICE / ITE) are handled while waiting, per §6.5.2.10: an
    /// invalid descriptor at IQH is replaced by a harmless wait and IQE cleared, so hardware
    /// resumes; ITE (pending waits aborted) and ICE are cleared. The batch is then reported as
    /// [`InvalidationError::QueueError`] (not confirmed) but the queue stays usable.
    pub fn submit_segments<R, M>(
        &mut self,
        regs: &R,
        mem: &M,
        segments: &[&[Invalidation]],
        clock: &(impl Clock + ?Sized),
        timeout_us: u64,
    ) -> Result<(), InvalidationError>
    where
        R: Mmio + ?Sized,
        M: PhysMem + ?Sized,
    {
        let used: usize = segments.iter().map(|s| s.len()).sum();
        let fences = segments.iter().filter(|s| !s.is_empty()).count().max(1);
        let needed = used + fences;
        if needed > MAX_BATCH + 1 {
            return Err(InvalidationError::BatchTooLarge { len: used });
        }
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
        let fence = wait_descriptor(self.fence_status(), data);
        let last = segments.iter().rposition(|s| !s.is_empty());
        for (i, segment) in segments.iter().enumerate() {
            if segment.is_empty() {
                continue;
            }
            for d in segment.iter() {
                self.write_slot(mem, d.descriptor());
            }
            if Some(i) != last {
                self.write_slot(mem, fence);
            }
        }
        self.write_slot(mem, wait_descriptor(self.status, data));
        // The descriptors are ordinary (write-back) stores; IQT is an uncached MMIO store. x86
        // does not reorder stores with each other, but the compiler may sink the plain stores
        // past the volatile doorbell, and a descriptor written with non-temporal / WC stores
        // would not be ordered: a full fence (compiler barrier + MFENCE) covers both, so the
        // unit never fetches a slot before its descriptor is in memory.
        fence_before_doorbell();
        // One doorbell for the whole batch (IQT bits 18:4 = descriptor index).
        regs.write64(IQT, (self.tail as u64) << 4);
        self.wait(regs, mem, data, clock, timeout_us)
    }

    fn fence_status(&self) -> PhysAddr {
        PhysAddr(self.status.0 + 8)
    }

    fn write_slot<M: PhysMem + ?Sized>(&mut self, mem: &M, d: u128) {
        let slot = PhysAddr(self.base.0 + self.tail as u64 * DESCRIPTOR_SIZE);
        mem.write_bytes(slot, &d.to_le_bytes());
        self.tail = (self.tail + 1) % SLOTS;
    }

    /// Polls for `data` in the status dword, handling queue errors on the way.
    fn wait<R, M>(
        &self,
        regs: &R,
        mem: &M,
        data: u32,
        clock: &(impl Clock + ?Sized),
        timeout_us: u64,
    ) -> Result<(), InvalidationError>
    where
        R: Mmio + ?Sized,
        M: PhysMem + ?Sized,
    {
        let mut seen = 0u32;
        poll_until(clock, timeout_us, || {
            let errors = regs.read32(FSTS) & QUEUE_ERRORS;
            if errors != 0 {
                seen |= errors;
                self.recover(regs, mem, errors);
            }
            if mem.read_u64(self.status) as u32 == data {
                return Some(());
            }
            // ITE aborted our wait descriptor: it will never write. Done once the queue drained.
            (seen & fsts::ITE != 0 && Self::head(regs) == self.tail).then_some(())
        })
        .map_err(|t| InvalidationError::TimedOut {
            waited_us: t.waited_us,
            what: "invalidation wait descriptor",
        })?;
        if seen != 0 {
            return Err(InvalidationError::QueueError { fsts: seen });
        }
        Ok(())
    }

    /// §6.5.2.10: IQE stops the queue at IQH, the invalid descriptor: overwrite it with a wait
    /// that writes a scratch dword, then clear IQE so hardware resumes there. ITE and ICE are
    /// cleared (RW1C); with ITE hardware already skipped the aborted waits.
    fn recover<R: Mmio + ?Sized, M: PhysMem + ?Sized>(&self, regs: &R, mem: &M, errors: u32) {
        if errors & fsts::IQE != 0 {
            let head = Self::head(regs);
            let slot = PhysAddr(self.base.0 + head as u64 * DESCRIPTOR_SIZE);
            let harmless = wait_descriptor(PhysAddr(self.status.0 + 16), 0);
            mem.write_bytes(slot, &harmless.to_le_bytes());
            fence_before_doorbell();
        }
        regs.write32(FSTS, errors);
    }

    /// Gives both pages back; only after QIE is cleared.
    pub fn free<A: FrameAllocator + ?Sized>(self, alloc: &mut A) {
        self.frames().iter().for_each(|f| alloc.free_frame(*f));
    }
}

/// Orders the descriptor stores before the IQT doorbell store (see the call sites).
fn fence_before_doorbell() {
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
}

const _: () = assert!(SLOTS as u64 * DESCRIPTOR_SIZE == PAGE_SIZE);
