//! AMD-Vi behind the vendor-neutral [`Iommu`] seam: one device table per IOMMU, per-device
//! frozen quarantine tables (IVMD unity ranges identity-mapped in both basic and scratch
//! mode), guest I/O page tables, owner switches as one atomic 128-bit DTE write per requester
//! ID followed by INVALIDATE_DEVTAB_ENTRY + INVALIDATE_IOMMU_PAGES and one COMPLETION_WAIT.
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use lazaret_amd_vi::{
    walker, AmdViUnit, Clock, DeviceTable, DeviceTableEntry, Event, Levels, PageTable, Perms,
    QuarantineTables,
};
use lazaret_types::{Bdf, FrameAllocator, Mmio, PhysAddr, PhysMem, Sbdf};

use super::dids::{allocate_each, release_each, DomainIds};
use crate::cmdline::QuarantineMode;
use crate::passthrough::iommu::{
    DeviceSpec, DmaFault, GuestTables, Iommu, IommuError, QuarantineInfo, ReservedRange,
    SwitchCost, MAX_REQUESTER_IDS,
};
use crate::passthrough::LockHeld;

/// Every command wait and control handshake gives up after this long.
pub const TIMEOUT_US: u64 = 100_000;

/// Domain IDs handed out: 1..256. QEMU 7.2 wrongly treats DomainID bit 8 as reserved
/// (`lazaret_amd_vi::device_table::QEMU_7_2_BAD_DOMAIN_BIT`), so IDs stay below it.
const DOMAIN_IDS: core::ops::Range<u32> = 1..256;

/// One IOMMU as the kernel brought it up.
pub struct UnitSetup<R: Mmio> {
    pub hw: AmdViUnit<R>,
    pub table: DeviceTable,
    pub segment: u16,
    pub base: PhysAddr,
}

struct Unit<R: Mmio> {
    hw: AmdViUnit<R>,
    table: DeviceTable,
    segment: u16,
    dids: DomainIds,
}

struct DeviceState {
    unit: usize,
    rids: Vec<Bdf>,
    quarantine: Option<QuarantineTables>,
    quarantine_did: u16,
}

struct AmdGuest {
    table: PageTable,
    dids: Vec<u16>,
}

pub struct AmdViIommu<'m, M: PhysMem + ?Sized, R: Mmio, C: Clock> {
    mem: &'m M,
    clock: C,
    units: Vec<Unit<R>>,
    levels: Levels,
    coverage: BTreeMap<Sbdf, usize>,
    devices: BTreeMap<Sbdf, DeviceState>,
}

impl<'m, M: PhysMem + ?Sized, R: Mmio, C: Clock> AmdViIommu<'m, M, R, C> {
    /// Takes units whose device tables are programmed and which are enabled (every entry
    /// blocking until devices are added).
    pub fn new(
        mem: &'m M,
        clock: C,
        setups: Vec<UnitSetup<R>>,
        coverage: BTreeMap<Sbdf, usize>,
    ) -> Result<Self, String> {
        if setups.is_empty() {
            return Err("no usable IVHD".into());
        }
        // One depth for every table: 4 levels (48-bit IOVAs), which every unit supports
        // (HATS is at least 4), used both for the tables and the DTE Mode field.
        let levels = Levels::FOUR;
        let units = setups
            .into_iter()
            .map(|s| Unit {
                hw: s.hw,
                table: s.table,
                segment: s.segment,
                dids: DomainIds::new(DOMAIN_IDS),
            })
            .collect();
        Ok(AmdViIommu {
            mem,
            clock,
            units,
            levels,
            coverage,
            devices: BTreeMap::new(),
        })
    }

    pub fn unit_summaries(&self) -> Vec<String> {
        self.units
            .iter()
            .map(|u| {
                format!(
                    "segment {} levels {} device table {} entries at {} (max {:?} levels supported)",
                    u.segment,
                    self.levels.count(),
                    u.table.entries(),
                    u.table.base(),
                    u.hw.features().max_levels().map(|l| l.count())
                )
            })
            .collect()
    }

