//! The device registry and everything else the device lock guards. Ownership fields are
//! private to the core: only add / assign / deassign / destroy change them, and only
//! together with the hardware.
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use lazaret_types::{Bdf, PhysAddr, Sbdf};
use spinning_top::Spinlock;

use super::dids::DomainIds;
use super::faults::{FaultCounter, LogLimiter};
use super::iommu::{FlushCost, Inspect, RequesterIds, ReservedRange, Vendor};
use crate::cmdline::QuarantineMode;
use crate::domain::{DomainId, Domains};

/// Most devices in one alias group (functions whose DMA shares a requester ID, with the
/// bridges it carries): a group moves in one switch, on the stack.
pub const MAX_GROUP: usize = 16;

/// The devices of an alias group, in SBDF order, on the stack: its endpoint functions and
/// the bridges it carries (see [`State::group_of`]).
pub type Group = heapless::Vec<Sbdf, MAX_GROUP>;

/// What kind of PCI function a device is: it decides which requester IDs its DMA carries,
/// and whether it may be assigned at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// A PCI Express endpoint (or root-complex integrated one): its own requester ID.
    PcieEndpoint,
    /// Conventional PCI: behind a bridge its DMA may carry the bridge's ID instead.
    ConventionalPci,
    /// A PCI-to-PCI bridge or PCIe port (type 1 header): never assigned, it forwards other
    /// devices' DMA.
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

impl core::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            DeviceKind::PcieEndpoint => "PCIe endpoint",
            DeviceKind::ConventionalPci => "conventional PCI",
            DeviceKind::Bridge => "bridge",
        })
    }
}

/// One PCI function as the core tracks it.
pub struct Device<Q> {
    pub(super) sbdf: Sbdf,
    pub(super) kind: DeviceKind,
    pub(super) unit: usize,
    pub(super) requester_ids: RequesterIds,
    pub(super) reserved: Vec<ReservedRange>,
    pub(super) owner: DomainId,
    pub(super) quarantine: Option<Q>,
    pub(super) quarantine_did: u16,
    pub(super) pages: usize,
    /// Set when a switch failed half-way: every entry of the device blocks, and it cannot be
    /// assigned until it is added again.
    pub(super) blocked: bool,
    pub(super) faults: FaultCounter,
    /// Of `faults.total`: interrupt requests the remapping blocked.
    pub(super) interrupt_faults: u64,
    pub(super) bus_master_disabled: bool,
}

impl<Q> Device<Q> {
    pub fn sbdf(&self) -> Sbdf {
        self.sbdf
    }
    pub fn kind(&self) -> DeviceKind {
        self.kind
    }
    pub fn requester_ids(&self) -> &[Bdf] {
        &self.requester_ids
    }
    pub fn reserved(&self) -> &[ReservedRange] {
        &self.reserved
    }
    pub fn owner(&self) -> DomainId {
        self.owner
    }
    /// Table pages plus the scratch page reserved for its quarantine.
    pub fn quarantine_pages(&self) -> usize {
        self.pages
    }
    /// The IOMMU's domain ID for this device while quarantined.
    pub fn quarantine_domain_id(&self) -> u16 {
        self.quarantine_did
    }
    pub fn blocked(&self) -> bool {
        self.blocked
    }
    pub fn faults(&self) -> FaultCounter {
        self.faults
    }
    /// Interrupt-remapping faults attributed to it (counted in [`Self::faults`] too).
    pub fn interrupt_faults(&self) -> u64 {
        self.interrupt_faults
    }
    pub fn bus_master_disabled(&self) -> bool {
        self.bus_master_disabled
    }
    pub fn shares_requester_id_with<P>(&self, other: &Device<P>) -> bool {
        self.sbdf != other.sbdf
            && self.sbdf.segment == other.sbdf.segment
            && self
                .requester_ids
                .iter()
                .any(|r| other.requester_ids.contains(r))
    }
}

