//! Register-based invalidation (§6.5.1) for units without queued invalidation (ECAP.QI = 0):
//! one CCMD or IVA/IOTLB command at a time, each polled (bounded) until hardware clears
//! ICC / IVT. Must not be used while QIE is set.

use lazaret_types::Mmio;

use super::descriptor::{Invalidation, IotlbScope, RegisterCommand, CCMD_ICC, IOTLB_IVT};
use super::InvalidationError;
use crate::poll::{poll_until, Clock};
use crate::regs::CCMD;

/// Issues one invalidation and waits for it. `iotlb_offset` is ECAP.IRO * 16.
pub fn invalidate_by_register<R: Mmio + ?Sized>(
    regs: &R,
    iotlb_offset: usize,
    inv: &Invalidation,
    clock: &(impl Clock + ?Sized),
    timeout_us: u64,
) -> Result<(), InvalidationError> {
    let Some(command) = inv.register_command() else {
        return Err(InvalidationError::NeedsQueue);
    };
    let (register, busy, what) = match command {
        RegisterCommand::Context(value) => {
            regs.write64(CCMD, value);
            (CCMD, CCMD_ICC, "context command (CCMD.ICC)")
        }
        RegisterCommand::Iotlb { iva, command } => {
            // IVA is only read for page-selective requests, but then always: IOVA 0 encodes as
            // IVA 0, and skipping the write would reuse the previous request's address.
            if matches!(
                inv,
                Invalidation::Iotlb {
                    scope: IotlbScope::Page { .. },
                    ..
                }
            ) {
                regs.write64(iotlb_offset, iva);
            }
            regs.write64(iotlb_offset + 8, command);
            (iotlb_offset + 8, IOTLB_IVT, "IOTLB command (IOTLB.IVT)")
        }
    };
    poll_until(clock, timeout_us, || {
        (regs.read64(register) & busy == 0).then_some(())
    })
    .map_err(|t| InvalidationError::TimedOut {
        waited_us: t.waited_us,
        what,
    })
}
