//! Intel VT-d behind the vendor-neutral [`Iommu`] seam: one root table per unit, per-device
//! frozen quarantine tables, guest second-level tables, owner switches as one atomic context
//! write per requester ID followed by one batched invalidation and one wait.
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use lazaret_types::{Bdf, FrameAllocator, Mmio, PhysAddr, PhysMem, Sbdf};
use lazaret_vtd::{
    fault_reason_text, walker, CacheFlush, Clock, ContextEntry, ContextScope, Invalidation,
    IotlbScope, Levels, PageTable, Perms, QuarantineTables, RootTable, TableMemory, VtdUnit,
};

use super::dids::{allocate_each, release_each, DomainIds};
use crate::cmdline::QuarantineMode;
use crate::passthrough::iommu::{
    DeviceSpec, DmaFault, GuestTables, Iommu, IommuError, QuarantineInfo, RequesterIds, SwitchCost,
    MAX_REQUESTER_IDS,
};
use crate::passthrough::LockHeld;

/// Every hardware handshake and invalidation wait gives up after this long.
pub const TIMEOUT_US: u64 = 100_000;

/// One DRHD as the kernel found it.
pub struct UnitConfig<R> {
    pub regs: R,
    pub segment: u16,
    pub register_base: PhysAddr,
    /// Covers every device of the segment not claimed by another unit's scopes.
    pub include_all: bool,
}

struct Unit<R: Mmio> {
    hw: VtdUnit<R>,
    root: RootTable,
    segment: u16,
    include_all: bool,
    dids: DomainIds,
}

struct DeviceState {
    unit: usize,
    rids: Vec<Bdf>,
    quarantine: Option<QuarantineTables>,
    quarantine_did: u16,
}

/// A guest's VT-d state: one second-level table shared by every unit (all use the same
/// depth), and a domain ID per unit.
struct VtdGuest {
    table: PageTable,
    dids: Vec<u16>,
}

#[derive(Debug)]
pub enum VtdError {
    NoUnits,
    /// No depth supported by every unit (SAGAW).
    NoCommonDepth,
    Unit {
        base: PhysAddr,
        what: String,
    },
    OutOfMemory,
}

impl core::fmt::Display for VtdError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            VtdError::NoUnits => f.write_str("no usable DRHD"),
            VtdError::NoCommonDepth => {
                f.write_str("the units share no supported page-table depth (SAGAW)")
            }
            VtdError::Unit { base, what } => write!(f, "unit at {base}: {what}"),
            VtdError::OutOfMemory => f.write_str("out of memory for root tables"),
        }
    }
}

pub struct VtdIommu<'m, M: PhysMem + ?Sized, R: Mmio, C: Clock> {
    mem: &'m M,
    flush: &'m dyn CacheFlush,
    clock: C,
    units: Vec<Unit<R>>,
    levels: Levels,
    /// Devices that a unit's scopes name explicitly; the rest go to the segment's
    /// INCLUDE_PCI_ALL unit.
    coverage: BTreeMap<Sbdf, usize>,
    devices: BTreeMap<Sbdf, DeviceState>,
}

fn unit_error(base: PhysAddr, e: impl core::fmt::Display) -> VtdError {
    VtdError::Unit {
        base,
        what: format!("{e}"),
    }
}

impl<'m, M: PhysMem + ?Sized, R: Mmio, C: Clock> VtdIommu<'m, M, R, C> {
    /// Brings up every unit: root table, queued invalidation when offered, global
    /// invalidation, translation on (every context not present: all DMA blocked until
    /// devices are added).
    pub fn new(
        mem: &'m M,
        flush: &'m dyn CacheFlush,
        clock: C,
        configs: Vec<UnitConfig<R>>,
        coverage: BTreeMap<Sbdf, usize>,
        alloc: &mut dyn FrameAllocator,
    ) -> Result<Self, VtdError> {
        if configs.is_empty() {
            return Err(VtdError::NoUnits);
        }
        let hws: Vec<(VtdUnit<R>, UnitConfig<()>)> = configs
            .into_iter()
            .map(|c| {
                let cfg = UnitConfig {
                    regs: (),
                    segment: c.segment,
                    register_base: c.register_base,
                    include_all: c.include_all,
                };
                (VtdUnit::new(c.regs, TIMEOUT_US), cfg)
            })
            .collect();
        // One depth for every table, chosen once: the deepest every unit supports, up to 4.
        let levels = [Levels::Four, Levels::Three, Levels::Five]
            .into_iter()
            .find(|l| hws.iter().all(|(u, _)| u.capabilities().supports(*l)))
            .ok_or(VtdError::NoCommonDepth)?;
        let mut units = Vec::new();
        for (mut hw, cfg) in hws {
            let tm = TableMemory::new(mem, flush);
            let root = RootTable::new(tm, alloc).map_err(|_| VtdError::OutOfMemory)?;
            let base = cfg.register_base;
            hw.set_root_table(root.address(), &clock)
                .map_err(|e| unit_error(base, e))?;
            if hw.ext_capabilities().queued_invalidation() {
                hw.enable_queued_invalidation(alloc, &clock)
                    .map_err(|e| unit_error(base, e))?;
            }
            hw.invalidate_all(mem, &clock)
                .map_err(|e| unit_error(base, e))?;
            hw.enable_translation(&clock)
                .map_err(|e| unit_error(base, e))?;
            let dids = DomainIds::new(hw.capabilities().usable_domain_ids());
            units.push(Unit {
                hw,
                root,
                segment: cfg.segment,
                include_all: cfg.include_all,
                dids,
            });
        }
        Ok(VtdIommu {
            mem,
            flush,
            clock,
            units,
            levels,
            coverage,
            devices: BTreeMap::new(),
        })
    }

