//! The passthrough core: the device registry, DomIO quarantine, and the assignment API, all
//! behind the one coarse device lock.
//!
//! Rules every operation keeps (design.md §4):
//! - everything that can fail (tables, scratch page, domain IDs) is obtained when a device is
//!   added or a domain created; deassign and destroy never allocate and never fail;
//! - an owner switch writes each entry once, atomically, never through not-present, then
//!   invalidates for the previous domain with one bounded wait;
//! - a refused request changes nothing.
pub mod faults;
pub mod iommu;
pub mod lock;
pub mod requester;

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use lazaret_types::{Bdf, FrameAllocator, PhysAddr, Sbdf, PAGE_SIZE};
use spinning_top::Spinlock;

use crate::cmdline::QuarantineMode;
use crate::domain::{Domain, DomainId, DomainKind, Domains, GuestMemory};
use faults::FaultCounter;
use iommu::{
    DeviceSpec, DmaFault, Iommu, IommuError, QuarantineInfo, RequesterIds, ReservedRange,
    SwitchCost,
};
pub use lock::{DeviceLock, DevicesGuard, LockHeld};

/// What kind of PCI function a device is: it decides which requester IDs its DMA carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// A PCI Express endpoint (or root-complex integrated one): its own requester ID.
    PcieEndpoint,
    /// Conventional PCI: behind a bridge its DMA may carry the bridge's ID instead.
    ConventionalPci,
    /// A PCI-to-PCI bridge or PCIe port (type 1 header).
    Bridge,
}

impl DeviceKind {
    pub fn of(f: &lazaret_pci::PciFunction) -> DeviceKind {
        match (f.header, f.pcie.is_some()) {
            (lazaret_pci::HeaderKind::Bridge { .. }, _) => DeviceKind::Bridge,
            (_, true) => DeviceKind::PcieEndpoint,
            (_, false) => DeviceKind::ConventionalPci,
        }
    }
}

/// One PCI function as the core tracks it.
#[derive(Clone, Debug)]
pub struct Device {
    pub sbdf: Sbdf,
    pub kind: DeviceKind,
    pub requester_ids: Vec<Bdf>,
    pub reserved: Vec<ReservedRange>,
    pub owner: DomainId,
    pub quarantine: QuarantineInfo,
    pub faults: FaultCounter,
    pub bus_master_disabled: bool,
}

impl Device {
    fn spec<'a>(&'a self, moving: &'a [Bdf]) -> DeviceSpec<'a> {
        DeviceSpec {
            sbdf: self.sbdf,
            requester_ids: &self.requester_ids,
            moving,
            reserved: &self.reserved,
        }
    }
}

/// The other registered devices whose DMA also carries `rid` (bridge aliases).
fn sharers<'a>(
    devices: &'a BTreeMap<Sbdf, Device>,
    sbdf: Sbdf,
    rid: Bdf,
) -> impl Iterator<Item = &'a Device> + 'a {
    devices.values().filter(move |d| {
        d.sbdf != sbdf && d.sbdf.segment == sbdf.segment && d.requester_ids.contains(&rid)
    })
}

/// Counters behind the FIGURE lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub owner_switches: u64,
    pub last_switch: SwitchCost,
    pub switch_timeouts: u64,
    pub fault_log: faults::LogLimiter,
}

/// Everything the device lock guards.
pub struct State<I: Iommu> {
    pub iommu: I,
    pub domains: Domains,
    pub devices: BTreeMap<Sbdf, Device>,
    pub mode: QuarantineMode,
    pub stats: Stats,
}

impl<I: Iommu> State<I> {
    pub fn new(iommu: I, mode: QuarantineMode) -> State<I> {
        State {
            iommu,
            domains: Domains::new(),
            devices: BTreeMap::new(),
            mode,
            stats: Stats::default(),
        }
    }

