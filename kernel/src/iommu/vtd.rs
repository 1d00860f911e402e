//! Intel VT-d behind the [`Vendor`] seam: one root table per unit, context entries as the
//! switched entries, second-level tables for guests and quarantine. Bring-up is here; the
//! owner-switch flow is the core's.
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;

use lazaret_types::PAGE_SIZE;
use lazaret_types::{Bdf, FrameAllocator, Mmio, PhysAddr, PhysMem, Sbdf};
use lazaret_vtd::QuarantineContext;
use lazaret_vtd::{
    fault_reason_text, is_interrupt_fault, walker, CacheFlush, Clock, ContextEntry, Destination,
    IndexRange, IntRemapError, InterruptScope, InterruptTable, Irte, Levels, MapError, MsiMessage,
    PageTable, Perms, QuarantineTables, RootTable, SourceCheck, SwitchBatch, TableMemory, VtdUnit,
    MAX_INTERRUPT_ENTRIES,
};

use crate::passthrough::iommu::{
    DmaFault, FaultKind, FlushCost, Inspect, InterruptTarget, IommuError, MsiAddress, PageSize,
    ReservedRange, Vendor,
};
use crate::passthrough::LockHeld;

/// Every hardware handshake and invalidation wait gives up after this long.
pub const TIMEOUT_US: u64 = 100_000;

/// One DRHD as the kernel found it.
pub struct UnitConfig<R> {
    pub regs: R,
    pub segment: u16,
    pub register_base: PhysAddr,
    /// Bytes of the register window the DRHD gives (and the kernel mapped).
    pub window_bytes: u64,
    /// Covers every device of the segment not claimed by another unit's scopes.
    pub include_all: bool,
}

struct Unit<R: Mmio> {
    hw: VtdUnit<R>,
    root: RootTable,
    segment: u16,
    include_all: bool,
    /// The unit's interrupt remapping table, while IRE is on (`None`: no ECAP.IR, no queued
    /// invalidation, or enabling failed — said loudly at bring-up).
    interrupts: Option<InterruptTable>,
    /// A flush failed: the unit may have dropped what it owed (a descriptor skipped after
    /// IQE), so the next flush invalidates every cache before anything is trusted again.
    unconfirmed: bool,
}

/// A device's entries in its unit's interrupt remapping table: an aligned index range
/// (blocked with one IEC descriptor) and the source-ID check that lets only its requester IDs
/// use them.
#[derive(Debug)]
pub struct VtdInterrupts {
    range: IndexRange,
    source: SourceCheck,
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
}

/// Out of frames is out of memory; anything else is a mapping the core should not have asked for.
fn map_error(e: MapError) -> IommuError {
    match e {
        MapError::OutOfFrames => IommuError::OutOfMemory,
        e => IommuError::Inconsistent(format!("{e}")),
    }
}