    fn tm(&self) -> TableMemory<'m, M, dyn CacheFlush + 'm> {
        TableMemory::new(self.mem, self.flush)
    }

    fn unit_for(&self, sbdf: Sbdf) -> Option<usize> {
        self.coverage.get(&sbdf).copied().or_else(|| {
            self.units
                .iter()
                .position(|u| u.include_all && u.segment == sbdf.segment)
        })
    }

    /// Units' queued-invalidation / register statistics, for the figures.
    pub fn unit_summaries(&self) -> Vec<String> {
        self.units
            .iter()
            .map(|u| {
                let cap = u.hw.capabilities();
                let ecap = u.hw.ext_capabilities();
                format!(
                    "segment {} levels {} DIDs {} caching-mode {} queued-invalidation {} coherent {} fault-records {}",
                    u.segment,
                    self.levels.count(),
                    cap.domain_ids(),
                    cap.caching_mode(),
                    ecap.queued_invalidation(),
                    ecap.coherent(),
                    cap.fault_records()
                )
            })
            .collect()
    }

    /// Switches every requester ID of `sbdf` to `target` and invalidates the previous
    /// domain IDs with one batch and one wait.
    fn switch(
        &mut self,
        sbdf: Sbdf,
        rids: &[Bdf],
        target: impl Fn(&DeviceState, &Unit<R>) -> ContextEntry,
    ) -> Result<SwitchCost, IommuError> {
        let state = self
            .devices
            .get(&sbdf)
            .ok_or_else(|| IommuError::Inconsistent(format!("{sbdf} was never added")))?;
        let unit = &self.units[state.unit];
        let new = target(state, unit);
        let (stats_before, writes_before) = (unit.hw.invalidation_stats(), unit.hw.mmio_writes());
        // Context-cache entries of the moved requester IDs, then the IOTLB of each previous
        // domain: one batch, one wait (VT-d §6.5.2: a wait descriptor completes only after
        // every descriptor submitted before it).
        // On the stack: this runs inside deassign and destroy, which must not allocate. Every
        // push below fits: at most one context and one IOTLB request per requester ID.
        if rids.len() > MAX_REQUESTER_IDS {
            return Err(IommuError::Inconsistent(format!(
                "{sbdf}: more than {MAX_REQUESTER_IDS} requester IDs"
            )));
        }
        let mut contexts: heapless::Vec<Invalidation, { 2 * MAX_REQUESTER_IDS }> =
            heapless::Vec::new();
        let mut iotlbs: heapless::Vec<Invalidation, MAX_REQUESTER_IDS> = heapless::Vec::new();
        let mut newly_present = RequesterIds::new();
        for rid in rids {
            let old = unit
                .root
                .read_context(self.mem, *rid)
                .unwrap_or(ContextEntry::NOT_PRESENT);
            if old == new {
                continue;
            }
            unit.root
                .switch_context(self.tm(), *rid, old, new)
                .map_err(|e| IommuError::Inconsistent(format!("{e}")))?;
            if old.present {
                let _ = contexts.push(Invalidation::Context(ContextScope::Device {
                    did: old.domain_id,
                    source_id: *rid,
                    function_mask: 0,
                }));
                let tlb = Invalidation::Iotlb {
                    scope: IotlbScope::Domain { did: old.domain_id },
                    drain_reads: false,
                    drain_writes: false,
                };
                if !iotlbs.contains(&tlb) {
                    let _ = iotlbs.push(tlb);
                }
            } else if new.present {
                let _ = newly_present.push(*rid);
            }
        }
        let (unit_index, new_did) = (state.unit, new.domain_id);
        let unit = &mut self.units[unit_index];
        let mut timed_out = false;
        if !contexts.is_empty() {
            let _ = contexts.extend_from_slice(&iotlbs);
            timed_out |= unit
                .hw
                .invalidate(self.mem, &contexts, &self.clock)
                .is_err();
        }
        for rid in newly_present {
            timed_out |= unit
                .hw
                .after_context_present(self.mem, rid, new_did, &self.clock)
                .is_err();
        }
        let stats = unit.hw.invalidation_stats();
        Ok(SwitchCost {
            descriptors: stats.descriptors - stats_before.descriptors,
            waits: stats.waits - stats_before.waits,
            mmio_writes: unit.hw.mmio_writes() - writes_before,
            timed_out,
        })
    }
}

