//! AMD-Vi behind the [`Vendor`] seam: one device table per IOMMU, device-table entries as the
//! switched entries, I/O page tables for guests and quarantine (IVMD unity ranges
//! identity-mapped with their own permissions). Bring-up is here; the owner-switch flow is
//! the core's.
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;

use lazaret_amd_vi::{
    walker, AmdViUnit, Clock, DeviceTable, DeviceTableEntry, Event, IntRemapError, InterruptTable,
    Irte, Levels, MapError, MsiMessage, PageTable, Perms, QuarantineTables, SwitchBatch,
};
use lazaret_amd_vi::{QuarantineDte, Translated};
use lazaret_types::{Bdf, FrameAllocator, Mmio, PhysAddr, PhysMem, Sbdf};

use crate::passthrough::iommu::{
    DmaFault, FaultKind, FlushCost, Inspect, InterruptTarget, IommuError, MsiAddress, PageSize,
    RequesterIds, ReservedRange, Vendor, MAX_REQUESTER_IDS,
};
use crate::passthrough::LockHeld;

/// Every command wait and control handshake gives up after this long.
pub const TIMEOUT_US: u64 = 100_000;

/// Domain IDs handed out: 1..256. QEMU 7.2 wrongly treats DomainID bit 8 as reserved
/// (`lazaret_amd_vi::device_table::QEMU_7_2_BAD_DOMAIN_BIT`), so IDs stay below it.
const DOMAIN_IDS: Range<u32> = 1..256;

/// One IOMMU as the kernel brought it up.
pub struct UnitSetup<R: Mmio> {
    pub hw: AmdViUnit<R>,
    pub table: DeviceTable,
    pub segment: u16,
    pub base: PhysAddr,
    /// The IVRS lets this unit's interrupt remapping be relied on (it names the IOAPICs:
    /// `acpi_iommu::ivrs::remapping_doubt`); `false` makes the core refuse assignment behind it.
    pub interrupt_remapping: bool,
}

struct Unit<R: Mmio> {
    hw: AmdViUnit<R>,
    table: DeviceTable,
    segment: u16,
    interrupt_remapping: bool,
    /// A flush failed: the unit may have dropped what it owed (after ILLEGAL_COMMAND the
    /// queued commands are discarded), so the next flush invalidates every DTE and DomainID
    /// before the core frees anything those caches could reach.
    unconfirmed: bool,
}

/// Brings one IOMMU up with the driver's sequence (a unit firmware left running is stopped
/// before its rings are reprogrammed; Coherent set; everything cached invalidated), with the
/// device table — every entry blocking — installed.
pub fn bring_up<R: Mmio, M: PhysMem + ?Sized>(
    regs: R,
    mem: &M,
    alloc: &mut dyn FrameAllocator,
    table: DeviceTable,
    segment: u16,
    base: PhysAddr,
    clock: &impl Clock,
) -> Result<UnitSetup<R>, String> {
    let hw = AmdViUnit::bring_up(regs, mem, alloc, &table, clock, TIMEOUT_US)
        .map_err(|e| format!("IOMMU at {base}: {e}"))?;
    Ok(UnitSetup {
        hw,
        table,
        segment,
        base,
        interrupt_remapping: true,
    })
}

pub struct AmdViIommu<'m, M: PhysMem + ?Sized, R: Mmio, C: Clock> {
    mem: &'m M,
    clock: C,
    units: Vec<Unit<R>>,
    levels: Levels,
    coverage: BTreeMap<Sbdf, usize>,
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
                interrupt_remapping: s.interrupt_remapping,
                unconfirmed: false,
            })
            .collect();
        Ok(AmdViIommu {
            mem,
            clock,
            units,
            levels,
            coverage,
        })
    }

    pub fn unit_summaries(&self) -> Vec<String> {
        self.units
            .iter()
            .map(|u| {
                format!(
                    "segment {} levels {} device table {} entries at {} (up to {} levels supported)",
                    u.segment,
                    self.levels.count(),
                    u.table.entries(),
                    u.table.base(),
                    u.hw.features().max_levels().map_or(0, |l| l.count())
                )
            })
            .collect()
    }

    fn unit(&self, unit: usize) -> Result<&Unit<R>, IommuError> {
        self.units
            .get(unit)
            .ok_or_else(|| IommuError::Inconsistent(format!("no AMD-Vi unit {unit}")))
    }

    fn invalidate_page(
        &mut self,
        dids: &[u16],
        iova: u64,
        size: PageSize,
    ) -> Result<(), IommuError> {
        let mut result = Ok(());
        for (u, did) in self.units.iter_mut().zip(dids) {
            if let Err(e) =
                u.hw.after_mapping_change(self.mem, &self.clock, *did, iova, size)
            {
                result = Err(IommuError::TimedOut(format!("{e}")));
            }
        }
        result
    }
}