/// A 2 MiB mapping as 512 4 KiB leaves, for units without SLLPS; all or nothing.
fn map_as_small_pages<M: PhysMem + ?Sized>(
    tm: TableMemory<'_, M, dyn CacheFlush + '_>,
    tables: &mut PageTable,
    alloc: &mut dyn FrameAllocator,
    iova: u64,
    pa: PhysAddr,
    perms: Perms,
) -> Result<(), IommuError> {
    for k in 0..512u64 {
        let offset = k * PAGE_SIZE;
        if let Err(e) = tables.map(tm, alloc, iova + offset, PhysAddr(pa.0 + offset), perms) {
            (0..k).for_each(|j| {
                let _ = tables.unmap(tm, iova + j * PAGE_SIZE);
            });
            return Err(map_error(e));
        }
    }
    Ok(())
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
        let mut hws: Vec<(VtdUnit<R>, u16, PhysAddr, bool)> = Vec::new();
        for c in configs {
            // A window too small for the registers CAP and ECAP place would have the driver
            // touch memory beyond the mapping.
            let hw = VtdUnit::checked(c.regs, c.window_bytes, TIMEOUT_US)
                .map_err(|e| unit_error(c.register_base, e))?;
            hws.push((hw, c.segment, c.register_base, c.include_all));
        }
        // One depth for every table, chosen once: the deepest every unit supports, up to 4.
        let levels = [Levels::Four, Levels::Three, Levels::Five]
            .into_iter()
            .find(|l| hws.iter().all(|(u, ..)| u.capabilities().supports(*l)))
            .ok_or(VtdError::NoCommonDepth)?;
        let mut units = Vec::new();
        for (mut hw, segment, base, include_all) in hws {
            let root = RootTable::new(TableMemory::new(mem, flush), alloc)
                .map_err(|_| VtdError::OutOfMemory)?;
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
            let interrupts = enable_interrupt_remapping(mem, flush, &clock, &mut hw, base, alloc);
            units.push(Unit {
                hw,
                root,
                segment,
                include_all,
                interrupts,
                unconfirmed: false,
            });
        }
        Ok(VtdIommu {
            mem,
            flush,
            clock,
            units,
            levels,
            coverage,
        })
    }

    /// Whether every unit walks 2 MiB second-level leaves (CAP.SLLPS bit 0, §10.4.2): the
    /// tables are shared by all of them.
    fn large_pages(&self) -> bool {
        self.units
            .iter()
            .all(|u| u.hw.capabilities().sllps() & 1 != 0)
    }

    fn tm(&self) -> TableMemory<'m, M, dyn CacheFlush + 'm> {
        TableMemory::new(self.mem, self.flush)
    }

    fn unit(&self, unit: usize) -> Result<&Unit<R>, IommuError> {
        self.units
            .get(unit)
            .ok_or_else(|| IommuError::Inconsistent(format!("no VT-d unit {unit}")))
    }

    /// Units' capabilities, for the boot log.
    pub fn unit_summaries(&self) -> Vec<String> {
        self.units
            .iter()
            .map(|u| {
                let cap = u.hw.capabilities();
                let ecap = u.hw.ext_capabilities();
                format!(
                    "segment {} levels {} DIDs {} caching-mode {} queued-invalidation {} coherent {} fault-records {} {}",
                    u.segment,
                    self.levels.count(),
                    cap.domain_ids(),
                    cap.caching_mode(),
                    ecap.queued_invalidation(),
                    ecap.coherent(),
                    cap.fault_records(),
                    interrupt_summary(u.interrupts.as_ref())
                )
            })
            .collect()
    }
}

