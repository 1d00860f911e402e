//! The assignment API: add a device (into quarantine), create a guest, assign an alias group
//! to it, deassign it back to quarantine, destroy the guest. Everything that can fail is
//! obtained by add and create; deassign and destroy never allocate.
use alloc::vec::Vec;

use lazaret_types::{Bdf, FrameAllocator, PhysAddr, Sbdf, PAGE_SIZE};
use spinning_top::Spinlock;

use super::dids::allocate_each;
use super::errors::PassthroughError;
use super::iommu::{IommuError, RequesterIds, ReservedRange, Vendor, INTERRUPTS_PER_DEVICE};
use super::lock::DevicesGuard;
use super::registry::{Device, DeviceKind, Group, Guest, State, MAX_GROUP};
use super::switch::{record, switch_group, SwitchReport, Target};
use super::LockHeld;
use crate::cmdline::QuarantineMode;
use crate::domain::{Domain, DomainId, DomainKind, GuestMemory};

/// What adding a device reserved for its quarantine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuarantineInfo {
    /// Table pages plus the scratch page (`levels + 1` in scratch mode without RMRR).
    pub pages: usize,
    /// The IOMMU's domain ID for this device while quarantined.
    pub hw_domain_id: u16,
}

/// Registers a device and puts it in quarantine; everything it will need later — entry
/// space, quarantine tables, scratch page, domain ID — is reserved now. Refusals and
/// allocation failures leave nothing behind.
pub fn add_device<V: Vendor>(
    g: &mut DevicesGuard<'_, V>,
    alloc: &mut dyn FrameAllocator,
    sbdf: Sbdf,
    kind: DeviceKind,
    requester_ids: Vec<Bdf>,
    reserved: Vec<ReservedRange>,
) -> Result<QuarantineInfo, PassthroughError> {
    let (held, s) = g.split();
    if s.devices.contains_key(&sbdf) {
        return Err(PassthroughError::DeviceExists(sbdf));
    }
    let count = requester_ids.len();
    let Ok(rids) = RequesterIds::from_slice(&requester_ids) else {
        return Err(PassthroughError::TooManyRequesterIds { sbdf, count });
    };
    let unit = s.vendor.unit_of(sbdf).ok_or(IommuError::NoUnit(sbdf))?;
    check_group_join(s, sbdf, unit, &rids)?;
    // Every requester ID is checked (and its bus given a table) before any entry is written.
    s.vendor.prepare(held, alloc, unit, &rids)?;
    let quarantine = match s.mode {
        QuarantineMode::None => None,
        mode => Some(s.vendor.build_quarantine(
            held,
            alloc,
            &reserved,
            mode == QuarantineMode::Scratch,
        )?),
    };
    // Its interrupt entries, all blocked, exist before it is ever quarantined or assigned:
    // quarantine later only blocks them again, without allocating.
    let interrupts =
        match s
            .vendor
            .build_interrupts(held, alloc, unit, &rids, INTERRUPTS_PER_DEVICE)
        {
            Ok(i) => i,
            Err(e) => {
                if let Some(q) = quarantine {
                    s.vendor.free_quarantine(alloc, q);
                }
                return Err(e.into());
            }
        };
    let Some(did) = s.dids.get_mut(unit).and_then(|d| d.allocate()) else {
        if let Some(q) = quarantine {
            s.vendor.free_quarantine(alloc, q);
        }
        if let Some(i) = interrupts {
            s.vendor.free_interrupts(held, alloc, unit, i);
        }
        return Err(IommuError::OutOfDomainIds.into());
    };
    if let Some(i) = interrupts {
        s.interrupts.insert(sbdf, i);
    }
    let pages = quarantine
        .as_ref()
        .map_or(0, |q| s.vendor.quarantine_pages(q));
    let owner = s.domains.dom_io;
    s.devices.insert(
        sbdf,
        Device {
            sbdf,
            kind,
            unit,
            requester_ids: rids,
            reserved,
            owner,
            quarantine,
            quarantine_did: did,
            pages,
            blocked: false,
            faults: Default::default(),
            interrupt_faults: 0,
            bus_master_disabled: false,
        },
    );
    // Joining a group can change its leader: the whole (quarantined) group is re-pointed.
    let group = s.group_of(sbdf);
    let report = switch_group(held, s, &group, Target::Quarantine);
    if let Some(e) = report.failed {
        // Registered and blocked: its tables stay reserved, since an entry may reach them.
        return Err(e.into());
    }
    Ok(QuarantineInfo {
        pages,
        hw_domain_id: did,
    })
}

