//! Interrupt remapping on one unit: which IRTE format the unit reads (Control.GAEn, §3.4.4),
//! and the invalidations a table or DTE change owes (§2.4.2, §2.4.5), fenced like owner
//! switches (§2.4: unfenced commands complete in any order).

use lazaret_types::{Mmio, PhysMem};

use super::{AmdViUnit, UnitError};
use crate::command::Command;
use crate::intremap::IrteFormat;
use crate::poll::Clock;
use crate::regs::{self, control};

/// COMPLETION_WAIT with neither store nor interrupt: orders, is not polled.
const FENCE: Command = Command::CompletionWait {
    store: None,
    interrupt: false,
};

impl<R: Mmio> AmdViUnit<R> {
    /// The IRTE format the unit uses now: 128-bit while Control.GAEn is set
    /// ([`AmdViUnit::bring_up`] sets it when EFR.GASup), else 32-bit. Build every interrupt
    /// table with this.
    pub fn irte_format(&self) -> IrteFormat {
        if self.regs.read64(regs::CONTROL) & control::GA_EN != 0 {
            IrteFormat::Ga128
        } else {
            IrteFormat::Legacy32
        }
    }

    /// After entries of the tables of `device_ids` (a device and its aliases) changed:
    /// INVALIDATE_INTERRUPT_TABLE for each, ONE polled COMPLETION_WAIT (bounded).
    pub fn invalidate_interrupt_tables<M: PhysMem + ?Sized>(
        &mut self,
        mem: &M,
        clock: &(impl Clock + ?Sized),
        device_ids: &[u16],
    ) -> Result<(), UnitError> {
        let cmds = device_ids
            .iter()
            .map(|&device_id| Command::InvalidateInterruptTable { device_id });
        self.invalidate(mem, clock, cmds)
    }

    /// After the interrupt half of the DTEs of `device_ids` changed (another table, IV,
    /// IntCtl): INVALIDATE_DEVTAB_ENTRY for each, a fence, INVALIDATE_INTERRUPT_TABLE for
    /// each, ONE polled wait. Unfenced, the interrupt-table invalidation could complete first
    /// and an MSI in between refill the entry cache from the old table through the still
    /// cached old DTE.
    pub fn after_interrupt_dte_change<M: PhysMem + ?Sized>(
        &mut self,
        mem: &M,
        clock: &(impl Clock + ?Sized),
        device_ids: &[u16],
    ) -> Result<(), UnitError> {
        let dtes = device_ids
            .iter()
            .map(|&device_id| Command::InvalidateDevtabEntry { device_id });
        let tables = device_ids
            .iter()
            .map(|&device_id| Command::InvalidateInterruptTable { device_id });
        self.invalidate(mem, clock, dtes.chain([FENCE]).chain(tables))
    }
}