impl<M: PhysMem + ?Sized, R: Mmio, C: Clock> Vendor for VtdIommu<'_, M, R, C> {
    type Entry = ContextEntry;
    type Quarantine = QuarantineTables;
    type Tables = PageTable;
    type Batch = SwitchBatch;
    type Interrupts = VtdInterrupts;

    fn name(&self) -> &'static str {
        "Intel VT-d"
    }

    fn levels(&self) -> u8 {
        self.levels.count() as u8
    }

    fn unit_count(&self) -> usize {
        self.units.len()
    }

    fn unit_of(&self, sbdf: Sbdf) -> Option<usize> {
        self.coverage.get(&sbdf).copied().or_else(|| {
            self.units
                .iter()
                .position(|u| u.include_all && u.segment == sbdf.segment)
        })
    }

    fn domain_ids(&self, unit: usize) -> Range<u32> {
        self.units
            .get(unit)
            .map_or(0..0, |u| u.hw.capabilities().usable_domain_ids())
    }

    fn prepare(
        &mut self,
        _held: &LockHeld,
        alloc: &mut dyn FrameAllocator,
        unit: usize,
        rids: &[Bdf],
    ) -> Result<(), IommuError> {
        let (mem, flush) = (self.mem, self.flush);
        self.unit(unit)?;
        let u = &mut self.units[unit];
        for rid in rids {
            let created = u
                .root
                .ensure_bus(TableMemory::new(mem, flush), alloc, rid.bus())
                .map_err(|_| IommuError::OutOfMemory)?;
            if created && u.hw.after_root_entry_present(mem, &self.clock).is_err() {
                log::warn!(
                    "vtd: root-entry invalidation timed out for bus {:#04x}",
                    rid.bus()
                );
            }
        }
        Ok(())
    }

    fn build_quarantine(
        &mut self,
        _held: &LockHeld,
        alloc: &mut dyn FrameAllocator,
        reserved: &[ReservedRange],
        scratch: bool,
    ) -> Result<QuarantineTables, IommuError> {
        let ranges: Vec<(u64, u64)> = reserved.iter().map(|r| (r.start, r.end)).collect();
        QuarantineTables::build(self.tm(), alloc, self.levels, &ranges, scratch)
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

    fn blocked_entry(&self, _did: u16) -> ContextEntry {
        ContextEntry::NOT_PRESENT
    }

    fn quarantine_entry(&self, q: &QuarantineTables, did: u16) -> ContextEntry {
        q.context_entry(did)
    }

    fn guest_entry(&self, tables: &PageTable, did: u16) -> ContextEntry {
        ContextEntry::translated(tables.root(), self.levels, did)
    }

    fn read_entry(&self, unit: usize, rid: Bdf) -> Result<ContextEntry, IommuError> {
        self.unit(unit)?
            .root
            .read_context(self.mem, rid)
            .ok_or_else(|| IommuError::Inconsistent(format!("bus of {rid} has no context table")))
    }

    fn exchange(
        &mut self,
        _held: &LockHeld,
        unit: usize,
        rid: Bdf,
        expected: ContextEntry,
        new: ContextEntry,
    ) -> Result<(), IommuError> {
        let tm = self.tm();
        self.unit(unit)?
            .root
            .switch_context(tm, rid, expected, new)
            .map_err(|e| IommuError::Inconsistent(format!("{rid}: {e}")))
    }

    fn new_batch(&self) -> SwitchBatch {
        SwitchBatch::new()
    }

    fn entry_changed(
        &self,
        unit: usize,
        batch: &mut SwitchBatch,
        rid: Bdf,
        old: ContextEntry,
        new: ContextEntry,
    ) {
        if let Some(u) = self.units.get(unit) {
            batch.entry_changed(u.hw.capabilities(), rid, old, new);
        }
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
        let (before, writes_before) = (u.hw.invalidation_stats(), u.hw.mmio_writes());
        // A copy of a batch on the stack: no allocation (deassign and destroy flush here).
        let mut owed = *batch;
        if u.unconfirmed {
            owed.invalidate_everything(u.interrupts.is_some());
        }
        let flushed = u.hw.flush(mem, &owed, clock);
        u.unconfirmed = flushed.is_err();
        flushed.map_err(|e| IommuError::TimedOut(format!("{e}")))?;
        let after = u.hw.invalidation_stats();
        Ok(FlushCost {
            descriptors: after.descriptors - before.descriptors,
            waits: after.waits - before.waits,
            mmio_writes: u.hw.mmio_writes() - writes_before,
        })
    }

    fn create_tables(&mut self, alloc: &mut dyn FrameAllocator) -> Result<PageTable, IommuError> {
        PageTable::new(self.tm(), alloc, self.levels).map_err(|_| IommuError::OutOfMemory)
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
            snoop: false,
        };
        let tm = self.tm();
        let order = match size {
            PageSize::Size4K => {
                tables.map(tm, alloc, iova, pa, perms).map_err(map_error)?;
                0
            }
            PageSize::Size2M if self.large_pages() => {
                tables
                    .map_sized(tm, alloc, iova, pa, perms, PageSize::Size2M)
                    .map_err(map_error)?;
                PageSize::Size2M.order()
            }
            PageSize::Size2M => {
                map_as_small_pages(tm, tables, alloc, iova, pa, perms)?;
                PageSize::Size2M.order()
            }
        };
        for (u, did) in self.units.iter_mut().zip(dids) {
            if u.hw
                .after_map(self.mem, *did, iova, order, &self.clock)
                .is_err()
            {
                log::warn!("vtd: IOTLB invalidation after map timed out");
            }
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
        let tm = self.tm();
        let removed = match tables.unmap_sized(tm, iova) {
            Ok(r) => r,
            Err(e @ MapError::InsideLargePage { .. }) => return Err(map_error(e)),
            Err(_) => None,
        };
        let pa = removed.map(|(pa, _)| pa);
        let mut any = pa.is_some();
        let order = match (size, removed) {
            (PageSize::Size4K, Some((_, PageSize::Size2M))) => PageSize::Size2M.order(),
            (PageSize::Size4K, _) => 0,
            (PageSize::Size2M, Some((_, PageSize::Size2M))) => PageSize::Size2M.order(),
            // Mapped as 512 small pages (no SLLPS): take the other 511 too.
            (PageSize::Size2M, _) => {
                for k in 1..512u64 {
                    any |= matches!(tables.unmap(tm, iova + k * PAGE_SIZE), Ok(Some(_)));
                }
                PageSize::Size2M.order()
            }
        };
        if !any {
            return Ok(None);
        }
        // Whatever was removed is invalidated, even when it was not what the caller named.
        for (u, did) in self.units.iter_mut().zip(dids) {
            u.hw.after_unmap(self.mem, *did, iova, order, &self.clock)
                .map_err(|e| IommuError::TimedOut(format!("{e}")))?;
        }
        if size == PageSize::Size4K && order != 0 {
            return Err(IommuError::Inconsistent(format!(
                "4 KiB unmap of {iova:#x} removed a 2 MiB leaf"
            )));
        }
        Ok(pa)
    }

    fn drain_faults(&mut self, sink: &mut dyn FnMut(DmaFault)) -> usize {
        let mut overflowed = 0;
        for u in &self.units {
            let segment = u.segment;
            let summary = u.hw.drain_faults(|r| {
                let kind = if is_interrupt_fault(r.reason) {
                    FaultKind::Interrupt {
                        index: r.interrupt_index(),
                    }
                } else {
                    FaultKind::Dma
                };
                sink(DmaFault {
                    segment,
                    requester: r.source_id,
                    write: r.write,
                    address: r.address,
                    reason: fault_reason_text(r.reason).into(),
                    kind,
                })
            });
            overflowed += usize::from(summary.overflow);
        }
        overflowed
    }

    // Interrupt remapping: thin calls into the `VtdIommu` interrupt functions below.
    fn interrupt_remapping(&self, unit: usize) -> bool {
        self.units
            .get(unit)
            .is_some_and(|u| u.interrupts.is_some() && u.hw.interrupt_remapping_enabled())
    }

    fn build_interrupts(
        &mut self,
        _held: &LockHeld,
        _alloc: &mut dyn FrameAllocator,
        unit: usize,
        rids: &[Bdf],
        count: u16,
    ) -> Result<Option<VtdInterrupts>, IommuError> {
        self.reserve_interrupts(unit, rids, count)
    }

    fn interrupt_count(&self, irq: &VtdInterrupts) -> u16 {
        irq.range.len()
    }

    fn program_interrupt(
        &mut self,
        _held: &LockHeld,
        unit: usize,
        irq: &VtdInterrupts,
        entry: u16,
        target: InterruptTarget,
    ) -> Result<MsiAddress, IommuError> {
        let index = self.program_irte(unit, irq, entry, Some(target))?;
        let m = MsiMessage::remappable(index);
        Ok(MsiAddress {
            address: m.address,
            data: m.data,
        })
    }

    fn block_interrupt(
        &mut self,
        _held: &LockHeld,
        unit: usize,
        irq: &VtdInterrupts,
        entry: u16,
    ) -> Result<(), IommuError> {
        self.program_irte(unit, irq, entry, None).map(drop)
    }

    fn block_interrupts(
        &mut self,
        _held: &LockHeld,
        unit: usize,
        batch: &mut SwitchBatch,
        irq: &VtdInterrupts,
    ) -> Result<(), IommuError> {
        let tm = self.tm();
        let Some(table) = self.unit(unit)?.interrupts.as_ref() else {
            return Ok(());
        };
        // Invalidated even if a store failed: what did get blocked must not stay cached.
        let blocked = table.block_range(tm, irq.range).map_err(intremap_error);
        batch.interrupt_entries_changed(irq.range.scope());
        blocked
    }

    fn free_interrupts(
        &mut self,
        _held: &LockHeld,
        _alloc: &mut dyn FrameAllocator,
        unit: usize,
        irq: VtdInterrupts,
    ) {
        self.release_interrupts(unit, irq);
    }
}