    /// The device whose DMA carries `rid` in `segment`.
    pub fn device_by_requester(&self, segment: u16, rid: Bdf) -> Option<&Device> {
        self.devices
            .values()
            .find(|d| d.sbdf.segment == segment && d.requester_ids.contains(&rid))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PassthroughError {
    UnknownDevice(Sbdf),
    DeviceExists(Sbdf),
    UnknownDomain(DomainId),
    NotAGuest(DomainId),
    AlreadyAssigned {
        sbdf: Sbdf,
        owner: DomainId,
    },
    NotOwner {
        sbdf: Sbdf,
        owner: DomainId,
    },
    /// Another device's DMA carries the same requester ID: moving one entry would move both.
    SharedAlias {
        sbdf: Sbdf,
        alias: Bdf,
        other: Sbdf,
    },
    /// Another device's RMRR / unity range overlaps this one's.
    SharedReserved {
        sbdf: Sbdf,
        other: Sbdf,
    },
    /// A reserved range lies inside the guest's memory, where it would shadow guest pages.
    ReservedInGuestMemory {
        sbdf: Sbdf,
        range: ReservedRange,
    },
    /// More requester IDs than an owner switch handles without allocating.
    TooManyRequesterIds {
        sbdf: Sbdf,
        count: usize,
    },
    Iommu(IommuError),
}

impl fmt::Display for PassthroughError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use PassthroughError::*;
        match self {
            UnknownDevice(s) => write!(f, "no device {s}"),
            DeviceExists(s) => write!(f, "device {s} is already registered"),
            UnknownDomain(d) => write!(f, "no domain {d:?} (destroyed or never created)"),
            NotAGuest(d) => write!(f, "domain {d:?} is a system domain, not a guest"),
            AlreadyAssigned { sbdf, owner } => write!(f, "{sbdf} is already assigned to {owner:?}"),
            NotOwner { sbdf, owner } => write!(f, "{sbdf} belongs to {owner:?}, not to the caller"),
            SharedAlias { sbdf, alias, other } => write!(
                f,
                "{sbdf} shares requester ID {alias} with {other}, which stays put: the alias cannot move atomically"
            ),
            SharedReserved { sbdf, other } => write!(f, "{sbdf} shares a reserved (RMRR/unity) range with {other}"),
            ReservedInGuestMemory { sbdf, range } => write!(
                f,
                "{sbdf}'s reserved range {:#x}-{:#x} lies inside the guest's memory",
                range.start, range.end
            ),
            TooManyRequesterIds { sbdf, count } => write!(
                f,
                "{sbdf} carries {count} requester IDs; at most {} are supported",
                iommu::MAX_REQUESTER_IDS
            ),
            Iommu(e) => write!(f, "IOMMU: {e}"),
        }
    }
}

impl From<IommuError> for PassthroughError {
    fn from(e: IommuError) -> Self {
        PassthroughError::Iommu(e)
    }
}

type Guard<'a, I> = DevicesGuard<'a, State<I>>;

/// Registers a device and puts it in quarantine; everything it will need later is reserved
/// now.
pub fn add_device<I: Iommu>(
    g: &mut Guard<'_, I>,
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
    if requester_ids.len() > iommu::MAX_REQUESTER_IDS {
        return Err(PassthroughError::TooManyRequesterIds {
            sbdf,
            count: requester_ids.len(),
        });
    }
    // An alias another device already uses stays with it; joining a group whose members
    // are not all quarantined would hand this device's DMA to their owner.
    let mut moving = Vec::new();
    for rid in &requester_ids {
        match sharers(&s.devices, sbdf, *rid).find(|o| o.owner != s.domains.dom_io) {
            Some(other) => {
                return Err(PassthroughError::SharedAlias {
                    sbdf,
                    alias: *rid,
                    other: other.sbdf,
                })
            }
            None if sharers(&s.devices, sbdf, *rid).next().is_none() => moving.push(*rid),
            None => {}
        }
    }
    let spec = DeviceSpec {
        sbdf,
        requester_ids: &requester_ids,
        moving: &moving,
        reserved: &reserved,
    };
    let quarantine = s.iommu.add_device(held, alloc, &spec, s.mode)?;
    let owner = s.domains.dom_io;
    s.devices.insert(
        sbdf,
        Device {
            sbdf,
            kind,
            requester_ids,
            reserved,
            owner,
            quarantine,
            faults: FaultCounter::default(),
            bus_master_disabled: false,
        },
    );
    Ok(quarantine)
}

/// Creates a guest with `pages` pages of memory (host frames, mapped 1:1 at guest-physical
/// 0 in its IOMMU tables). On failure nothing stays allocated.
pub fn create_domain<I: Iommu>(
    g: &mut Guard<'_, I>,
    alloc: &mut dyn FrameAllocator,
    name: &str,
    pages: usize,
) -> Result<DomainId, PassthroughError> {
    let (held, s) = g.split();
    let mut frames = Vec::with_capacity(pages);
    for _ in 0..pages {
        match alloc.alloc_frame() {
            Some(f) => frames.push(f),
            None => {
                frames.into_iter().for_each(|f| alloc.free_frame(f));
                return Err(IommuError::OutOfMemory.into());
            }
        }
    }
    let mut tables = match s.iommu.create_domain(held, alloc) {
        Ok(t) => t,
        Err(e) => {
            frames.into_iter().for_each(|f| alloc.free_frame(f));
            return Err(e.into());
        }
    };
    for (i, frame) in frames.iter().enumerate() {
        if let Err(e) = s
            .iommu
            .map(&mut tables, alloc, i as u64 * PAGE_SIZE, *frame, true)
        {
            s.iommu.destroy_domain(held, alloc, tables);
            frames.into_iter().for_each(|f| alloc.free_frame(f));
            return Err(e.into());
        }
    }
    Ok(s.domains.insert(Domain {
        kind: DomainKind::Guest,
        name: name.into(),
        memory: GuestMemory::new(frames),
        iommu: Some(Spinlock::new(tables)),
    }))
}

