//! The owner switch, written once for both vendors (design.md §4): every requester ID of an
//! alias group is pointed at its new owner with one atomic entry write each — never through
//! not-present — then what the hardware may cache of the old entries is invalidated in one
//! ordered batch with one bounded wait. When the group leaves a guest, its interrupt entries
//! are blocked in memory first and their invalidations ride in that same batch: one doorbell,
//! one wait, and the figures count every descriptor.
//!
//! When it does not go to plan, the report says so and the caller acts on it:
//! - the wait timed out: the entries are switched, but the caches may still hold the previous
//!   owner's translations and interrupt entries (counted as an interrupt block failure too), so that owner's frames, tables and domain IDs must not be freed
//!   (destroy flushes the owner's domain IDs first, and parks it if that flush fails too);
//! - an entry could not be written: every entry of the group is set to block, the group is
//!   marked blocked, and its ownership is not recorded as moved.
//!
//! Into quarantine, each requester ID that only one member emits reaches that member's own
//! tables; an ID that several emit (a bridge's own ID, the secondary bus's 00.0 alias)
//! reaches the group leader's (`State::leader`): the IOMMU cannot tell those DMAs apart, so
//! they land in one known scratch page. Every member's scratch page is zeroed first.
use lazaret_types::Bdf;

use super::interrupts::block_group_interrupts;
use super::iommu::{FlushCost, IommuError, Vendor};
use super::registry::{Device, Group, State};
use super::LockHeld;
use crate::domain::DomainId;

/// How one switch ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SwitchReport {
    /// The endpoint functions that moved (the alias group).
    pub moved: Group,
    /// The bridges the group carried with it (never counted as the guest's devices).
    pub carried: Group,
    pub cost: FlushCost,
    /// The invalidation did not complete: entries are switched, caches may lag.
    pub timed_out: Option<IommuError>,
    /// An entry could not be written: the group blocks all DMA and is marked blocked.
    pub failed: Option<IommuError>,
}

impl SwitchReport {
    pub fn clean(&self) -> bool {
        self.timed_out.is_none() && self.failed.is_none()
    }
}

/// Where a switch points the group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Target {
    /// Each member's own quarantine entry; IDs several members emit, the leader's.
    Quarantine,
    /// The guest's tables, on every requester ID of every member.
    Guest(DomainId),
}

