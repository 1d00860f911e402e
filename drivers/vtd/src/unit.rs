//! One DMA-remapping hardware unit: capabilities, root table pointer, queued invalidation,
//! translation enable, write-buffer flush, the invalidation rules the kernel follows after
//! table changes, and fault draining. Every handshake is bounded by the caller's clock.
//!
//! Invalidation rules implemented here (§6.1 caching mode, §6.5 invalidation, §6.8 write
//! buffer flushing):
//! * present → present context change (owner switch), and a domain ID about to be reused:
//!   collected in a [`SwitchBatch`], submitted by [`VtdUnit::flush`] as context-cache
//!   invalidations, a fence, IOTLB invalidations (with CAP.DRD / DWD drains), one wait.
//! * not-present → present (root entry, context entry, leaf PTE): with CAP.CM = 1 hardware may
//!   have cached the not-present entry, so it is invalidated like a change — for context
//!   entries device-selective with DID 0 (CM reserves DID 0 for not-present entries) plus the
//!   new domain's IOTLB; for root entries global context-cache; for PTEs page-selective IOTLB.
//!   With CM = 0 nothing is cached, and only the write buffer needs flushing (CAP.RWBF).
//! * present → not-present or less permission on a PTE: IOTLB page-selective (or domain).

use core::fmt;

use lazaret_types::{Bdf, FrameAllocator, Mmio, PhysAddr, PhysMem};

use crate::fault::{drain_faults, DrainSummary, FaultRecord};
use crate::invalidation::{
    iotlb_drained, ContextScope, CountingMmio, Invalidation, InvalidationError, InvalidationQueue,
    InvalidationStats, Invalidator, IotlbScope, SwitchBatch, MAX_CONTEXT_INVALIDATIONS,
    MAX_LATE_INVALIDATIONS,
};
use crate::poll::{poll_until, Clock};
use crate::regs::{
    global, required_register_bytes, Capabilities, ExtCapabilities, CAP, ECAP, GCMD, GSTS, RTADDR,
    VER,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitError {
    /// A GCMD/GSTS handshake did not complete.
    TimedOut {
        what: &'static str,
        waited_us: u64,
    },
    Invalidation(InvalidationError),
    /// ECAP.QI = 0, or (for interrupt remapping) queued invalidation not enabled yet.
    NoQueuedInvalidation,
    /// ECAP.IR = 0.
    NoInterruptRemapping,
    /// An x2APIC-mode interrupt table (IRTA.EIME) on a unit without ECAP.EIM.
    NoExtendedInterruptMode,
    /// The root table address is not 4 KiB aligned.
    UnalignedRootTable(PhysAddr),
    /// The DRHD's register window ends before registers CAP/ECAP place in it (fault
    /// recording at CAP.FRO, IOTLB registers at ECAP.IRO).
    RegisterWindowTooSmall {
        window_bytes: u64,
        required: u64,
    },
}

impl fmt::Display for UnitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnitError::TimedOut { what, waited_us } => {
                write!(f, "VT-d {what} did not complete within {waited_us} us")
            }
            UnitError::Invalidation(e) => write!(f, "VT-d invalidation: {e}"),
            UnitError::NoQueuedInvalidation => write!(f, "VT-d unit has no queued invalidation"),
            UnitError::NoInterruptRemapping => write!(f, "VT-d unit has no interrupt remapping"),
            UnitError::NoExtendedInterruptMode => {
                write!(f, "VT-d unit has no x2APIC interrupt remapping (ECAP.EIM)")
            }
            UnitError::UnalignedRootTable(a) => write!(f, "root table {a} not page aligned"),
            UnitError::RegisterWindowTooSmall {
                window_bytes,
                required,
            } => write!(
                f,
                "VT-d register window of {window_bytes:#x} bytes is smaller than the {required:#x} bytes its CAP/ECAP registers need"
            ),
        }
    }
}

impl From<InvalidationError> for UnitError {
    fn from(e: InvalidationError) -> Self {
        UnitError::Invalidation(e)
    }
}

/// One remapping unit, owning its register block.
pub struct VtdUnit<R: Mmio> {
    regs: CountingMmio<R>,
    cap: Capabilities,
    ecap: ExtCapabilities,
    invalidator: Invalidator,
    timeout_us: u64,
}

