//! Context-cache and IOTLB invalidation (§6.5), through the invalidation queue when the unit
//! has one and through the CCMD / IOTLB registers otherwise.
//!
//! Batching: the kernel submits all descriptors an operation needs and then ONE status poll.
//! §6.5.2.8: a wait descriptor's status write happens only after every descriptor submitted
//! before it has completed, so one wait covers the batch — but descriptors between waits may
//! complete in any order, and with FN = 0 even later descriptors may overtake a wait. An owner
//! switch therefore must not be one unfenced batch: if the IOTLB invalidation for the old DID
//! completes before the context-cache invalidation, a DMA in between refills the IOTLB through
//! the still-cached old context entry, with entries tagged by the old DID, which survive into
//! the DID's next owner. [`SwitchBatch`] collects what a set of context changes owes and
//! [`crate::VtdUnit::flush`] submits it as context-cache invalidations, a fenced wait (FN = 1),
//! IOTLB invalidations, a final wait: one doorbell and one status poll, Xen's ordering without
//! Xen's second round trip.

mod descriptor;
mod queue;
mod register;
mod switch;

use core::fmt;

use lazaret_types::{FrameAllocator, Mmio, PhysAddr, PhysMem};

pub use descriptor::{
    owner_switch, wait_descriptor, ContextScope, InterruptScope, Invalidation, IotlbScope,
    RegisterCommand,
};
pub use queue::{InvalidationQueue, MAX_BATCH};
pub use register::invalidate_by_register;
pub use switch::{
    iotlb_drained, SwitchBatch, MAX_CONTEXT_INVALIDATIONS, MAX_LATE_INVALIDATIONS, SWITCH_DEVICES,
    SWITCH_DOMAINS, SWITCH_INTERRUPTS,
};

use crate::poll::Clock;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidationError {
    OutOfFrames,
    /// The unit did not finish in time; state is consistent but the flush is not confirmed.
    TimedOut {
        waited_us: u64,
        what: &'static str,
    },
    /// FSTS reported IQE / ICE / ITE (the bits found): the queue is stopped at the bad entry.
    QueueError {
        fsts: u32,
    },
    /// More descriptors than the queue holds in one batch.
    BatchTooLarge {
        len: usize,
    },
    /// An interrupt entry cache invalidation without queued invalidation (§6.5.2.7 only).
    NeedsQueue,
}

impl fmt::Display for InvalidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidationError::OutOfFrames => write!(f, "out of frames for the invalidation queue"),
            InvalidationError::TimedOut { waited_us, what } => {
                write!(f, "{what} timed out after {waited_us} us")
            }
            InvalidationError::QueueError { fsts } => {
                let names = [
                    (crate::regs::fsts::IQE, " invalid descriptor (IQE)"),
                    (crate::regs::fsts::ICE, " completion error (ICE)"),
                    (crate::regs::fsts::ITE, " time-out, waits aborted (ITE)"),
                ];
                write!(f, "invalidation queue reported")?;
                for (_, name) in names.iter().filter(|(bit, _)| fsts & bit != 0) {
                    write!(f, "{name}")?;
                }
                write!(
                    f,
                    " (FSTS {fsts:#x}); cleared and the queue resumed, but the batch is not confirmed"
                )
            }
            InvalidationError::BatchTooLarge { len } => {
                write!(f, "batch of {len} invalidations exceeds {MAX_BATCH}")
            }
            InvalidationError::NeedsQueue => write!(
                f,
                "interrupt entry cache invalidation needs queued invalidation"
            ),
        }
    }
}

/// Counters the kernel reports as FIGURE lines (design §8).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InvalidationStats {
    /// Invalidation requests issued (queue descriptors or register commands), waits excluded.
    pub descriptors: u64,
    /// Completion waits: wait descriptors, or register polls.
    pub waits: u64,
    /// MMIO register writes made by invalidations.
    pub mmio_writes: u64,
}

/// A register block that counts writes, so invalidation and bring-up can report their cost.
pub struct CountingMmio<R> {
    inner: R,
    writes: core::cell::Cell<u64>,
}

impl<R: Mmio> CountingMmio<R> {
    pub fn new(inner: R) -> Self {
        CountingMmio {
            inner,
            writes: core::cell::Cell::new(0),
        }
    }

    pub fn inner(&self) -> &R {
        &self.inner
    }

    pub fn writes(&self) -> u64 {
        self.writes.get()
    }