fn table_error(e: impl core::fmt::Display) -> IommuError {
    IommuError::Inconsistent(format!("{e}"))
}

impl<M: PhysMem + ?Sized, R: Mmio, C: Clock> Vendor for AmdViIommu<'_, M, R, C> {
    type Entry = DeviceTableEntry;
    type Quarantine = QuarantineTables;
    type Tables = PageTable;
    type Batch = SwitchBatch;
    type Interrupts = AmdInterrupts;

    fn name(&self) -> &'static str {
        "AMD-Vi"
    }

    fn levels(&self) -> u8 {
        self.levels.count() as u8
    }

    fn unit_count(&self) -> usize {
        self.units.len()
    }

    fn unit_of(&self, sbdf: Sbdf) -> Option<usize> {
        self.coverage.get(&sbdf).copied()
    }

    fn domain_ids(&self, _unit: usize) -> Range<u32> {
        DOMAIN_IDS
    }

    fn prepare(
        &mut self,
        _held: &LockHeld,
        _alloc: &mut dyn FrameAllocator,
        unit: usize,
        rids: &[Bdf],
    ) -> Result<(), IommuError> {
        let u = self.unit(unit)?;
        match rids.iter().find(|r| !u.table.covers(r.requester_id())) {
            Some(r) => Err(IommuError::RequesterOutOfRange(*r)),
            None => Ok(()),
        }
    }

    fn build_quarantine(
        &mut self,
        _held: &LockHeld,
        alloc: &mut dyn FrameAllocator,
        reserved: &[ReservedRange],
        scratch: bool,
    ) -> Result<QuarantineTables, IommuError> {
        let unity: Vec<(u64, u64, bool, bool)> = reserved
            .iter()
            .map(|r| (r.start, r.end, r.read, r.write))
            .collect();
        QuarantineTables::build(self.mem, alloc, self.levels, &unity, scratch)
            .map_err(|e| super::quarantine_error(e, reserved))
    }

    fn free_quarantine(&mut self, alloc: &mut dyn FrameAllocator, q: QuarantineTables) {
        q.free(alloc);
    }

    fn quarantine_pages(&self, q: &QuarantineTables) -> usize {
        q.page_count()
    }

    fn zero_scratch(&self, q: &QuarantineTables) {
        q.zero_scratch(self.mem);
    }

    fn blocked_entry(&self, did: u16) -> DeviceTableEntry {
        DeviceTableEntry::blocking(did)
    }

    fn quarantine_entry(&self, q: &QuarantineTables, did: u16) -> DeviceTableEntry {
        q.device_table_entry(did)
    }

    fn guest_entry(&self, tables: &PageTable, did: u16) -> DeviceTableEntry {
        DeviceTableEntry::translated(tables.translation_root(), did)
    }

    fn read_entry(&self, unit: usize, rid: Bdf) -> Result<DeviceTableEntry, IommuError> {
        self.unit(unit)?
            .table
            .read(self.mem, rid.requester_id())
            .map_err(table_error)
    }

    fn exchange(
        &mut self,
        _held: &LockHeld,
        unit: usize,
        rid: Bdf,
        expected: DeviceTableEntry,
        new: DeviceTableEntry,
    ) -> Result<(), IommuError> {
        self.unit(unit)?
            .table
            .exchange(self.mem, rid.requester_id(), expected, new)
            .map_err(table_error)
    }

    fn new_batch(&self) -> SwitchBatch {
        SwitchBatch::new()
    }

    fn entry_changed(
        &self,
        _unit: usize,
        batch: &mut SwitchBatch,
        rid: Bdf,
        old: DeviceTableEntry,
        new: DeviceTableEntry,
    ) {
        batch.entry_changed(rid.requester_id(), old, new);
    }

    fn domain_retired(&self, batch: &mut SwitchBatch, did: u16) {
        batch.domain_retired(did);
    }

    fn flush(
        &mut self,
        _held: &LockHeld,
        unit: usize,
        batch: &SwitchBatch,
    ) -> Result<FlushCost, IommuError> {
        let (mem, clock) = (self.mem, &self.clock);
        self.unit(unit)?;
        let u = &mut self.units[unit];
        let before = u.hw.command_stats();
        // A clone of a heapless batch: no allocation (deassign and destroy flush here).
        let everything;
        let batch = if u.unconfirmed {
            let mut owed = batch.clone();
            owed.invalidate_everything();
            everything = owed;
            &everything
        } else {
            batch
        };
        let flushed = u.hw.flush(mem, batch, clock);
        u.unconfirmed = flushed.is_err();
        flushed.map_err(|e| IommuError::TimedOut(format!("{e}")))?;
        let after = u.hw.command_stats();
        Ok(FlushCost {
            descriptors: after.commands - before.commands,
            waits: after.waits - before.waits,
            mmio_writes: after.mmio_writes - before.mmio_writes,
        })
    }

    fn create_tables(&mut self, alloc: &mut dyn FrameAllocator) -> Result<PageTable, IommuError> {
        PageTable::new(self.mem, alloc, self.levels).map_err(|_| IommuError::OutOfMemory)
    }

    fn free_tables(&mut self, alloc: &mut dyn FrameAllocator, tables: PageTable) {
        tables.free(self.mem, alloc);
    }

    fn map_sized(
        &mut self,
        tables: &mut PageTable,
        alloc: &mut dyn FrameAllocator,
        dids: &[u16],
        iova: u64,
        pa: PhysAddr,
        size: PageSize,
        writable: bool,
    ) -> Result<(), IommuError> {
        let perms = Perms {
            read: true,
            write: writable,
        };
        tables
            .map_sized(self.mem, alloc, iova, pa, perms, size)
            .map_err(|e| match e {
                MapError::OutOfFrames => IommuError::OutOfMemory,
                e => table_error(e),
            })?;
        // QEMU's unit caches not-present entries (NpCache), so maps are invalidated too.
        if self.invalidate_page(dids, iova, size).is_err() {
            log::warn!("amd-vi: page invalidation after map timed out");
        }
        Ok(())
    }

    fn unmap_sized(
        &mut self,
        tables: &mut PageTable,
        dids: &[u16],
        iova: u64,
        size: PageSize,
    ) -> Result<Option<PhysAddr>, IommuError> {
        let (pa, removed) = match tables.unmap_sized(self.mem, iova) {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(None),
            Err(e @ MapError::InsideLargePage { .. }) => return Err(table_error(e)),
            Err(_) => return Ok(None),
        };
        // Whatever was removed is what the caches may hold: invalidate its size.
        self.invalidate_page(dids, iova, removed)?;
        if removed != size {
            return Err(IommuError::Inconsistent(format!(
                "unmap of {iova:#x} as {size:?} found a {removed:?} page"
            )));
        }
        Ok(Some(pa))
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
                kind: FaultKind::Dma,
            };
            let drained =
                u.hw.drain_events(self.mem, &self.clock, |event| match event {
                    Event::IoPageFault {
                        device_id,
                        address,
                        flags,
                        ..
                    } => sink(DmaFault {
                        // I = 1: an interrupt request the remapping blocked (§2.5.4).
                        kind: if flags.interrupt() {
                            FaultKind::Interrupt { index: None }
                        } else {
                            FaultKind::Dma
                        },
                        ..fault(
                            device_id,
                            flags.write(),
                            address,
                            String::from(match (flags.interrupt(), flags.present()) {
                                (true, _) => "interrupt request blocked by its remapping table",
                                (false, true) => "I/O page fault: permission",
                                (false, false) => "I/O page fault: not present",
                            }),
                        )
                    }),
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
                    other => log::warn!("amd-vi: event {other}"),
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

    // Interrupt remapping: thin calls into the `AmdViIommu` interrupt functions below.
    fn interrupt_remapping(&self, unit: usize) -> bool {
        // Every DTE the kernel writes has IV = 1 and IntCtl remapped or aborted; whether the
        // unit honours them is what its IVRS says.
        self.units.get(unit).is_some_and(|u| u.interrupt_remapping)
    }

    fn build_interrupts(
        &mut self,
        _held: &LockHeld,
        alloc: &mut dyn FrameAllocator,
        unit: usize,
        rids: &[Bdf],
        count: u16,
    ) -> Result<Option<AmdInterrupts>, IommuError> {
        self.attach_interrupt_table(alloc, unit, rids, count)
            .map(Some)
    }

    fn interrupt_count(&self, irq: &AmdInterrupts) -> u16 {
        irq.table.entries() as u16
    }

    fn program_interrupt(
        &mut self,
        _held: &LockHeld,
        unit: usize,
        irq: &AmdInterrupts,
        entry: u16,
        target: InterruptTarget,
    ) -> Result<MsiAddress, IommuError> {
        let irte = Irte {
            vector: target.vector,
            destination: target.apic_id,
        };
        irq.table
            .program(self.mem, entry, irte)
            .map_err(intremap_error)?;
        self.invalidate_interrupts(unit, irq)?;
        let m = MsiMessage::remapped(entry);
        Ok(MsiAddress {
            address: m.address,
            data: m.data,
        })
    }

    fn block_interrupt(
        &mut self,
        _held: &LockHeld,
        unit: usize,
        irq: &AmdInterrupts,
        entry: u16,
    ) -> Result<(), IommuError> {
        irq.table.block(self.mem, entry).map_err(intremap_error)?;
        self.invalidate_interrupts(unit, irq)
    }

    fn block_interrupts(
        &mut self,
        _held: &LockHeld,
        _unit: usize,
        batch: &mut SwitchBatch,
        irq: &AmdInterrupts,
    ) -> Result<(), IommuError> {
        // Invalidated even if a store failed: what did get blocked must not stay cached.
        let blocked = irq.table.block_all(self.mem).map_err(intremap_error);
        for id in &irq.device_ids {
            batch.interrupt_table_changed(*id);
        }
        blocked
    }

    fn free_interrupts(
        &mut self,
        _held: &LockHeld,
        alloc: &mut dyn FrameAllocator,
        unit: usize,
        irq: AmdInterrupts,
    ) {
        self.detach_interrupt_table(alloc, unit, irq);
    }
}

impl<M: PhysMem + ?Sized, R: Mmio, C: Clock> Inspect for AmdViIommu<'_, M, R, C> {
    fn translate(&self, rid: Sbdf, iova: u64, write: bool) -> Result<PhysAddr, String> {
        let unit = self
            .unit_of(rid)
            .or_else(|| self.units.iter().position(|u| u.segment == rid.segment))
            .ok_or_else(|| format!("no IOMMU covers {rid}"))?;
        // From what the unit is programmed with (Device Table Base register, EFR.HATS),
        // through the walker's own bit layouts.
        walker::translate_programmed(
            self.mem,
            self.units[unit].hw.registers(),
            rid.bdf.requester_id(),
            iova,
            write,
        )
        .map_err(|f| format!("{f}"))
    }

    fn scratch_page(&self, q: &QuarantineTables) -> Option<PhysAddr> {
        q.scratch_page()
    }
}

