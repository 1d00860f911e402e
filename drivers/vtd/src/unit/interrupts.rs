//! Interrupt remapping on one unit (§5.1, GCMD/GSTS §10.4.4–5, IRTA §10.4.29): point the unit
//! at a table, invalidate the interrupt entry cache, turn remapping on with
//! compatibility-format interrupts blocked. Every handshake bounded.

use lazaret_types::{Mmio, PhysMem};

use super::{UnitError, VtdUnit};
use crate::intremap::InterruptTable;
use crate::invalidation::{InterruptScope, Invalidation};
use crate::poll::Clock;
use crate::regs::{global, GSTS, IRTA};

impl<R: Mmio> VtdUnit<R> {
    /// IRTA ← `table`, GCMD.SIRTP (wait for IRTPS), global interrupt entry cache invalidation
    /// (owed after every SIRTP, §10.4.4), then GCMD.IRE with GCMD.CFI clear (wait for IRES set
    /// and CFIS clear): from then on a compatibility-format interrupt is blocked (fault 0x25),
    /// so no device can raise an arbitrary vector by writing to 0xFEEx_xxxx. Needs ECAP.IR, and
    /// queued invalidation already enabled (IR has no register-based IEC invalidation).
    pub fn enable_interrupt_remapping<M: PhysMem + ?Sized>(
        &mut self,
        mem: &M,
        table: &InterruptTable,
        clock: &(impl Clock + ?Sized),
    ) -> Result<(), UnitError> {
        if !self.ecap.interrupt_remapping() {
            return Err(UnitError::NoInterruptRemapping);
        }
        if table.irta() & (1 << 11) != 0 && !self.ecap.extended_interrupt_mode() {
            return Err(UnitError::NoExtendedInterruptMode);
        }
        if !self.invalidator.is_queued() {
            return Err(UnitError::NoQueuedInvalidation);
        }
        self.regs.write64(IRTA, table.irta());
        self.command(
            global::SIRTP,
            0,
            |s| s & global::SIRTP != 0,
            "set interrupt remap table pointer",
            clock,
        )?;
        self.invalidate_interrupt_entries(mem, InterruptScope::Global, clock)?;
        self.command(
            global::IRE,
            global::CFI,
            |s| s & global::IRE != 0 && s & global::CFI == 0,
            "enable interrupt remapping",
            clock,
        )
    }

    /// Clears IRE (interrupts then pass untranslated: only before handing the unit back).
    pub fn disable_interrupt_remapping(
        &self,
        clock: &(impl Clock + ?Sized),
    ) -> Result<(), UnitError> {
        self.command(
            0,
            global::IRE,
            |s| s & global::IRE == 0,
            "disable interrupt remapping",
            clock,
        )
    }

    /// GSTS.IRES set and GSTS.CFIS clear: remapping on, compatibility format blocked.
    pub fn interrupt_remapping_enabled(&self) -> bool {
        let s = self.regs.read32(GSTS);
        s & global::IRE != 0 && s & global::CFI == 0
    }

    /// The interrupt entry cache descriptor (§6.5.2.7) for `scope`, fenced by a wait descriptor
    /// and waited for (bounded): owed after every IRTE change, blocked ones included.
    pub fn invalidate_interrupt_entries<M: PhysMem + ?Sized>(
        &mut self,
        mem: &M,
        scope: InterruptScope,
        clock: &(impl Clock + ?Sized),
    ) -> Result<(), UnitError> {
        if !self.invalidator.is_queued() {
            return Err(UnitError::NoQueuedInvalidation);
        }
        self.invalidate(mem, &[Invalidation::InterruptEntry(scope)], clock)
    }
}