    fn count(&self) {
        self.writes.set(self.writes.get() + 1);
    }
}

impl<R: Mmio> Mmio for CountingMmio<R> {
    fn read32(&self, offset: usize) -> u32 {
        self.inner.read32(offset)
    }

    fn write32(&self, offset: usize, value: u32) {
        self.count();
        self.inner.write32(offset, value)
    }

    fn read64(&self, offset: usize) -> u64 {
        self.inner.read64(offset)
    }

    fn write64(&self, offset: usize, value: u64) {
        self.count();
        self.inner.write64(offset, value)
    }
}

enum Backend {
    Queued(InvalidationQueue),
    Register { iotlb_offset: usize },
}

/// The unit's invalidation interface, whichever it is.
pub struct Invalidator {
    backend: Backend,
    stats: InvalidationStats,
}

impl Invalidator {
    /// Register-based invalidation; `iotlb_offset` is ECAP.IRO * 16.
    pub fn registers(iotlb_offset: usize) -> Invalidator {
        Invalidator {
            backend: Backend::Register { iotlb_offset },
            stats: InvalidationStats::default(),
        }
    }

    /// Switches to queued invalidation through `queue` (programmed, QIE set); counters carry on.
    pub fn use_queue(&mut self, queue: InvalidationQueue) {
        self.backend = Backend::Queued(queue);
    }

    pub fn is_queued(&self) -> bool {
        matches!(self.backend, Backend::Queued(_))
    }

    pub fn stats(&self) -> InvalidationStats {
        self.stats
    }

    /// Frames owned by the queue (none for register-based invalidation).
    pub fn frames(&self) -> Option<[PhysAddr; 2]> {
        match &self.backend {
            Backend::Queued(q) => Some(q.frames()),
            Backend::Register { .. } => None,
        }
    }

    /// Performs `batch` and waits for its completion: one wait with the queue, one bounded
    /// poll per command with registers. Returns the first error; with registers, commands
    /// after a failed one are not issued. Descriptors in one call may complete in any order.
    pub fn run<R, M>(
        &mut self,
        regs: &CountingMmio<R>,
        mem: &M,
        batch: &[Invalidation],
        clock: &(impl Clock + ?Sized),
        timeout_us: u64,
    ) -> Result<(), InvalidationError>
    where
        R: Mmio,
        M: PhysMem + ?Sized,
    {
        self.run_ordered(regs, mem, &[batch], clock, timeout_us)
    }

    /// Performs `segments` in order: every invalidation of one segment completes before any of
    /// the next takes effect (a fenced wait between them in the queue; register commands are
    /// one at a time anyway), then one wait (one status poll) for everything.
    pub fn run_ordered<R, M>(
        &mut self,
        regs: &CountingMmio<R>,
        mem: &M,
        segments: &[&[Invalidation]],
        clock: &(impl Clock + ?Sized),
        timeout_us: u64,
    ) -> Result<(), InvalidationError>
    where
        R: Mmio,
        M: PhysMem + ?Sized,
    {
        let count: usize = segments.iter().map(|s| s.len()).sum();
        if count == 0 {
            return Ok(());
        }
        let writes_before = regs.writes();
        let result = match &mut self.backend {
            Backend::Queued(q) => {
                let r = q.submit_segments(regs, mem, segments, clock, timeout_us);
                if !matches!(r, Err(InvalidationError::BatchTooLarge { .. })) {
                    self.stats.descriptors += count as u64;
                    self.stats.waits += 1;
                }
                r
            }
            Backend::Register { iotlb_offset } => {
                segments.iter().flat_map(|s| s.iter()).try_for_each(|inv| {
                    self.stats.descriptors += 1;
                    self.stats.waits += 1;
                    invalidate_by_register(regs, *iotlb_offset, inv, clock, timeout_us)
                })
            }
        };
        self.stats.mmio_writes += regs.writes() - writes_before;
        result
    }

    /// Returns the queue's frames to `alloc`, turning back into register-based invalidation.
    /// Only after QIE has been cleared.
    pub fn release_queue<A: FrameAllocator + ?Sized>(
        &mut self,
        alloc: &mut A,
        iotlb_offset: usize,
    ) {
        let old = core::mem::replace(&mut self.backend, Backend::Register { iotlb_offset });
        if let Backend::Queued(q) = old {
            q.free(alloc);
        }
    }
}

#[cfg(test)]
mod tests;