/// A guest's IOMMU state: its tables behind their own mapping lock (they change at run
/// time, unlike the frozen quarantine tables) and its domain ID on every unit.
pub struct Guest<T> {
    pub(super) tables: Spinlock<T>,
    pub(super) dids: Vec<u16>,
    /// Destroyed, but parked: its tables, frames and domain IDs are kept until a flush
    /// succeeds (`reclaim_parked`).
    pub(super) parked: bool,
}

/// Counters behind the FIGURE lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub owner_switches: u64,
    pub last_switch: FlushCost,
    pub switch_timeouts: u64,
    pub switch_failures: u64,
    pub parked_domains: u64,
    pub fault_log: LogLimiter,
    /// A device's interrupt entries could not all be blocked in memory, or the switch that
    /// invalidated them timed out (a cache may still hold one).
    pub interrupt_block_failures: u64,
}

/// Everything the device lock guards.
pub struct State<V: Vendor> {
    pub(super) vendor: V,
    pub(super) domains: Domains,
    /// Per domain-arena slot: the guest's IOMMU state (`None` for system domains).
    pub(super) guests: Vec<Option<Guest<V::Tables>>>,
    pub(super) devices: BTreeMap<Sbdf, Device<V::Quarantine>>,
    /// Each device's interrupt entries, built when it was added (absent: its unit does not
    /// remap, or had no entries left — its interrupts are blocked, it just has none to give).
    pub(super) interrupts: BTreeMap<Sbdf, V::Interrupts>,
    /// `assign` refuses a device whose unit does not remap interrupts (unless `intremap=off`).
    pub(super) intremap_required: bool,
    /// Per unit.
    pub(super) dids: Vec<DomainIds>,
    pub(super) mode: QuarantineMode,
    pub(super) stats: Stats,
}

impl<V: Vendor> State<V> {
    pub(super) fn new(vendor: V, mode: QuarantineMode) -> State<V> {
        let dids = (0..vendor.unit_count())
            .map(|u| DomainIds::new(vendor.domain_ids(u)))
            .collect();
        State {
            vendor,
            domains: Domains::new(),
            guests: Vec::new(),
            devices: BTreeMap::new(),
            interrupts: BTreeMap::new(),
            intremap_required: true,
            dids,
            mode,
            stats: Stats::default(),
        }
    }