impl<R: Mmio> VtdUnit<R> {
    /// Reads CAP/ECAP. Invalidation starts register-based until
    /// [`VtdUnit::enable_queued_invalidation`]. `timeout_us` bounds every handshake.
    pub fn new(regs: R, timeout_us: u64) -> VtdUnit<R> {
        let cap = Capabilities(regs.read64(CAP));
        let ecap = ExtCapabilities(regs.read64(ECAP));
        VtdUnit {
            regs: CountingMmio::new(regs),
            cap,
            ecap,
            invalidator: Invalidator::registers(ecap.iotlb_offset()),
            timeout_us,
        }
    }

    /// [`VtdUnit::new`], refusing a register window (`window_bytes`, from the DRHD) that does
    /// not reach every register CAP and ECAP place (see [`required_register_bytes`]): the
    /// driver would otherwise read and write beyond the mapping.
    pub fn checked(regs: R, window_bytes: u64, timeout_us: u64) -> Result<VtdUnit<R>, UnitError> {
        let cap = Capabilities(regs.read64(CAP));
        let ecap = ExtCapabilities(regs.read64(ECAP));
        let required = required_register_bytes(cap, ecap);
        if window_bytes < required {
            return Err(UnitError::RegisterWindowTooSmall {
                window_bytes,
                required,
            });
        }
        Ok(VtdUnit::new(regs, timeout_us))
    }

    pub fn capabilities(&self) -> Capabilities {
        self.cap
    }

    pub fn ext_capabilities(&self) -> ExtCapabilities {
        self.ecap
    }

    /// (major, minor) from VER (§10.4.1).
    pub fn version(&self) -> (u8, u8) {
        let v = self.regs.read32(VER);
        (((v >> 4) & 0xf) as u8, (v & 0xf) as u8)
    }

    pub fn registers(&self) -> &R {
        self.regs.inner()
    }

    /// All MMIO writes this driver made to the unit.
    pub fn mmio_writes(&self) -> u64 {
        self.regs.writes()
    }

    pub fn invalidation_stats(&self) -> InvalidationStats {
        self.invalidator.stats()
    }

    pub fn translation_enabled(&self) -> bool {
        self.regs.read32(GSTS) & global::TE != 0
    }

    /// Issues one GCMD command and waits for GSTS to show `done`. GCMD is write-only, so the
    /// value is GSTS's persistent enables with `set` added and `clear` removed; one-shot status
    /// bits are never echoed back (§10.4.4).
    fn command(
        &self,
        set: u32,
        clear: u32,
        done: impl Fn(u32) -> bool,
        what: &'static str,
        clock: &(impl Clock + ?Sized),
    ) -> Result<(), UnitError> {
        let status = self.regs.read32(GSTS) & !global::ONE_SHOT;
        self.regs.write32(GCMD, (status | set) & !clear);
        poll_until(clock, self.timeout_us, || {
            done(self.regs.read32(GSTS)).then_some(())
        })
        .map_err(|t| UnitError::TimedOut {
            what,
            waited_us: t.waited_us,
        })
    }

    /// Points the unit at `root` (legacy mode, RTADDR.TTM = 00b) and latches it with SRTP
    /// (§10.4.6). With translation already enabled the caller then owes a global context-cache
    /// and global IOTLB invalidation (SRTP in §10.4.4).
    pub fn set_root_table(
        &self,
        root: PhysAddr,
        clock: &(impl Clock + ?Sized),
    ) -> Result<(), UnitError> {
        if !root.is_page_aligned() {
            return Err(UnitError::UnalignedRootTable(root));
        }
        self.regs.write64(RTADDR, root.0);
        self.command(
            global::SRTP,
            0,
            |s| s & global::SRTP != 0,
            "set root table pointer",
            clock,
        )
    }