impl<M: PhysMem + ?Sized, R: Mmio, C: Clock> Inspect for VtdIommu<'_, M, R, C> {
    fn translate(&self, rid: Sbdf, iova: u64, write: bool) -> Result<PhysAddr, String> {
        let unit = self
            .unit_of(rid)
            .or_else(|| self.units.iter().position(|u| u.segment == rid.segment))
            .ok_or_else(|| format!("no unit covers {rid}"))?;
        // From what the unit is programmed with (RTADDR, CAP.SAGAW/MGAW), through the
        // walker's own bit layouts.
        walker::translate_programmed(
            self.mem,
            self.units[unit].hw.registers(),
            rid.bdf,
            iova,
            write,
        )
        .map_err(|f| format!("{f}"))
    }

    fn scratch_page(&self, q: &QuarantineTables) -> Option<PhysAddr> {
        q.scratch_page()
    }
}

/// Turns interrupt remapping on for one unit that offers it (ECAP.IR, queued invalidation on):
/// a table of every entry blocked, IRTA/SIRTP, IEC flush, IRE with CFI clear (compatibility
/// format blocked). A unit without it is reported loudly and keeps working for DMA.
fn enable_interrupt_remapping<M: PhysMem + ?Sized, R: Mmio>(
    mem: &M,
    flush: &dyn CacheFlush,
    clock: &impl Clock,
    hw: &mut VtdUnit<R>,
    base: PhysAddr,
    alloc: &mut dyn FrameAllocator,
) -> Option<InterruptTable> {
    if !hw.ext_capabilities().interrupt_remapping() {
        log::error!(
            "vtd: unit at {base} has NO interrupt remapping (ECAP.IR = 0): its devices can raise any host interrupt; assignment is refused unless intremap=off"
        );
        return None;
    }
    let tm = TableMemory::new(mem, flush);
    let table = match InterruptTable::new(tm, alloc, MAX_INTERRUPT_ENTRIES, false) {
        Ok(t) => t,
        Err(e) => {
            log::error!("vtd: unit at {base}: no interrupt remapping table: {e}");
            return None;
        }
    };
    match hw.enable_interrupt_remapping(mem, &table, clock) {
        Ok(()) => Some(table),
        Err(e) => {
            log::error!("vtd: unit at {base}: interrupt remapping NOT enabled: {e}");
            // IRE never came on; IRTA may point at the table, but nothing reads it.
            if hw.interrupt_remapping_enabled() {
                Some(table)
            } else {
                table.free(alloc);
                None
            }
        }
    }
}