/// Moves `group` (all behind one unit, checked when its members were added) to `target`.
pub(super) fn switch_group<V: Vendor>(
    held: &LockHeld,
    s: &mut State<V>,
    group: &Group,
    target: Target,
) -> SwitchReport {
    let Some(unit) = group.first().and_then(|m| s.devices.get(m)).map(|d| d.unit) else {
        return SwitchReport::default();
    };
    let mut batch = s.vendor.new_batch();
    let mut failed = None;
    let leader = s.leader(group);
    let dom_io = s.domains.dom_io;
    // Whatever the guest programmed must not follow the group out of it.
    let leaves_guest = group
        .iter()
        .filter_map(|m| s.devices.get(m))
        .any(|d| d.owner != dom_io);
    if target == Target::Quarantine {
        // The scratch pages are data: zeroed before any member returns to them.
        for dev in group.iter().filter_map(|m| s.devices.get(m)) {
            if let Some(q) = &dev.quarantine {
                s.vendor.zero_scratch(q);
            }
        }
    }
    let shared_entry = leader
        .and_then(|l| s.devices.get(&l))
        .map(|l| quarantine_entry(&s.vendor, l));
    'members: for (i, sbdf) in group.iter().enumerate() {
        let Some(dev) = s.devices.get(sbdf) else {
            continue;
        };
        let guest_entry = match target {
            Target::Quarantine => None,
            Target::Guest(id) => {
                let Some(guest) = s.guests.get(id.index() as usize).and_then(|g| g.as_ref()) else {
                    failed = Some(IommuError::Inconsistent("the guest has no tables".into()));
                    break 'members;
                };
                let Some(did) = guest.dids.get(unit).copied() else {
                    failed = Some(IommuError::Inconsistent("no domain ID on the unit".into()));
                    break 'members;
                };
                Some(s.vendor.guest_entry(&guest.tables.lock(), did))
            }
        };
        let own_entry = quarantine_entry(&s.vendor, dev);
        for rid in &dev.requester_ids {
            // A shared ID is written once, by the first member that emits it.
            let earlier = group[..i]
                .iter()
                .filter_map(|m| s.devices.get(m))
                .any(|d| d.requester_ids.contains(rid));
            if earlier {
                continue;
            }
            let new = match (guest_entry, shared_entry) {
                (Some(e), _) => e,
                (None, Some(e)) if s.shared_in_group(group, *sbdf, *rid) => e,
                (None, _) => own_entry,
            };
            if let Err(e) = write_entry(held, &mut s.vendor, unit, &mut batch, *rid, new) {
                failed = Some(e);
                break 'members;
            }
        }
    }
    if failed.is_some() {
        block_group(held, s, group, unit, &mut batch);
    }
    let interrupts_queued = leaves_guest && block_group_interrupts(held, s, group, &mut batch);
    let flushed = s.vendor.flush(held, unit, &batch);
    let mut report = SwitchReport {
        moved: s.members_of(group, false),
        carried: s.members_of(group, true),
        failed,
        ..SwitchReport::default()
    };
    match flushed {
        Ok(cost) => report.cost = cost,
        Err(e) => report.timed_out = Some(e),
    }
    if let Some(e) = &report.timed_out {
        s.stats.switch_timeouts += 1;
        if interrupts_queued {
            s.stats.interrupt_block_failures += 1;
        }
        log::error!(
            "passthrough: switch of {}: {e}; entries switched, caches may lag",
            group[0]
        );
    }
    if let Some(e) = &report.failed {
        s.stats.switch_failures += 1;
        log::error!(
            "passthrough: switch of {} failed: {e}; its DMA is blocked",
            group[0]
        );
    }
    report
}

/// The device's own quarantine entry: its tables, or blocking when it has none (mode none).
fn quarantine_entry<V: Vendor>(vendor: &V, dev: &Device<V::Quarantine>) -> V::Entry {
    match &dev.quarantine {
        Some(q) => vendor.quarantine_entry(q, dev.quarantine_did),
        None => vendor.blocked_entry(dev.quarantine_did),
    }
}

/// Counts an owner switch (add's first switch into quarantine is not one) for the figures.
pub(super) fn record<V: Vendor>(s: &mut State<V>, report: &SwitchReport) {
    s.stats.owner_switches += 1;
    s.stats.last_switch = report.cost;
}

/// One entry: read, compare, atomic exchange, and what the change owes the caches.
fn write_entry<V: Vendor>(
    held: &LockHeld,
    vendor: &mut V,
    unit: usize,
    batch: &mut V::Batch,
    rid: Bdf,
    new: V::Entry,
) -> Result<(), IommuError> {
    let old = vendor.read_entry(unit, rid)?;
    if old == new {
        return Ok(());
    }
    vendor.exchange(held, unit, rid, old, new)?;
    vendor.entry_changed(unit, batch, rid, old, new);
    Ok(())
}

/// After a failed write: every entry of every member blocks (best effort: a write that
/// fails again is logged), and the members are marked.
fn block_group<V: Vendor>(
    held: &LockHeld,
    s: &mut State<V>,
    group: &Group,
    unit: usize,
    batch: &mut V::Batch,
) {
    for sbdf in group {
        let Some(dev) = s.devices.get_mut(sbdf) else {
            continue;
        };
        dev.blocked = true;
        let blocked = s.vendor.blocked_entry(dev.quarantine_did);
        for rid in &dev.requester_ids {
            if let Err(e) = write_entry(held, &mut s.vendor, unit, batch, *rid, blocked) {
                log::error!("passthrough: cannot block {rid} of {sbdf}: {e}");
            }
        }
    }
}