    /// Allocates and programs the invalidation queue, then sets QIE. On a time-out the queue
    /// frames are given back and invalidation stays register-based.
    pub fn enable_queued_invalidation<A: FrameAllocator + ?Sized>(
        &mut self,
        alloc: &mut A,
        clock: &(impl Clock + ?Sized),
    ) -> Result<(), UnitError> {
        if !self.ecap.queued_invalidation() {
            return Err(UnitError::NoQueuedInvalidation);
        }
        if self.invalidator.is_queued() {
            return Ok(());
        }
        // Firmware (or an earlier owner) may have left QI on: IQA written while QIES is set is
        // undefined (§10.4.24), so turn it off first (hardware drains the old queue) or refuse.
        if self.regs.read32(GSTS) & global::QIE != 0 {
            self.command(
                0,
                global::QIE,
                |s| s & global::QIE == 0,
                "disable queued invalidation left on before IQA is programmed",
                clock,
            )?;
        }
        let mut queue = InvalidationQueue::new(alloc)?;
        queue.program(&self.regs);
        if let Err(e) = self.command(
            global::QIE,
            0,
            |s| s & global::QIE != 0,
            "enable queued invalidation",
            clock,
        ) {
            queue.free(alloc);
            return Err(e);
        }
        self.invalidator.use_queue(queue);
        Ok(())
    }

    /// Clears QIE and returns the queue frames (e.g. before handing the unit back).
    pub fn disable_queued_invalidation<A: FrameAllocator + ?Sized>(
        &mut self,
        alloc: &mut A,
        clock: &(impl Clock + ?Sized),
    ) -> Result<(), UnitError> {
        if !self.invalidator.is_queued() {
            return Ok(());
        }
        self.command(
            0,
            global::QIE,
            |s| s & global::QIE == 0,
            "disable queued invalidation",
            clock,
        )?;
        self.invalidator
            .release_queue(alloc, self.ecap.iotlb_offset());
        Ok(())
    }

    pub fn enable_translation(&self, clock: &(impl Clock + ?Sized)) -> Result<(), UnitError> {
        self.command(
            global::TE,
            0,
            |s| s & global::TE != 0,
            "enable translation",
            clock,
        )
    }

    pub fn disable_translation(&self, clock: &(impl Clock + ?Sized)) -> Result<(), UnitError> {
        self.command(
            0,
            global::TE,
            |s| s & global::TE == 0,
            "disable translation",
            clock,
        )
    }

    /// Flushes the unit's write buffer when CAP.RWBF says it has one (§6.8); GSTS.WBFS clears
    /// when done. A no-op (no MMIO) otherwise.
    pub fn flush_write_buffer(&self, clock: &(impl Clock + ?Sized)) -> Result<(), UnitError> {
        if !self.cap.rwbf() {
            return Ok(());
        }
        self.command(
            global::WBF,
            0,
            |s| s & global::WBF == 0,
            "write buffer flush",
            clock,
        )
    }

    /// Submits `batch` ordered so that no stale entry can be refilled — every context-cache
    /// invalidation completes (fenced wait descriptor, §6.5.2.8 FN) before the IOTLB
    /// invalidations and the interrupt entry cache invalidations the batch holds are
    /// processed — then waits once (bounded). Register-based invalidation
    /// (one command at a time, each polled) when QI is off. Flushes the write buffer first
    /// when the batch says so (CAP.RWBF, an entry became present).
    pub fn flush<M: PhysMem + ?Sized>(
        &mut self,
        mem: &M,
        batch: &SwitchBatch,
        clock: &(impl Clock + ?Sized),
    ) -> Result<(), UnitError> {
        if batch.needs_write_buffer_flush() {
            self.flush_write_buffer(clock)?;
        }
        let filler = Invalidation::Context(ContextScope::Global);
        let mut contexts = [filler; MAX_CONTEXT_INVALIDATIONS];
        let mut late = [filler; MAX_LATE_INVALIDATIONS];
        let nc = batch.context_invalidations(&mut contexts);
        let nt = batch.late_invalidations(self.cap, &mut late);
        Ok(self.invalidator.run_ordered(
            &self.regs,
            mem,
            &[&contexts[..nc], &late[..nt]],
            clock,
            self.timeout_us,
        )?)
    }

    /// Performs `batch` and waits once for all of it. Its descriptors may complete in any
    /// order: for owner switches use [`VtdUnit::flush`].
    pub fn invalidate<M: PhysMem + ?Sized>(
        &mut self,
        mem: &M,
        batch: &[Invalidation],
        clock: &(impl Clock + ?Sized),
    ) -> Result<(), UnitError> {
        Ok(self
            .invalidator
            .run(&self.regs, mem, batch, clock, self.timeout_us)?)
    }