fn interrupt_summary(table: Option<&InterruptTable>) -> String {
    match table {
        Some(t) => format!(
            "interrupt-remapping on ({} entries, compatibility format blocked)",
            t.entries()
        ),
        None => String::from("interrupt-remapping OFF"),
    }
}

fn intremap_error(e: IntRemapError) -> IommuError {
    match e {
        IntRemapError::OutOfFrames => IommuError::OutOfMemory,
        e => IommuError::Inconsistent(format!("interrupt table: {e}")),
    }
}

/// The interrupt half of the VT-d vendor: entries in the unit's one table.
impl<M: PhysMem + ?Sized, R: Mmio, C: Clock> VtdIommu<'_, M, R, C> {
    /// Interrupt entries of the units that remap, and how many units do not.
    pub fn interrupt_entries(&self) -> (u32, usize) {
        let entries = self
            .units
            .iter()
            .filter_map(|u| u.interrupts.as_ref().map(InterruptTable::entries))
            .sum();
        let without = self.units.iter().filter(|u| u.interrupts.is_none()).count();
        (entries, without)
    }

    fn reserve_interrupts(
        &mut self,
        unit: usize,
        rids: &[Bdf],
        count: u16,
    ) -> Result<Option<VtdInterrupts>, IommuError> {
        self.unit(unit)?;
        let source = SourceCheck::for_requester_ids(rids)
            .ok_or_else(|| IommuError::Inconsistent("a device with no requester ID".into()))?;
        let Some(table) = self.units[unit].interrupts.as_mut() else {
            return Ok(None);
        };
        let Some(range) = table.reserve(count) else {
            log::warn!(
                "vtd: interrupt table full: a device ({:?}) gets no interrupt entries (its interrupts stay blocked)",
                rids.first()
            );
            return Ok(None);
        };
        // Released ranges were blocked and invalidated; these entries block already.
        Ok(Some(VtdInterrupts { range, source }))
    }

    /// Entry `entry` → `target` (`None`: blocked), then its IEC entry invalidated; returns
    /// its table index.
    fn program_irte(
        &mut self,
        unit: usize,
        irq: &VtdInterrupts,
        entry: u16,
        target: Option<InterruptTarget>,
    ) -> Result<u16, IommuError> {
        let (mem, tm) = (self.mem, self.tm());
        self.unit(unit)?;
        let index = irq.range.index(entry).ok_or_else(|| {
            IommuError::Inconsistent(format!(
                "interrupt entry {entry} beyond the device's {}",
                irq.range.len()
            ))
        })?;
        let u = &mut self.units[unit];
        let table = u
            .interrupts
            .as_ref()
            .ok_or_else(|| IommuError::Inconsistent("no interrupt table".into()))?;
        match target {
            Some(t) => {
                let destination = match u8::try_from(t.apic_id) {
                    Ok(id) => Destination::Xapic(id),
                    Err(_) => Destination::X2apic(t.apic_id),
                };
                let irte = Irte {
                    vector: t.vector,
                    destination,
                    source: irq.source,
                };
                table.program(tm, index, irte).map_err(intremap_error)?
            }
            None => table.block(tm, index).map_err(intremap_error)?,
        }
        let scope = InterruptScope::Entries {
            index,
            index_mask: 0,
        };
        u.hw.invalidate_interrupt_entries(mem, scope, &self.clock)
            .map_err(|e| IommuError::TimedOut(format!("{e}")))?;
        Ok(index)
    }

    /// Every entry of `range` blocked, then one IEC descriptor for the range. No allocation.
    fn block_irte_range(&mut self, unit: usize, range: IndexRange) -> Result<(), IommuError> {
        let (mem, tm) = (self.mem, self.tm());
        self.unit(unit)?;
        let u = &mut self.units[unit];
        let Some(table) = u.interrupts.as_ref() else {
            return Ok(());
        };
        // Block every entry even if one fails, then invalidate regardless.
        let blocked = table.block_range(tm, range).map_err(intremap_error);
        u.hw.invalidate_interrupt_entries(mem, range.scope(), &self.clock)
            .map_err(|e| IommuError::TimedOut(format!("{e}")))?;
        blocked
    }

    fn release_interrupts(&mut self, unit: usize, irq: VtdInterrupts) {
        if let Err(e) = self.block_irte_range(unit, irq.range) {
            // Not released: a stale cache entry could otherwise reach the next owner.
            log::error!("vtd: interrupt entries kept reserved: {e}");
            return;
        }
        if let Some(t) = self.units.get_mut(unit).and_then(|u| u.interrupts.as_mut()) {
            t.release(irq.range);
        }
    }
}