    /// Switches every requester ID of `sbdf` to `new(state)`, then invalidates the DTEs and
    /// the previous domain's pages with one completion wait.
    fn switch(
        &mut self,
        sbdf: Sbdf,
        rids: &[Bdf],
        new: impl Fn(&DeviceState) -> DeviceTableEntry,
    ) -> Result<SwitchCost, IommuError> {
        let state = self
            .devices
            .get(&sbdf)
            .ok_or_else(|| IommuError::Inconsistent(format!("{sbdf} was never added")))?;
        let entry = new(state);
        let unit = &self.units[state.unit];
        let before = unit.hw.command_stats();
        // On the stack: this runs inside deassign and destroy, which must not allocate. Every
        // push below fits: at most one entry per requester ID.
        if rids.len() > MAX_REQUESTER_IDS {
            return Err(IommuError::Inconsistent(format!(
                "{sbdf}: more than {MAX_REQUESTER_IDS} requester IDs"
            )));
        }
        let mut previous_domains: heapless::Vec<u16, MAX_REQUESTER_IDS> = heapless::Vec::new();
        let mut moved: heapless::Vec<u16, MAX_REQUESTER_IDS> = heapless::Vec::new();
        for rid in rids {
            let old = unit
                .table
                .switch_owner(self.mem, rid.requester_id(), entry)
                .map_err(|e| IommuError::Inconsistent(format!("{e}")))?;
            if old != entry {
                let _ = moved.push(rid.requester_id());
                if !previous_domains.contains(&old.domain_id()) {
                    let _ = previous_domains.push(old.domain_id());
                }
            }
        }
        let unit = &mut self.units[state.unit];
        let mut timed_out = false;
        for (i, domain) in previous_domains.iter().enumerate() {
            // The DTE invalidations ride with the first domain's page invalidation: one
            // COMPLETION_WAIT covers all older commands (AMD IOMMU spec §2.4.1).
            let devices: &[u16] = if i == 0 { &moved } else { &[] };
            timed_out |= unit
                .hw
                .after_owner_switch(self.mem, &self.clock, devices, *domain)
                .is_err();
        }
        let after = unit.hw.command_stats();
        Ok(SwitchCost {
            descriptors: after.commands - before.commands,
            waits: after.waits - before.waits,
            mmio_writes: after.mmio_writes - before.mmio_writes,
            timed_out,
        })
    }

    fn unit_for(&self, sbdf: Sbdf) -> Option<usize> {
        self.coverage.get(&sbdf).copied()
    }
}

fn quarantine_entry(s: &DeviceState) -> DeviceTableEntry {
    match &s.quarantine {
        Some(t) => t.device_table_entry(s.quarantine_did),
        None => DeviceTableEntry::blocking(s.quarantine_did),
    }
}