/// A device's own interrupt remapping table and the DeviceIDs whose DTEs point at it.
#[derive(Debug)]
pub struct AmdInterrupts {
    table: InterruptTable,
    device_ids: heapless::Vec<u16, MAX_REQUESTER_IDS>,
}

fn intremap_error(e: IntRemapError) -> IommuError {
    match e {
        IntRemapError::OutOfFrames => IommuError::OutOfMemory,
        e => IommuError::Inconsistent(format!("interrupt table: {e}")),
    }
}

/// Before the unit is enabled: every DeviceID in `device_ids` that `table` covers gets IV = 1,
/// IntCtl = 00b (interrupts target-aborted) — QEMU passes MSIs of an IV = 0 DTE straight
/// through. The caller leaves out IOAPIC / HPET special devices, whose interrupts must pass.
/// Bring-up's invalidate-everything then drops whatever the unit cached. Returns how many.
pub fn block_interrupts_before_enable<M: PhysMem + ?Sized>(
    table: &DeviceTable,
    mem: &M,
    device_ids: impl Iterator<Item = u16>,
) -> Result<usize, String> {
    let mut blocked = 0;
    for id in device_ids.filter(|id| table.covers(*id)) {
        table
            .block_interrupts(mem, id)
            .map_err(|e| format!("blocking interrupts of DeviceID {id:#06x}: {e}"))?;
        blocked += 1;
    }
    Ok(blocked)
}