fn guest(domains: &Domains, id: DomainId) -> Result<&Domain, PassthroughError> {
    let d = domains.get(id).ok_or(PassthroughError::UnknownDomain(id))?;
    if d.kind != DomainKind::Guest {
        return Err(PassthroughError::NotAGuest(id));
    }
    Ok(d)
}

/// Gives `sbdf` to guest `domain`. Refused requests change nothing.
pub fn assign<I: Iommu>(
    g: &mut Guard<'_, I>,
    alloc: &mut dyn FrameAllocator,
    domain: DomainId,
    sbdf: Sbdf,
) -> Result<SwitchCost, PassthroughError> {
    let (held, s) = g.split();
    let guest_domain = guest(&s.domains, domain)?;
    let dev = s
        .devices
        .get(&sbdf)
        .ok_or(PassthroughError::UnknownDevice(sbdf))?;
    if dev.owner != s.domains.dom_io {
        return Err(PassthroughError::AlreadyAssigned {
            sbdf,
            owner: dev.owner,
        });
    }
    for other in s
        .devices
        .values()
        .filter(|o| o.sbdf != sbdf && o.sbdf.segment == sbdf.segment)
    {
        if let Some(alias) = dev
            .requester_ids
            .iter()
            .find(|r| other.requester_ids.contains(r))
        {
            if other.owner != domain {
                return Err(PassthroughError::SharedAlias {
                    sbdf,
                    alias: *alias,
                    other: other.sbdf,
                });
            }
        }
        if dev
            .reserved
            .iter()
            .any(|r| other.reserved.iter().any(|o| r.overlaps(o)))
        {
            return Err(PassthroughError::SharedReserved {
                sbdf,
                other: other.sbdf,
            });
        }
    }
    let memory_end = guest_domain.memory.size();
    if let Some(range) = dev.reserved.iter().find(|r| r.start < memory_end) {
        return Err(PassthroughError::ReservedInGuestMemory {
            sbdf,
            range: *range,
        });
    }
    let tables_lock = guest_domain
        .iommu
        .as_ref()
        .ok_or(PassthroughError::NotAGuest(domain))?;
    let mut tables = tables_lock.lock();
    // Reserved ranges go into the target before the switch, so the device never loses them.
    let mut mapped: Vec<u64> = Vec::new();
    for r in &dev.reserved {
        let mut page = r.start & !(PAGE_SIZE - 1);
        while page <= r.end {
            if let Err(e) = s.iommu.map(&mut tables, alloc, page, PhysAddr(page), true) {
                for p in mapped {
                    s.iommu.unmap(&mut tables, p);
                }
                return Err(e.into());
            }
            mapped.push(page);
            page += PAGE_SIZE;
        }
    }
    let cost = match s.iommu.attach(held, &dev.spec(&dev.requester_ids), &tables) {
        Ok(c) => c,
        Err(e) => {
            for p in mapped {
                s.iommu.unmap(&mut tables, p);
            }
            return Err(e.into());
        }
    };
    drop(tables);
    record_switch(&mut s.stats, cost);
    if let Some(d) = s.devices.get_mut(&sbdf) {
        d.owner = domain;
    }
    Ok(cost)
}

fn record_switch(stats: &mut Stats, cost: SwitchCost) {
    stats.owner_switches += 1;
    stats.last_switch = cost;
    if cost.timed_out {
        stats.switch_timeouts += 1;
        log::error!("passthrough: invalidation wait timed out; entries switched, caches may lag");
    }
}