    /// Global context-cache then global IOTLB invalidation, one wait: after a new root table
    /// pointer, before translation is (re-)enabled (SRTP in §10.4.4).
    pub fn invalidate_all<M: PhysMem + ?Sized>(
        &mut self,
        mem: &M,
        clock: &(impl Clock + ?Sized),
    ) -> Result<(), UnitError> {
        let context = [Invalidation::Context(ContextScope::Global)];
        let iotlb = [self.iotlb(IotlbScope::Global)];
        Ok(self.invalidator.run_ordered(
            &self.regs,
            mem,
            &[&context, &iotlb],
            clock,
            self.timeout_us,
        )?)
    }

    /// After `bdf`'s context entry moved (present → present) away from domain `old_did`:
    /// context-cache then (fenced) IOTLB, one wait. Prefer [`SwitchBatch`] + [`VtdUnit::flush`].
    pub fn after_owner_switch<M: PhysMem + ?Sized>(
        &mut self,
        mem: &M,
        bdf: Bdf,
        old_did: u16,
        clock: &(impl Clock + ?Sized),
    ) -> Result<(), UnitError> {
        let mut batch = SwitchBatch::new();
        let old = crate::ContextEntry {
            present: true,
            domain_id: old_did,
            ..crate::ContextEntry::NOT_PRESENT
        };
        batch.entry_changed(self.cap, bdf, old, crate::ContextEntry::NOT_PRESENT);
        self.flush(mem, &batch, clock)
    }

    /// After `bdf`'s context entry went not-present → present with domain `new_did`.
    pub fn after_context_present<M: PhysMem + ?Sized>(
        &mut self,
        mem: &M,
        bdf: Bdf,
        new_did: u16,
        clock: &(impl Clock + ?Sized),
    ) -> Result<(), UnitError> {
        if !self.cap.caching_mode() {
            return self.flush_write_buffer(clock);
        }
        let mut batch = SwitchBatch::new();
        let new = crate::ContextEntry {
            present: true,
            domain_id: new_did,
            ..crate::ContextEntry::NOT_PRESENT
        };
        batch.entry_changed(self.cap, bdf, crate::ContextEntry::NOT_PRESENT, new);
        self.flush(mem, &batch, clock)
    }

    /// After a root entry went not-present → present ([`crate::RootTable::ensure_bus`]).
    pub fn after_root_entry_present<M: PhysMem + ?Sized>(
        &mut self,
        mem: &M,
        clock: &(impl Clock + ?Sized),
    ) -> Result<(), UnitError> {
        if !self.cap.caching_mode() {
            return self.flush_write_buffer(clock);
        }
        self.invalidate(mem, &[Invalidation::Context(ContextScope::Global)], clock)
    }

    /// After 2^order pages from `iova` of domain `did` were mapped where nothing was mapped.
    pub fn after_map<M: PhysMem + ?Sized>(
        &mut self,
        mem: &M,
        did: u16,
        iova: u64,
        order: u8,
        clock: &(impl Clock + ?Sized),
    ) -> Result<(), UnitError> {
        if !self.cap.caching_mode() {
            return self.flush_write_buffer(clock);
        }
        let scope = IotlbScope::pages_or_domain(self.cap, did, iova, order);
        self.invalidate(mem, &[self.iotlb(scope)], clock)
    }

    /// After 2^order pages from `iova` of domain `did` were unmapped or lost permissions.
    pub fn after_unmap<M: PhysMem + ?Sized>(
        &mut self,
        mem: &M,
        did: u16,
        iova: u64,
        order: u8,
        clock: &(impl Clock + ?Sized),
    ) -> Result<(), UnitError> {
        let scope = IotlbScope::pages_or_domain(self.cap, did, iova, order);
        self.invalidate(mem, &[self.iotlb(scope)], clock)
    }

    /// An IOTLB invalidation with the drains CAP.DRD / CAP.DWD offer.
    const fn iotlb(&self, scope: IotlbScope) -> Invalidation {
        iotlb_drained(self.cap, scope)
    }

    /// Drains the fault recording registers (see [`crate::fault::drain_faults`]).
    pub fn drain_faults(&self, sink: impl FnMut(FaultRecord)) -> DrainSummary {
        drain_faults(&self.regs, self.cap, sink)
    }
}

mod interrupts;

#[cfg(test)]
mod hole_tests;
#[cfg(test)]
mod switch_tests;
#[cfg(test)]
mod tests;