/// The interrupt half of the AMD-Vi vendor: one table per device, referenced from its DTEs.
impl<M: PhysMem + ?Sized, R: Mmio, C: Clock> AmdViIommu<'_, M, R, C> {
    /// The IRTE format of the first unit (for the boot log).
    pub fn irte_format(&self) -> Option<lazaret_amd_vi::IrteFormat> {
        self.units.first().map(|u| u.hw.irte_format())
    }

    /// A fresh table (every entry blocked) pointed at from the DTE of each of `rids`
    /// (IntCtl remapped, pass bits off), then DTE + table invalidation, fenced.
    fn attach_interrupt_table(
        &mut self,
        alloc: &mut dyn FrameAllocator,
        unit: usize,
        rids: &[Bdf],
        count: u16,
    ) -> Result<AmdInterrupts, IommuError> {
        let u = self.unit(unit)?;
        let table = InterruptTable::new(self.mem, alloc, u.hw.irte_format(), u32::from(count))
            .map_err(intremap_error)?;
        let ids: RequesterIds = rids.iter().copied().collect();
        let mut irq = AmdInterrupts {
            table,
            device_ids: heapless::Vec::new(),
        };
        for rid in &ids {
            let id = rid.requester_id();
            if irq.device_ids.contains(&id) {
                continue;
            }
            // A shared alias (a bridge's ID) ends up with the last member's table: the
            // group moves as one, so either table belongs to the same owner.
            if let Err(e) = u.table.set_interrupt_table(self.mem, id, &irq.table) {
                self.detach_interrupt_table(alloc, unit, irq);
                return Err(intremap_error(e));
            }
            let _ = irq.device_ids.push(id);
        }
        let (mem, clock) = (self.mem, &self.clock);
        if let Err(e) = self.units[unit]
            .hw
            .after_interrupt_dte_change(mem, clock, &irq.device_ids)
        {
            // The table blocks everything; a stale cached DTE blocked too (bring-up).
            log::warn!("amd-vi: interrupt DTE invalidation timed out: {e}");
        }
        Ok(irq)
    }

    fn invalidate_interrupts(
        &mut self,
        unit: usize,
        irq: &AmdInterrupts,
    ) -> Result<(), IommuError> {
        self.unit(unit)?;
        let (mem, clock) = (self.mem, &self.clock);
        self.units[unit]
            .hw
            .invalidate_interrupt_tables(mem, clock, &irq.device_ids)
            .map_err(|e| IommuError::TimedOut(format!("{e}")))
    }

    /// The DTEs still pointing at the table block instead; the table is freed once that is
    /// invalidated (else kept: a cached DTE may still reach it).
    fn detach_interrupt_table(
        &mut self,
        alloc: &mut dyn FrameAllocator,
        unit: usize,
        irq: AmdInterrupts,
    ) {
        let Some(u) = self.units.get(unit) else {
            return;
        };
        let ours = irq.table.dte_interrupt_bits();
        for id in &irq.device_ids {
            if u.table.interrupt_bits(self.mem, *id).ok() == Some(ours) {
                if let Err(e) = u.table.block_interrupts(self.mem, *id) {
                    log::error!("amd-vi: interrupt table kept: {e}");
                    return;
                }
            }
        }
        let (mem, clock) = (self.mem, &self.clock);
        match self.units[unit]
            .hw
            .after_interrupt_dte_change(mem, clock, &irq.device_ids)
        {
            Ok(()) => irq.table.free(alloc),
            Err(e) => log::error!("amd-vi: interrupt table kept (invalidation: {e})"),
        }
    }
}