impl<M: PhysMem + ?Sized, R: Mmio, C: Clock> Iommu for AmdViIommu<'_, M, R, C> {
    fn name(&self) -> &'static str {
        "AMD-Vi"
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
        let unity: Vec<(u64, u64, bool, bool)> = dev
            .reserved
            .iter()
            .map(|r| (r.start, r.end, true, true))
            .collect();
        let tables = match mode {
            QuarantineMode::None => None,
            QuarantineMode::Basic | QuarantineMode::Scratch => Some(
                QuarantineTables::build(
                    self.mem,
                    alloc,
                    self.levels,
                    &unity,
                    mode == QuarantineMode::Scratch,
                )
                .map_err(|e| match e {
                    lazaret_amd_vi::QuarantineError::OutOfFrames => IommuError::OutOfMemory,
                    _ => IommuError::BadReservedRange(
                        dev.reserved
                            .first()
                            .copied()
                            .unwrap_or(ReservedRange { start: 0, end: 0 }),
                    ),
                })?,
            ),
        };
        let did = match self.units[unit_index].dids.allocate() {
            Some(d) => d,
            None => {
                if let Some(t) = tables {
                    t.free(alloc);
                }
                return Err(IommuError::OutOfDomainIds);
            }
        };
        if let Some(t) = &tables {
            t.zero_scratch(self.mem);
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
        if let Err(e) = self.switch(dev.sbdf, dev.moving, quarantine_entry) {
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
            PageTable::new(self.mem, alloc, self.levels).map_err(|_| IommuError::OutOfMemory)?;
        let Some(dids) = allocate_each(self.units.iter_mut().map(|u| &mut u.dids)) else {
            table.free(self.mem, alloc);
            return Err(IommuError::OutOfDomainIds);
        };
        Ok(GuestTables {
            levels: self.levels.count() as u8,
            mapped_pages: 0,
            vendor: Box::new(AmdGuest { table, dids }),
        })
    }

    fn destroy_domain(
        &mut self,
        _held: &LockHeld,
        alloc: &mut dyn FrameAllocator,
        tables: GuestTables,
    ) {
        if let Ok(guest) = tables.vendor.downcast::<AmdGuest>() {
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
        let guest = tables
            .vendor
            .downcast_mut::<AmdGuest>()
            .ok_or_else(|| IommuError::Inconsistent("not an AMD-Vi guest".into()))?;
        guest
            .table
            .map(
                self.mem,
                alloc,
                iova,
                pa,
                Perms {
                    read: true,
                    write: writable,
                },
            )
            .map_err(|_| IommuError::OutOfMemory)?;
        // QEMU's unit caches not-present entries (NpCache), so maps are invalidated too.
        for (u, did) in self.units.iter_mut().zip(&guest.dids) {
            if u.hw
                .after_mapping_change(self.mem, &self.clock, *did, iova)
                .is_err()
            {
                log::warn!("amd-vi: page invalidation after map timed out");
            }
        }
        tables.mapped_pages += 1;
        Ok(())
    }

    fn unmap(&mut self, tables: &mut GuestTables, iova: u64) -> Option<PhysAddr> {
        let guest = tables.vendor.downcast_mut::<AmdGuest>()?;
        let pa = guest.table.unmap(self.mem, iova).ok().flatten()?;
        for (u, did) in self.units.iter_mut().zip(&guest.dids) {
            if u.hw
                .after_mapping_change(self.mem, &self.clock, *did, iova)
                .is_err()
            {
                log::warn!("amd-vi: page invalidation after unmap timed out");
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
        let guest = tables
            .vendor
            .downcast_ref::<AmdGuest>()
            .ok_or_else(|| IommuError::Inconsistent("not an AMD-Vi guest".into()))?;
        let root = guest.table.translation_root();
        let dids = guest.dids.clone();
        self.switch(dev.sbdf, dev.moving, |s| {
            DeviceTableEntry::translated(root, dids[s.unit])
        })
    }

    fn quarantine(&mut self, _held: &LockHeld, dev: &DeviceSpec) -> SwitchCost {
        if let Some(t) = self
            .devices
            .get(&dev.sbdf)
            .and_then(|s| s.quarantine.as_ref())
        {
            t.zero_scratch(self.mem);
        }
        match self.switch(dev.sbdf, dev.moving, quarantine_entry) {
            Ok(cost) => cost,
            Err(e) => {
                log::error!("amd-vi: returning {} to quarantine: {e}", dev.sbdf);
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
            .ok_or_else(|| format!("no IOMMU covers {rid}"))?;
        let u = &self.units[unit];
        walker::translate(
            self.mem,
            u.table.base(),
            u.table.entries(),
            rid.bdf.requester_id(),
            iova,
            write,
        )
        .map_err(|f| format!("{f}"))
    }

    fn scratch_page(&self, sbdf: Sbdf) -> Option<PhysAddr> {
        self.devices.get(&sbdf)?.quarantine.as_ref()?.scratch_page()
    }

    fn drain_faults(&mut self, sink: &mut dyn FnMut(DmaFault)) -> usize {
        let mut lost = 0;
        for u in &mut self.units {
            let segment = u.segment;
            let fault = |device_id: u16, write: bool, address: u64, reason: String| DmaFault {
                segment,
                requester: Bdf::from_requester_id(device_id),
                write,
                address,
                reason,
            };
            let drained =
                u.hw.drain_events(self.mem, &self.clock, |event| match event {
                    Event::IoPageFault {
                        device_id,
                        address,
                        flags,
                        ..
                    } => sink(fault(
                        device_id,
                        flags.write(),
                        address,
                        String::from(if flags.present() {
                            "I/O page fault: permission"
                        } else {
                            "I/O page fault: not present"
                        }),
                    )),
                    Event::IllegalDevTableEntry {
                        device_id,
                        address,
                        flags,
                    } => sink(fault(
                        device_id,
                        flags.write(),
                        address,
                        "illegal device table entry".into(),
                    )),
                    other => log::warn!("amd-vi: event {other:?}"),
                });
            match drained {
                Ok(summary) => {
                    lost += usize::from(summary.overflowed) + summary.zero_code_skipped as usize
                }
                Err(e) => log::error!("amd-vi: event log: {e}"),
            }
        }
        lost
    }
}