/// Takes `sbdf` back from `domain` into quarantine. Never allocates; fails only when the
/// caller does not own the device.
pub fn deassign<I: Iommu>(
    g: &mut Guard<'_, I>,
    domain: DomainId,
    sbdf: Sbdf,
) -> Result<SwitchCost, PassthroughError> {
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
    // Aliases shared with a device that stays in the domain stay with it.
    // (add_device bounded the count, so the stack set holds them all: no allocation here.)
    let moving: RequesterIds = dev
        .requester_ids
        .iter()
        .copied()
        .filter(|rid| !sharers(&s.devices, sbdf, *rid).any(|o| o.owner == domain))
        .take(iommu::MAX_REQUESTER_IDS)
        .collect();
    let cost = s.iommu.quarantine(held, &dev.spec(&moving));
    record_switch(&mut s.stats, cost);
    // Reserved ranges leave the source after the switch, unless another of its devices
    // still needs them.
    let still_needed = |r: &ReservedRange| {
        s.devices
            .values()
            .any(|o| o.owner == domain && o.sbdf != sbdf && o.reserved.contains(r))
    };
    if let Some(tables_lock) = s.domains.get(domain).and_then(|d| d.iommu.as_ref()) {
        let mut tables = tables_lock.lock();
        for r in dev.reserved.iter().filter(|r| !still_needed(r)) {
            let mut page = r.start & !(PAGE_SIZE - 1);
            while page <= r.end {
                s.iommu.unmap(&mut tables, page);
                page += PAGE_SIZE;
            }
        }
    }
    if let Some(d) = s.devices.get_mut(&sbdf) {
        d.owner = s.domains.dom_io;
    }
    Ok(cost)
}

/// Destroys a guest: its devices go to quarantine first, then its tables and memory are
/// freed. Never allocates.
pub fn destroy_domain<I: Iommu>(
    g: &mut Guard<'_, I>,
    alloc: &mut dyn FrameAllocator,
    domain: DomainId,
) -> Result<(), PassthroughError> {
    guest(&g.state().domains, domain)?;
    // One device at a time, without collecting them: destroy must not allocate.
    while let Some(sbdf) = g
        .state()
        .devices
        .values()
        .find(|d| d.owner == domain)
        .map(|d| d.sbdf)
    {
        deassign(g, domain, sbdf)?;
    }
    let (held, s) = g.split();
    let Some(mut d) = s.domains.remove(domain) else {
        return Err(PassthroughError::UnknownDomain(domain));
    };
    if let Some(tables) = d.iommu.take() {
        s.iommu.destroy_domain(held, alloc, tables.into_inner());
    }
    d.memory
        .take_frames()
        .into_iter()
        .for_each(|f| alloc.free_frame(f));
    Ok(())
}

/// What one drain of the fault logs found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultReport {
    pub faults: usize,
    pub overflowed: usize,
    pub suppressed: usize,
    /// Devices that crossed the threshold in this drain and lost Bus Master Enable.
    pub disabled: Vec<Sbdf>,
    pub recorded: Vec<DmaFault>,
}

/// Drains the IOMMU's fault records: logs them (rate-limited), counts them per device, and
/// clears Bus Master Enable (through `disable_bus_master`) on devices past the threshold.
pub fn drain_faults<I: Iommu>(
    g: &mut Guard<'_, I>,
    now_ms: u64,
    disable_bus_master: &mut dyn FnMut(Sbdf) -> bool,
) -> FaultReport {
    let (_, s) = g.split();
    let mut report = FaultReport::default();
    let mut faults = Vec::new();
    report.overflowed = s.iommu.drain_faults(&mut |f| faults.push(f));
    for f in faults {
        report.faults += 1;
        let device = s
            .devices
            .values_mut()
            .find(|d| d.sbdf.segment == f.segment && d.requester_ids.contains(&f.requester));
        let (owner, sbdf): (Option<DomainId>, Option<Sbdf>) = match device {
            Some(d) => {
                let score = d.faults.record(now_ms);
                if score >= faults::THRESHOLD && !d.bus_master_disabled {
                    d.bus_master_disabled = disable_bus_master(d.sbdf);
                    if d.bus_master_disabled {
                        report.disabled.push(d.sbdf);
                        log::warn!(
                            "fault: {} exceeded {} faults; Bus Master Enable cleared, its DMA is stopped",
                            d.sbdf,
                            faults::THRESHOLD
                        );
                    }
                }
                (Some(d.owner), Some(d.sbdf))
            }
            None => (None, None),
        };
        if s.stats.fault_log.allow(now_ms) {
            let owner_name = owner
                .and_then(|o| s.domains.get(o))
                .map_or("none", |d| d.name.as_str());
            log::warn!(
                "fault: {:04x}:{} {} at {:#x}: {} (device {}, domain {})",
                f.segment,
                f.requester,
                if f.write { "write" } else { "read" },
                f.address,
                f.reason,
                sbdf.map_or_else(|| String::from("unknown"), |s| alloc::format!("{s}")),
                owner_name
            );
        } else {
            report.suppressed += 1;
        }
        report.recorded.push(f);
    }
    if report.suppressed > 0 {
        log::warn!(
            "fault: {} more fault(s) not logged (rate limit)",
            report.suppressed
        );
    }
    if report.overflowed > 0 {
        log::warn!(
            "fault: the fault log overflowed; {} fault(s) were not recorded",
            report.overflowed
        );
    }
    report
}

#[cfg(test)]
mod tests;