fn guest_state(tables: &GuestTables) -> Result<&VtdGuest, IommuError> {
    tables
        .vendor
        .downcast_ref::<VtdGuest>()
        .ok_or_else(|| IommuError::Inconsistent("not a VT-d guest".into()))
}

impl<M: PhysMem + ?Sized, R: Mmio, C: Clock> Iommu for VtdIommu<'_, M, R, C> {
    fn name(&self) -> &'static str {
        "Intel VT-d"
    }

    fn levels(&self) -> u8 {
        self.levels.count() as u8
    }

    fn add_device(
        &mut self,
        _held: &LockHeld,
        alloc: &mut dyn FrameAllocator,
        dev: &DeviceSpec,
        mode: QuarantineMode,
    ) -> Result<QuarantineInfo, IommuError> {
        let unit_index = self
            .unit_for(dev.sbdf)
            .ok_or(IommuError::NoUnit(dev.sbdf))?;
        let (mem, flush, levels) = (self.mem, self.flush, self.levels);
        let unit = &mut self.units[unit_index];
        for rid in dev.requester_ids {
            let created = unit
                .root
                .ensure_bus(TableMemory::new(mem, flush), alloc, rid.bus())
                .map_err(|_| IommuError::OutOfMemory)?;
            if created && unit.hw.after_root_entry_present(mem, &self.clock).is_err() {
                log::warn!(
                    "vtd: root-entry invalidation timed out for bus {:#04x}",
                    rid.bus()
                );
            }
        }
        let ranges: Vec<(u64, u64)> = dev.reserved.iter().map(|r| (r.start, r.end)).collect();
        let tables =
            match mode {
                QuarantineMode::None => None,
                QuarantineMode::Basic | QuarantineMode::Scratch => Some(
                    QuarantineTables::build(
                        TableMemory::new(mem, flush),
                        alloc,
                        levels,
                        &ranges,
                        mode == QuarantineMode::Scratch,
                    )
                    .map_err(|e| match e {
                        lazaret_vtd::QuarantineError::OutOfFrames => IommuError::OutOfMemory,
                        _ => IommuError::BadReservedRange(dev.reserved.first().copied().unwrap_or(
                            crate::passthrough::iommu::ReservedRange { start: 0, end: 0 },
                        )),
                    })?,
                ),
            };
        let has_root = tables.as_ref().is_some_and(|t| t.root().is_some());
        let did = if has_root {
            match unit.dids.allocate() {
                Some(d) => d,
                None => {
                    if let Some(t) = tables {
                        t.free(alloc);
                    }
                    return Err(IommuError::OutOfDomainIds);
                }
            }
        } else {
            0
        };
        if let Some(t) = &tables {
            t.zero_scratch(mem);
        }
        let pages = tables.as_ref().map_or(0, |t| t.page_count());
        self.devices.insert(
            dev.sbdf,
            DeviceState {
                unit: unit_index,
                rids: dev.requester_ids.to_vec(),
                quarantine: tables,
                quarantine_did: did,
            },
        );
        let entry = |s: &DeviceState, _: &Unit<R>| match &s.quarantine {
            Some(t) => t.context_entry(s.quarantine_did),
            None => ContextEntry::NOT_PRESENT,
        };
        if let Err(e) = self.switch(dev.sbdf, dev.moving, entry) {
            // Not registered after all: give back what was reserved for it.
            if let Some(state) = self.devices.remove(&dev.sbdf) {
                self.units[state.unit].dids.release(state.quarantine_did);
                if let Some(t) = state.quarantine {
                    t.free(alloc);
                }
            }
            return Err(e);
        }
        Ok(QuarantineInfo {
            pages,
            hw_domain_id: did,
        })
    }

    fn create_domain(
        &mut self,
        _held: &LockHeld,
        alloc: &mut dyn FrameAllocator,
    ) -> Result<GuestTables, IommuError> {
        let table =
            PageTable::new(self.tm(), alloc, self.levels).map_err(|_| IommuError::OutOfMemory)?;
        let Some(dids) = allocate_each(self.units.iter_mut().map(|u| &mut u.dids)) else {
            table.free(self.mem, alloc);
            return Err(IommuError::OutOfDomainIds);
        };
        Ok(GuestTables {
            levels: self.levels.count() as u8,
            mapped_pages: 0,
            vendor: Box::new(VtdGuest { table, dids }),
        })
    }

    fn destroy_domain(
        &mut self,
        _held: &LockHeld,
        alloc: &mut dyn FrameAllocator,
        tables: GuestTables,
    ) {
        if let Ok(guest) = tables.vendor.downcast::<VtdGuest>() {
            release_each(self.units.iter_mut().map(|u| &mut u.dids), &guest.dids);
            guest.table.free(self.mem, alloc);
        }
    }

    fn map(
        &mut self,
        tables: &mut GuestTables,
        alloc: &mut dyn FrameAllocator,
        iova: u64,
        pa: PhysAddr,
        writable: bool,
    ) -> Result<(), IommuError> {
        let tm = self.tm();
        let guest = tables
            .vendor
            .downcast_mut::<VtdGuest>()
            .ok_or_else(|| IommuError::Inconsistent("not a VT-d guest".into()))?;
        guest
            .table
            .map(
                tm,
                alloc,
                iova,
                pa,
                Perms {
                    read: true,
                    write: writable,
                    snoop: false,
                },
            )
            .map_err(|_| IommuError::OutOfMemory)?;
        for (u, did) in self.units.iter_mut().zip(&guest.dids) {
            if u.hw
                .after_map(self.mem, *did, iova, 0, &self.clock)
                .is_err()
            {
                log::warn!("vtd: IOTLB invalidation after map timed out");
            }
        }
        tables.mapped_pages += 1;
        Ok(())
    }

    fn unmap(&mut self, tables: &mut GuestTables, iova: u64) -> Option<PhysAddr> {
        let tm = self.tm();
        let guest = tables.vendor.downcast_mut::<VtdGuest>()?;
        let pa = guest.table.unmap(tm, iova).ok().flatten()?;
        for (u, did) in self.units.iter_mut().zip(&guest.dids) {
            if u.hw
                .after_unmap(self.mem, *did, iova, 0, &self.clock)
                .is_err()
            {
                log::warn!("vtd: IOTLB invalidation after unmap timed out");
            }
        }
        tables.mapped_pages -= 1;
        Some(pa)
    }

    fn attach(
        &mut self,
        _held: &LockHeld,
        dev: &DeviceSpec,
        tables: &GuestTables,
    ) -> Result<SwitchCost, IommuError> {
        let guest = guest_state(tables)?;
        let (root, levels) = (guest.table.root(), self.levels);
        let dids = guest.dids.clone();
        self.switch(dev.sbdf, dev.moving, |s, _| {
            ContextEntry::translated(root, levels, dids[s.unit])
        })
    }

    fn quarantine(&mut self, _held: &LockHeld, dev: &DeviceSpec) -> SwitchCost {
        if let Some(t) = self
            .devices
            .get(&dev.sbdf)
            .and_then(|s| s.quarantine.as_ref())
        {
            // The scratch page is data: zeroed before the device returns to it.
            t.zero_scratch(self.mem);
        }
        let entry = |s: &DeviceState, _: &Unit<R>| match &s.quarantine {
            Some(t) => t.context_entry(s.quarantine_did),
            None => ContextEntry::NOT_PRESENT,
        };
        match self.switch(dev.sbdf, dev.moving, entry) {
            Ok(cost) => cost,
            Err(e) => {
                log::error!("vtd: returning {} to quarantine: {e}", dev.sbdf);
                SwitchCost {
                    timed_out: true,
                    ..SwitchCost::default()
                }
            }
        }
    }

    fn translate(&self, rid: Sbdf, iova: u64, write: bool) -> Result<PhysAddr, String> {
        let unit = self
            .devices
            .values()
            .find(|d| d.rids.contains(&rid.bdf) && self.units[d.unit].segment == rid.segment)
            .map(|d| d.unit)
            .or_else(|| self.unit_for(rid))
            .ok_or_else(|| format!("no unit covers {rid}"))?;
        walker::translate(
            self.mem,
            self.units[unit].root.address(),
            rid.bdf,
            iova,
            write,
        )
        .map_err(|f| format!("{f}"))
    }

    fn scratch_page(&self, sbdf: Sbdf) -> Option<PhysAddr> {
        self.devices.get(&sbdf)?.quarantine.as_ref()?.scratch_page()
    }

    fn drain_faults(&mut self, sink: &mut dyn FnMut(DmaFault)) -> usize {
        let mut overflowed = 0;
        for u in &self.units {
            let segment = u.segment;
            let summary = u.hw.drain_faults(|r| {
                sink(DmaFault {
                    segment,
                    requester: r.source_id,
                    write: r.write,
                    address: r.address,
                    reason: fault_reason_text(r.reason).into(),
                })
            });
            overflowed += usize::from(summary.overflow);
        }
        overflowed
    }
}