    pub fn iommu_name(&self) -> &'static str {
        self.vendor.name()
    }
    pub fn levels(&self) -> u8 {
        self.vendor.levels()
    }
    pub fn mode(&self) -> QuarantineMode {
        self.mode
    }
    pub fn domains(&self) -> &Domains {
        &self.domains
    }
    pub fn dom_io(&self) -> DomainId {
        self.domains.dom_io
    }
    pub fn stats(&self) -> Stats {
        self.stats
    }
    pub fn vendor(&self) -> &V {
        &self.vendor
    }

    pub fn device(&self, sbdf: Sbdf) -> Option<&Device<V::Quarantine>> {
        self.devices.get(&sbdf)
    }
    pub fn devices(&self) -> impl Iterator<Item = &Device<V::Quarantine>> {
        self.devices.values()
    }
    /// The device's interrupt entries (for tests and the vendor's inspection).
    pub fn interrupts_of(&self, sbdf: Sbdf) -> Option<&V::Interrupts> {
        self.interrupts.get(&sbdf)
    }
    /// Whether `assign` demands interrupt remapping.
    pub fn interrupt_remapping_required(&self) -> bool {
        self.intremap_required
    }
    pub fn owner_of(&self, sbdf: Sbdf) -> Option<DomainId> {
        self.devices.get(&sbdf).map(|d| d.owner)
    }

    /// The device whose quarantine entry `rid` in `segment` reaches: its only emitter, or
    /// the leader of the alias group that shares it.
    pub fn device_by_requester(&self, segment: u16, rid: Bdf) -> Option<&Device<V::Quarantine>> {
        let mut holders = self
            .devices
            .values()
            .filter(|d| d.sbdf.segment == segment && d.requester_ids.contains(&rid));
        let first = holders.next()?;
        if holders.next().is_none() {
            // Only one device emits it: the DMA is that device's.
            return Some(first);
        }
        // Shared within an alias group: the IOMMU cannot tell who sent it; the leader
        // answers for the group (its quarantine entry is the one the ID uses).
        let group = self.group_of(first.sbdf);
        self.leader(&group).and_then(|l| self.devices.get(&l))
    }

    /// `sbdf` and every device that shares a requester ID with it, transitively, in SBDF
    /// order: what moves together. Its endpoint functions are the group; the bridges in it
    /// (a bridge whose own ID the endpoints' DMA carries, QEMU's `pcie-pci-bridge`) are
    /// *carried*: they follow the group's owner, and are never assigned on their own.
    /// Bounded (checked when devices are added).
    pub fn group_of(&self, sbdf: Sbdf) -> Group {
        let mut group = Group::new();
        if !self.devices.contains_key(&sbdf) {
            return group;
        }
        let _ = group.push(sbdf);
        let mut i = 0;
        while let Some(member) = group.get(i).and_then(|s| self.devices.get(s)) {
            for other in self.devices.values() {
                if !group.contains(&other.sbdf)
                    && member.shares_requester_id_with(other)
                    && group.push(other.sbdf).is_err()
                {
                    return group;
                }
            }
            i += 1;
        }
        group.sort_unstable();
        group
    }

    /// The group's endpoint functions (`bridges == false`) or the bridges it carries.
    pub fn members_of(&self, group: &Group, bridges: bool) -> Group {
        group
            .iter()
            .filter(|m| {
                self.devices
                    .get(m)
                    .is_some_and(|d| (d.kind == DeviceKind::Bridge) == bridges)
            })
            .copied()
            .collect()
    }

    /// The group's leader: its lowest-SBDF endpoint function (the lowest device when it has
    /// none). In quarantine every requester ID more than one member emits reaches the
    /// leader's tables, so DMA the IOMMU cannot tell apart lands in one known scratch page.
    pub fn leader(&self, group: &Group) -> Option<Sbdf> {
        self.members_of(group, false)
            .first()
            .or(group.first())
            .copied()
    }

    /// Whether a group member other than `sbdf` emits `rid` too.
    pub(super) fn shared_in_group(&self, group: &Group, sbdf: Sbdf, rid: Bdf) -> bool {
        group
            .iter()
            .filter(|m| **m != sbdf)
            .filter_map(|m| self.devices.get(m))
            .any(|d| d.requester_ids.contains(&rid))
    }

    /// A live guest's IOMMU state.
    pub(super) fn guest(&self, id: DomainId) -> Option<&Guest<V::Tables>> {
        if !self.domains.is_guest(id) {
            return None;
        }
        self.guests
            .get(id.index() as usize)?
            .as_ref()
            .filter(|g| !g.parked)
    }

    /// The guest's domain ID on `unit`.
    pub fn guest_domain_id(&self, id: DomainId, unit: usize) -> Option<u16> {
        self.guest(id)?.dids.get(unit).copied()
    }

    /// Domains destroyed whose memory is held back until a flush succeeds.
    pub fn parked_domains(&self) -> impl Iterator<Item = DomainId> + '_ {
        self.domains.iter().map(|(id, _)| id).filter(|id| {
            self.guests
                .get(id.index() as usize)
                .and_then(|g| g.as_ref())
                .is_some_and(|g| g.parked)
        })
    }
}

impl<V: Inspect> State<V> {
    /// Where `rid`'s DMA to `iova` lands now, by the reference walker.
    pub fn translate(
        &self,
        rid: Sbdf,
        iova: u64,
        write: bool,
    ) -> Result<PhysAddr, alloc::string::String> {
        self.vendor.translate(rid, iova, write)
    }

    /// The device's private scratch page (scratch mode).
    pub fn scratch_page(&self, sbdf: Sbdf) -> Option<PhysAddr> {
        let q = self.devices.get(&sbdf)?.quarantine.as_ref()?;
        self.vendor.scratch_page(q)
    }
}
