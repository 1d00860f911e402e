//! A device's remapped interrupts, vendor-neutral: its entries are built (all blocked) when it
//! is added; its owner programs entry i → a host vector and gets back the MSI address / data
//! the device must use; leaving its guest (deassign, destroy, reassign) blocks them all again,
//! without allocating, their invalidations riding in the owner switch's one batch.
//!
//! Only the owning guest's requests are honoured: a quarantined device has no programmable
//! entries, and the source-ID check (VT-d) or the per-device table (AMD-Vi) keeps another
//! device from using them.
use lazaret_types::Sbdf;

use super::errors::PassthroughError;
use super::iommu::{InterruptTarget, MsiAddress, Vendor};
use super::lock::DevicesGuard;
use super::registry::{Group, State};
use super::LockHeld;
use crate::domain::DomainId;

/// Entry `entry` of `sbdf` (owned by guest `domain`) → `target`; returns what the device's
/// MSI capability must hold. Refused for a device `domain` does not own (DomIO included: a
/// quarantined device's interrupts stay blocked) or without that entry.
pub fn program_interrupt<V: Vendor>(
    g: &mut DevicesGuard<'_, V>,
    domain: DomainId,
    sbdf: Sbdf,
    entry: u16,
    target: InterruptTarget,
) -> Result<MsiAddress, PassthroughError> {
    let (held, s) = g.split();
    let unit = owned_entry(s, domain, sbdf, entry)?;
    let Some(irq) = s.interrupts.get(&sbdf) else {
        return Err(PassthroughError::NoInterruptEntry { sbdf, entry });
    };
    Ok(s.vendor.program_interrupt(held, unit, irq, entry, target)?)
}

/// Entry `entry` of `sbdf` (owned by guest `domain`) → blocked. Never allocates.
pub fn block_interrupt<V: Vendor>(
    g: &mut DevicesGuard<'_, V>,
    domain: DomainId,
    sbdf: Sbdf,
    entry: u16,
) -> Result<(), PassthroughError> {
    let (held, s) = g.split();
    let unit = owned_entry(s, domain, sbdf, entry)?;
    let Some(irq) = s.interrupts.get(&sbdf) else {
        return Err(PassthroughError::NoInterruptEntry { sbdf, entry });
    };
    Ok(s.vendor.block_interrupt(held, unit, irq, entry)?)
}

/// The unit of `sbdf` if guest `domain` owns it and it has entry `entry`.
fn owned_entry<V: Vendor>(
    s: &State<V>,
    domain: DomainId,
    sbdf: Sbdf,
    entry: u16,
) -> Result<usize, PassthroughError> {
    let d = s
        .devices
        .get(&sbdf)
        .ok_or(PassthroughError::UnknownDevice(sbdf))?;
    if d.owner != domain || domain == s.domains.dom_io {
        return Err(PassthroughError::NotOwner {
            sbdf,
            owner: d.owner,
        });
    }
    match s.interrupts.get(&sbdf) {
        Some(irq) if entry < s.vendor.interrupt_count(irq) => Ok(d.unit),
        _ => Err(PassthroughError::NoInterruptEntry { sbdf, entry }),
    }
}

/// Every entry of every member of `group` blocked in memory, their invalidations queued in
/// the owner switch's `batch` (the group leaves its guest): no interrupt of theirs reaches the
/// old owner once that batch's one wait completes. Never allocates, never fails: an entry that
/// could not be blocked is logged and counted; the switch reports a wait that timed out.
/// Returns whether anything was queued.
pub(super) fn block_group_interrupts<V: Vendor>(
    held: &LockHeld,
    s: &mut State<V>,
    group: &Group,
    batch: &mut V::Batch,
) -> bool {
    let State {
        vendor,
        devices,
        interrupts,
        stats,
        ..
    } = s;
    let mut queued = false;
    for member in group {
        let (Some(d), Some(irq)) = (devices.get(member), interrupts.get(member)) else {
            continue;
        };
        queued = true;
        if let Err(e) = vendor.block_interrupts(held, d.unit, batch, irq) {
            stats.interrupt_block_failures += 1;
            log::error!("passthrough: blocking {member}'s interrupts: {e}");
        }
    }
    queued
}