/// Checks that the alias group a new device joins is quarantined, behind its unit, and not
/// too big.
fn check_group_join<V: Vendor>(
    s: &State<V>,
    sbdf: Sbdf,
    unit: usize,
    rids: &RequesterIds,
) -> Result<(), PassthroughError> {
    let mut joined = Group::new();
    for rid in rids {
        for other in s
            .devices
            .values()
            .filter(|o| o.sbdf.segment == sbdf.segment && o.requester_ids.contains(rid))
        {
            if other.owner != s.domains.dom_io {
                return Err(PassthroughError::SharedAlias {
                    sbdf,
                    alias: *rid,
                    other: other.sbdf,
                });
            }
            if other.unit != unit {
                return Err(PassthroughError::GroupSpansUnits {
                    sbdf,
                    other: other.sbdf,
                });
            }
            for member in s.group_of(other.sbdf) {
                if !joined.contains(&member) && joined.push(member).is_err() {
                    return Err(PassthroughError::GroupTooLarge(sbdf));
                }
            }
        }
    }
    if joined.len() >= MAX_GROUP {
        return Err(PassthroughError::GroupTooLarge(sbdf));
    }
    Ok(())
}

/// Creates a guest with `pages` pages of memory, in 2 MiB blocks where the allocator has
/// them, mapped 1:1 at guest-physical 0 in its IOMMU tables from its memory map — 2 MiB
/// pages wherever a run allows. On failure nothing stays allocated.
pub fn create_domain<V: Vendor>(
    g: &mut DevicesGuard<'_, V>,
    alloc: &mut dyn FrameAllocator,
    name: &str,
    pages: usize,
) -> Result<DomainId, PassthroughError> {
    let (_, s) = g.split();
    let Some(mut memory) = GuestMemory::allocate(alloc, pages) else {
        return Err(IommuError::OutOfMemory.into());
    };
    let mut tables = match s.vendor.create_tables(alloc) {
        Ok(t) => t,
        Err(e) => {
            memory.free(alloc);
            return Err(e.into());
        }
    };
    // Never programmed yet: these IDs can go straight back on failure.
    let Some(dids) = allocate_each(s.dids.iter_mut()) else {
        s.vendor.free_tables(alloc, tables);
        memory.free(alloc);
        return Err(IommuError::OutOfDomainIds.into());
    };
    let mapped = memory.iommu_pages().try_for_each(|(gpa, hpa, size)| {
        s.vendor
            .map_sized(&mut tables, alloc, &dids, gpa, hpa, size, true)
    });
    if let Err(e) = mapped {
        s.vendor.free_tables(alloc, tables);
        super::dids::release_each(s.dids.iter_mut(), &dids);
        memory.free(alloc);
        return Err(e.into());
    }
    let id = s.domains.insert(Domain {
        kind: DomainKind::Guest,
        name: name.into(),
        memory,
    });
    let slot = id.index() as usize;
    if s.guests.len() <= slot {
        s.guests.resize_with(slot + 1, || None);
    }
    s.guests[slot] = Some(Guest {
        tables: Spinlock::new(tables),
        dids,
        parked: false,
    });
    Ok(id)
}

/// Gives `sbdf` — with every device of its alias group, and the bridges the group carries —
/// to guest `domain`. A bridge itself is refused ([`PassthroughError::Bridge`]): it moves
/// only with its group. Refused requests change nothing.
pub fn assign<V: Vendor>(
    g: &mut DevicesGuard<'_, V>,
    alloc: &mut dyn FrameAllocator,
    domain: DomainId,
    sbdf: Sbdf,
) -> Result<SwitchReport, PassthroughError> {
    let (held, s) = g.split();
    let dom_io = s.domains.dom_io;
    move_to_guest(held, s, alloc, dom_io, domain, sbdf)
}

/// Moves `sbdf` — with its alias group and carried bridges — straight from guest `from` to
/// guest `to` in one switch, never through quarantine: DMA in flight lands in one of the two
/// owners' memory. `from`'s reserved ranges leave it after the switch. Refused requests
/// (the caller does not own the device, or anything [`assign`] refuses) change nothing.
pub fn reassign<V: Vendor>(
    g: &mut DevicesGuard<'_, V>,
    alloc: &mut dyn FrameAllocator,
    from: DomainId,
    to: DomainId,
    sbdf: Sbdf,
) -> Result<SwitchReport, PassthroughError> {
    let (held, s) = g.split();
    check_guest(s, from)?;
    if from == to {
        return Err(PassthroughError::AlreadyAssigned { sbdf, owner: to });
    }
    move_to_guest(held, s, alloc, from, to, sbdf)
}

/// The switch into guest `to` that assign (`from` = DomIO) and reassign share.
fn move_to_guest<V: Vendor>(
    held: &LockHeld,
    s: &mut State<V>,
    alloc: &mut dyn FrameAllocator,
    from: DomainId,
    to: DomainId,
    sbdf: Sbdf,
) -> Result<SwitchReport, PassthroughError> {
    let domain = to;
    check_guest(s, domain)?;
    match s.devices.get(&sbdf) {
        None => return Err(PassthroughError::UnknownDevice(sbdf)),
        Some(d) if d.kind == DeviceKind::Bridge => return Err(PassthroughError::Bridge(sbdf)),
        Some(_) => {}
    }
    let group = s.group_of(sbdf);
    let memory_end = s.domains.get(domain).map_or(0, |d| d.memory.size());
    for member in group.iter().filter_map(|m| s.devices.get(m)) {
        if member.blocked {
            return Err(PassthroughError::Blocked(member.sbdf));
        }
        if s.intremap_required && !s.vendor.interrupt_remapping(member.unit) {
            return Err(PassthroughError::NoInterruptRemapping(member.sbdf));
        }
        if member.owner != from {
            let (sbdf, owner) = (member.sbdf, member.owner);
            return Err(if from == s.domains.dom_io || owner == to {
                PassthroughError::AlreadyAssigned { sbdf, owner }
            } else {
                PassthroughError::NotOwner { sbdf, owner }
            });
        }
        if let Some(other) = s.devices.values().find(|o| {
            !group.contains(&o.sbdf)
                && member
                    .reserved
                    .iter()
                    .any(|r| o.reserved.iter().any(|x| r.overlaps(x)))
        }) {
            return Err(PassthroughError::SharedReserved {
                sbdf: member.sbdf,
                other: other.sbdf,
            });
        }
        if let Some(range) = member.reserved.iter().find(|r| r.start < memory_end) {
            return Err(PassthroughError::ReservedInGuestMemory {
                sbdf: member.sbdf,
                range: *range,
            });
        }
    }
    // Reserved ranges go into the target before the switch, so the devices never lose them.
    let mapped = map_reserved(s, alloc, domain, &group)?;
    let report = switch_group(held, s, &group, Target::Guest(domain));
    record(s, &report);
    if let Some(e) = report.failed.clone() {
        unmap_pages(s, domain, &mapped);
        return Err(e.into());
    }
    for member in &group {
        if let Some(d) = s.devices.get_mut(member) {
            d.owner = domain;
        }
    }
    if from != s.domains.dom_io {
        release_reserved(s, from, &group);
    }
    Ok(report)
}

fn check_guest<V: Vendor>(s: &State<V>, id: DomainId) -> Result<(), PassthroughError> {
    if s.domains.get(id).is_none() {
        return Err(PassthroughError::UnknownDomain(id));
    }
    match s.guest(id) {
        Some(_) => Ok(()),
        None if s.domains.is_guest(id) => Err(PassthroughError::UnknownDomain(id)),
        None => Err(PassthroughError::NotAGuest(id)),
    }
}

/// Maps every reserved page of the group into the guest; on failure unmaps what it mapped.
fn map_reserved<V: Vendor>(
    s: &mut State<V>,
    alloc: &mut dyn FrameAllocator,
    domain: DomainId,
    group: &Group,
) -> Result<Vec<u64>, PassthroughError> {
    let mut mapped = Vec::new();
    let Some(guest) = s
        .guests
        .get(domain.index() as usize)
        .and_then(|g| g.as_ref())
    else {
        return Ok(mapped);
    };
    let mut tables = guest.tables.lock();
    for r in group
        .iter()
        .filter_map(|m| s.devices.get(m))
        .flat_map(|d| d.reserved.iter())
    {
        let mut page = r.start & !(PAGE_SIZE - 1);
        while page <= r.end {
            let result = s.vendor.map(
                &mut tables,
                alloc,
                &guest.dids,
                page,
                PhysAddr(page),
                r.write,
            );
            if let Err(e) = result {
                for p in &mapped {
                    let _ = s.vendor.unmap(&mut tables, &guest.dids, *p);
                }
                return Err(e.into());
            }
            mapped.push(page);
            page += PAGE_SIZE;
        }
    }
    Ok(mapped)
}

fn unmap_pages<V: Vendor>(s: &mut State<V>, domain: DomainId, pages: &[u64]) {
    let Some(guest) = s
        .guests
        .get_mut(domain.index() as usize)
        .and_then(|g| g.as_mut())
    else {
        return;
    };
    let mut tables = guest.tables.lock();
    for p in pages {
        // An unmap whose invalidation did not complete leaves a page the guest may still
        // reach through a cache: destroy flushes every domain ID before it frees anything.
        let _ = s.vendor.unmap(&mut tables, &guest.dids, *p);
    }
}

/// Takes `sbdf` — with its alias group and the bridges it carries — back from `domain` into
/// quarantine. Never allocates; fails only when the caller does not own the device, or names
/// a carried bridge (which moves only with its group). A switch that times out
/// or fails is in the report; the device is quarantined (or blocked) either way.
pub fn deassign<V: Vendor>(
    g: &mut DevicesGuard<'_, V>,
    domain: DomainId,
    sbdf: Sbdf,
) -> Result<SwitchReport, PassthroughError> {
    let (held, s) = g.split();
    let dev = s
        .devices
        .get(&sbdf)
        .ok_or(PassthroughError::UnknownDevice(sbdf))?;
    if dev.owner != domain || domain == s.domains.dom_io {
        return Err(PassthroughError::NotOwner {
            sbdf,
            owner: dev.owner,
        });
    }
    if dev.kind == DeviceKind::Bridge {
        return Err(PassthroughError::Bridge(sbdf));
    }
    Ok(take_back(held, s, domain, sbdf))
}

fn take_back<V: Vendor>(
    held: &LockHeld,
    s: &mut State<V>,
    domain: DomainId,
    sbdf: Sbdf,
) -> SwitchReport {
    let group = s.group_of(sbdf);
    // The switch blocks whatever the guest programmed, in its one batch.
    let report = switch_group(held, s, &group, Target::Quarantine);
    record(s, &report);
    let dom_io = s.domains.dom_io;
    for member in &group {
        if let Some(d) = s.devices.get_mut(member) {
            d.owner = dom_io;
        }
    }
    release_reserved(s, domain, &group);
    report
}

/// After `group` left guest `domain`: its reserved ranges leave the guest's tables (unless
/// another of its devices still needs them). Never allocates; an invalidation that does not
/// complete is covered by destroy, which flushes every domain ID before it frees anything.
fn release_reserved<V: Vendor>(s: &mut State<V>, domain: DomainId, group: &Group) {
    let State {
        vendor,
        devices,
        guests,
        ..
    } = s;
    let Some(guest) = guests
        .get_mut(domain.index() as usize)
        .and_then(|g| g.as_mut())
    else {
        return;
    };
    let mut tables = guest.tables.lock();
    for r in group
        .iter()
        .filter_map(|m| devices.get(m))
        .flat_map(|d| d.reserved.iter())
    {
        let still_needed = devices
            .values()
            .any(|o| o.owner == domain && o.reserved.contains(r));
        if still_needed {
            continue;
        }
        let mut page = r.start & !(PAGE_SIZE - 1);
        while page <= r.end {
            let _ = vendor.unmap(&mut tables, &guest.dids, page);
            page += PAGE_SIZE;
        }
    }
}

/// How a destroy ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DestroyReport {
    /// Devices (endpoint functions) taken back into quarantine.
    pub devices: usize,
    /// Bridges their alias groups carried back with them.
    pub carried_bridges: usize,
    /// An invalidation did not complete: the guest's frames, tables and domain IDs are held
    /// back (parked) until [`reclaim_parked`] flushes them successfully.
    pub parked: bool,
}

/// Destroys a guest: its devices go to quarantine first, then its domain IDs are flushed,
/// then its tables and memory are freed — or parked, if the hardware may still reach them.
/// Never allocates.
pub fn destroy_domain<V: Vendor>(
    g: &mut DevicesGuard<'_, V>,
    alloc: &mut dyn FrameAllocator,
    domain: DomainId,
) -> Result<DestroyReport, PassthroughError> {
    let (held, s) = g.split();
    check_guest(s, domain)?;
    let mut report = DestroyReport::default();
    // One group at a time, without collecting them: destroy must not allocate.
    while let Some(sbdf) = s
        .devices
        .values()
        .find(|d| d.owner == domain)
        .map(|d| d.sbdf)
    {
        let back = take_back(held, s, domain, sbdf);
        report.devices += back.moved.len();
        report.carried_bridges += back.carried.len();
    }
    if let Some(guest) = s
        .guests
        .get_mut(domain.index() as usize)
        .and_then(|g| g.as_mut())
    {
        guest.parked = true;
    }
    report.parked = !reclaim(held, s, alloc, domain);
    if report.parked {
        s.stats.parked_domains += 1;
        log::error!(
            "passthrough: domain {domain} parked: the IOMMU may still reach its memory, which is kept until a flush succeeds"
        );
    }
    Ok(report)
}

/// Flushes every domain ID of the parked guest `domain`; when all complete, frees its tables,
/// memory and IDs and removes it. Returns whether it was freed.
fn reclaim<V: Vendor>(
    held: &LockHeld,
    s: &mut State<V>,
    alloc: &mut dyn FrameAllocator,
    domain: DomainId,
) -> bool {
    let slot = domain.index() as usize;
    let Some(guest) = s.guests.get(slot).and_then(|g| g.as_ref()) else {
        return false;
    };
    // A domain ID is flushed before it is reused: whatever a device refilled under it
    // after its own switch is gone before another guest gets it.
    let mut flushed = true;
    for (unit, did) in guest.dids.iter().enumerate() {
        let mut batch = s.vendor.new_batch();
        s.vendor.domain_retired(&mut batch, *did);
        if let Err(e) = s.vendor.flush(held, unit, &batch) {
            log::error!("passthrough: flushing domain {domain}'s ID {did}: {e}");
            flushed = false;
        }
    }
    if !flushed {
        return false;
    }
    let Some(guest) = s.guests.get_mut(slot).and_then(Option::take) else {
        return false;
    };
    super::dids::release_each(s.dids.iter_mut(), &guest.dids);
    s.vendor.free_tables(alloc, guest.tables.into_inner());
    if let Some(mut d) = s.domains.remove(domain) {
        d.memory.free(alloc);
    }
    true
}

/// Retries every parked guest; returns how many were freed.
pub fn reclaim_parked<V: Vendor>(
    g: &mut DevicesGuard<'_, V>,
    alloc: &mut dyn FrameAllocator,
) -> usize {
    let (held, s) = g.split();
    let mut freed = 0;
    let mut skip = 0;
    loop {
        let next = s.parked_domains().nth(skip);
        let Some(id) = next else {
            return freed;
        };
        if reclaim(held, s, alloc, id) {
            freed += 1;
        } else {
            skip += 1;
        }
    }
}
