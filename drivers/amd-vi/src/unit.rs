//! One AMD-Vi unit: its registers, command queue and event log, bring-up, and the flush
//! every owner switch ends with.
//!
//! Bring-up ([`AmdViUnit::bring_up`], §3.4): a unit firmware left running is disabled first
//! (CmdBufEn, EventLogEn, then IommuEn off, and the running bits awaited) — base registers
//! written while the unit runs are undefined. Then the device table, command buffer and
//! event log bases are programmed with IommuEn = 0; the exclusion range stays off (base and
//! limit 0: an exclusion range lets matching DMA bypass translation entirely, the opposite
//! of quarantine; IVMD unity ranges go into the per-device tables instead); Control.Coherent
//! is set (§3.4.4: device-table fetches snoop the CPU caches, which is what writing DTEs
//! through ordinary stores assumes); then CmdBufEn, EventLogEn and finally IommuEn, and a
//! bounded wait for Status.CmdBufRun and EventLogRun (they only follow IommuEn: QEMU's
//! `amdvi_handle_control_write` gates both on it). Last, whatever the unit cached before is
//! dropped: INVALIDATE_IOMMU_ALL when EFR.IASup, else every DTE and every DomainID, one wait.
//!
//! Control.GAEn is set with Coherent when EFR.GASup, so interrupt remapping tables use
//! 128-bit entries ([`AmdViUnit::irte_format`]).
//!
//! Command errors stop the command processor ([`crate::command`]); every wait here detects
//! that, restarts the ring (CmdBufEn off, head = tail = 0, CmdBufEn on — §3.4.7) and reports
//! the refused command, so the next batch runs instead of timing out.

use core::fmt;

use lazaret_types::{FrameAllocator, Mmio, PhysAddr, PhysMem, PAGE_SIZE};

use core::cell::Cell;

use crate::command::{Command, CommandError, CommandQueue, CommandStats, PageScope};
use crate::device_table::DeviceTable;
use crate::event_log::{wait_status, DrainSummary, Event, EventLog, EventLogError};
use crate::pagetable::PageSize;
use crate::poll::{Clock, TimedOut};
use crate::regs::{self, control, status, ExtendedFeatures, RingLength};
use crate::switch::SwitchBatch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitError {
    /// No frame for the command buffer, completion-wait slot or event log.
    OutOfFrames,
    /// A Status running bit did not follow the Control register.
    StatusTimedOut(TimedOut),
    Command(CommandError),
    EventLog(EventLogError),
    /// INVALIDATE_IOMMU_ALL without EFR.IASup.
    InvalidateAllUnsupported,
    /// Firmware left the unit running (Control shown); [`AmdViUnit::new`] will not program
    /// rings under a running unit — [`AmdViUnit::bring_up`] disables it first.
    LeftEnabled {
        control: u64,
    },
    /// The command processor stopped on an error and could not be restarted.
    CommandRestartFailed(TimedOut),
}

/// The step of [`AmdViUnit::bring_up`] that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BringUpStep {
    /// Disabling what firmware left running.
    DisableFirmwareSetup,
    /// Allocating and programming the command buffer and event log.
    ProgramRings,
    /// Setting CmdBufEn, EventLogEn, IommuEn and waiting for the running bits.
    Enable,
    /// The initial invalidation of everything cached.
    InitialInvalidation,
}

/// [`AmdViUnit::bring_up`] failed at `step` because of `cause`. Frames already given to
/// the unit's rings are not returned: after a failed enable or invalidation the unit may
/// still read them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BringUpError {
    pub step: BringUpStep,
    pub cause: UnitError,
}

impl fmt::Display for BringUpStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BringUpStep::DisableFirmwareSetup => "disabling the firmware's set-up",
            BringUpStep::ProgramRings => "programming the command buffer and event log",
            BringUpStep::Enable => "enabling translation and the rings",
            BringUpStep::InitialInvalidation => "invalidating everything cached",
        })
    }
}

impl fmt::Display for BringUpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AMD-Vi bring-up, {}: {}", self.step, self.cause)
    }
}

impl fmt::Display for UnitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnitError::OutOfFrames => write!(f, "out of frames for AMD-Vi queues"),
            UnitError::StatusTimedOut(t) => write!(f, "AMD-Vi status: {t}"),
            UnitError::Command(e) => write!(f, "AMD-Vi command: {e}"),
            UnitError::EventLog(e) => write!(f, "AMD-Vi {e}"),
            UnitError::InvalidateAllUnsupported => {
                write!(f, "INVALIDATE_IOMMU_ALL not supported (EFR.IASup = 0)")
            }
            UnitError::LeftEnabled { control } => write!(
                f,
                "AMD-Vi left running by firmware (Control {control:#x}); disable it first"
            ),
            UnitError::CommandRestartFailed(t) => {
                write!(f, "AMD-Vi command buffer restart: {t}")
            }
        }
    }
}

impl From<CommandError> for UnitError {
    fn from(e: CommandError) -> Self {
        UnitError::Command(e)
    }
}

/// An AMD-Vi unit behind its MMIO registers.
pub struct AmdViUnit<R: Mmio> {
    regs: R,
    features: ExtendedFeatures,
    commands: CommandQueue,
    events: EventLog,
    timeout_us: u64,
    /// Entries of the programmed device table: what "every DTE" means without EFR.IASup.
    device_ids: Cell<u32>,
}

/// Control bits that mean "running": none may be set while base registers are written.
const RUNNING: u64 = control::IOMMU_EN | control::CMD_BUF_EN | control::EVENT_LOG_EN;

/// CmdBufEn and EventLogEn off, then IommuEn (and the interrupt enables) off; waits for both
/// running bits to clear.
fn disable_regs<R: Mmio + ?Sized>(
    regs: &R,
    clock: &(impl Clock + ?Sized),
    timeout_us: u64,
) -> Result<(), UnitError> {
    let c = regs.read64(regs::CONTROL);
    let c = c & !(control::CMD_BUF_EN | control::EVENT_LOG_EN);
    regs.write64(regs::CONTROL, c);
    let interrupts = control::EVENT_INT_EN | control::COM_WAIT_INT_EN;
    regs.write64(regs::CONTROL, c & !(control::IOMMU_EN | interrupts));
    wait_status(
        regs,
        clock,
        timeout_us,
        status::CMD_BUF_RUN | status::EVENT_LOG_RUN,
        false,
    )
    .map_err(UnitError::StatusTimedOut)
}

/// Three single frames, or none.
fn alloc_three<A: FrameAllocator + ?Sized>(alloc: &mut A) -> Option<[PhysAddr; 3]> {
    let a = alloc.alloc_frame()?;
    let Some(b) = alloc.alloc_frame() else {
        alloc.free_frame(a);
        return None;
    };
    let Some(c) = alloc.alloc_frame() else {
        alloc.free_frame(a);
        alloc.free_frame(b);
        return None;
    };
    Some([a, b, c])
}

impl<R: Mmio> AmdViUnit<R> {
    /// The whole bring-up sequence (module docs): disable what firmware left running,
    /// program `table` and the rings, set Coherent, enable, invalidate everything cached.
    /// `timeout_us` bounds every wait, here and later.
    pub fn bring_up<M, A>(
        regs: R,
        mem: &M,
        alloc: &mut A,
        table: &DeviceTable,
        clock: &(impl Clock + ?Sized),
        timeout_us: u64,
    ) -> Result<Self, BringUpError>
    where
        M: PhysMem + ?Sized,
        A: FrameAllocator + ?Sized,
    {
        let fail = |step| move |cause| BringUpError { step, cause };
        if regs.read64(regs::CONTROL) & RUNNING != 0 {
            disable_regs(&regs, clock, timeout_us)
                .map_err(fail(BringUpStep::DisableFirmwareSetup))?;
        }
        let mut unit =
            Self::new(regs, mem, alloc, timeout_us).map_err(fail(BringUpStep::ProgramRings))?;
        unit.set_device_table(table);
        // GAEn with GASup: 128-bit IRTEs (see `crate::intremap`), set while IommuEn is off.
        let ga = if unit.features.guest_apic() {
            control::GA_EN
        } else {
            0
        };
        unit.update_control(control::COHERENT | ga, 0);
        unit.enable(clock).map_err(fail(BringUpStep::Enable))?;
        let mut everything = SwitchBatch::new();
        everything.invalidate_everything();
        unit.flush(mem, &everything, clock)
            .map_err(fail(BringUpStep::InitialInvalidation))?;
        Ok(unit)
    }

    /// Reads EFR, allocates a one-page command buffer, the completion-wait slot and a
    /// one-page event log, and programs their base registers. Refuses
    /// ([`UnitError::LeftEnabled`]) a unit that is running: use [`Self::bring_up`], which
    /// disables it first. `timeout_us` bounds every wait.
    pub fn new<M, A>(regs: R, mem: &M, alloc: &mut A, timeout_us: u64) -> Result<Self, UnitError>
    where
        M: PhysMem + ?Sized,
        A: FrameAllocator + ?Sized,
    {
        let c = regs.read64(regs::CONTROL);
        if c & RUNNING != 0 {
            return Err(UnitError::LeftEnabled { control: c });
        }
        let [cmd, slot, log] = alloc_three(alloc).ok_or(UnitError::OutOfFrames)?;
        for f in [cmd, slot, log] {
            mem.zero(f, PAGE_SIZE);
        }
        let len = RingLength::ONE_PAGE;
        regs.write64(regs::COMMAND_BUFFER_BASE, len.base_register(cmd));
        regs.write64(regs::EVENT_LOG_BASE, len.base_register(log));
        // The base writes reset both rings' head and tail on QEMU; do it explicitly for
        // hardware, which only requires it (§3.4.7, §3.4.8).
        for reg in [
            regs::COMMAND_HEAD,
            regs::COMMAND_TAIL,
            regs::EVENT_HEAD,
            regs::EVENT_TAIL,
        ] {
            regs.write64(reg, 0);
        }
        regs.write64(regs::EXCLUSION_BASE, 0);
        regs.write64(regs::EXCLUSION_LIMIT, 0);
        Ok(AmdViUnit {
            features: ExtendedFeatures(regs.read64(regs::EXTENDED_FEATURE)),
            commands: CommandQueue::new(cmd, len, slot, timeout_us),
            events: EventLog::new(log, len),
            regs,
            timeout_us,
            device_ids: Cell::new(u32::from(u16::MAX) + 1),
        })
    }

    pub fn features(&self) -> ExtendedFeatures {
        self.features
    }

    pub fn registers(&self) -> &R {
        &self.regs
    }

    pub fn command_stats(&self) -> CommandStats {
        self.commands.stats()
    }

    /// Programs the Device Table Base Address register (base + Size field, §3.4.1).
    pub fn set_device_table(&self, table: &DeviceTable) {
        self.regs
            .write64(regs::DEVICE_TABLE_BASE, table.base_register());
        self.device_ids.set(table.entries());
    }

    fn update_control(&self, set: u64, clear: u64) {
        let c = self.regs.read64(regs::CONTROL);
        self.regs.write64(regs::CONTROL, (c | set) & !clear);
    }

    fn wait(&self, clock: &(impl Clock + ?Sized), mask: u64, set: bool) -> Result<(), UnitError> {
        wait_status(&self.regs, clock, self.timeout_us, mask, set)
            .map_err(UnitError::StatusTimedOut)
    }

    /// CmdBufEn, EventLogEn, then IommuEn (each its own write, in the spec's order), then a
    /// bounded wait for CmdBufRun and EventLogRun. Every DTE must be set (see
    /// [`DeviceTable::new`]) before: V = 0 entries would pass DMA through.
    pub fn enable(&self, clock: &(impl Clock + ?Sized)) -> Result<(), UnitError> {
        self.update_control(control::CMD_BUF_EN, 0);
        self.update_control(control::EVENT_LOG_EN, 0);
        self.update_control(control::IOMMU_EN, 0);
        self.wait(clock, status::CMD_BUF_RUN | status::EVENT_LOG_RUN, true)
    }

    /// Stops command processing and logging, then translation; waits for both running bits
    /// to clear.
    pub fn disable(&self, clock: &(impl Clock + ?Sized)) -> Result<(), UnitError> {
        disable_regs(&self.regs, clock, self.timeout_us)
    }

    pub fn enabled(&self) -> bool {
        self.regs.read64(regs::CONTROL) & control::IOMMU_EN != 0
    }

    /// Runs `cmds` followed by one completion wait. When the command processor stopped on an
    /// error, restarts the ring (later batches run) and returns
    /// [`CommandError::ProcessorStopped`]: the batch did not complete.
    pub fn invalidate<M: PhysMem + ?Sized>(
        &mut self,
        mem: &M,
        clock: &(impl Clock + ?Sized),
        cmds: impl IntoIterator<Item = Command>,
    ) -> Result<(), UnitError> {
        match self.commands.submit_and_wait(mem, &self.regs, clock, cmds) {
            Err(e @ CommandError::ProcessorStopped { .. }) => {
                self.restart_commands(clock)?;
                Err(UnitError::Command(e))
            }
            r => Ok(r?),
        }
    }

    /// §3.4.7: CmdBufEn off (and CmdBufRun awaited), head = tail = 0, CmdBufEn on (and
    /// CmdBufRun awaited). Commands not yet executed are dropped.
    fn restart_commands(&mut self, clock: &(impl Clock + ?Sized)) -> Result<(), UnitError> {
        let failed = |e| match e {
            UnitError::StatusTimedOut(t) => UnitError::CommandRestartFailed(t),
            other => other,
        };
        self.update_control(0, control::CMD_BUF_EN);
        self.wait(clock, status::CMD_BUF_RUN, false)
            .map_err(failed)?;
        self.regs.write64(regs::COMMAND_HEAD, 0);
        self.regs.write64(regs::COMMAND_TAIL, 0);
        self.commands.reset();
        self.update_control(control::CMD_BUF_EN, 0);
        self.wait(clock, status::CMD_BUF_RUN, true).map_err(failed)
    }

    /// Submits `batch` in the order [`SwitchBatch::commands`] gives (DTE invalidations, a
    /// fence, page invalidations), then ONE completion wait that is polled (bounded): one
    /// tail-register write for the lot. An empty batch costs nothing.
    pub fn flush<M: PhysMem + ?Sized>(
        &mut self,
        mem: &M,
        batch: &SwitchBatch,
        clock: &(impl Clock + ?Sized),
    ) -> Result<(), UnitError> {
        if batch.is_empty() {
            return Ok(());
        }
        let ia = self.features.invalidate_all();
        let cmds = batch.commands(ia, self.device_ids.get());
        self.invalidate(mem, clock, cmds)
    }

    /// After DTE switches of `device_ids` (a device and its aliases) away from
    /// `previous_domain`: [`Self::flush`] of INVALIDATE_DEVTAB_ENTRY per DeviceID, a fence,
    /// INVALIDATE_IOMMU_PAGES for the whole previous domain, ONE polled completion wait.
    /// Prefer [`SwitchBatch::entry_changed`] + [`Self::flush`], which skip what is not owed.
    pub fn after_owner_switch<M: PhysMem + ?Sized>(
        &mut self,
        mem: &M,
        clock: &(impl Clock + ?Sized),
        device_ids: &[u16],
        previous_domain: u16,
    ) -> Result<(), UnitError> {
        let mut batch = SwitchBatch::new();
        device_ids.iter().for_each(|&id| batch.device_changed(id));
        batch.domain_retired(previous_domain);
        self.flush(mem, &batch, clock)
    }

    /// After changing the mapping of `iova` in `domain_id`'s tables: always after an unmap;
    /// after a map too when the PCI capability header's NpCache bit says the unit caches
    /// not-present entries (QEMU's amd-iommu sets it).
    pub fn after_mapping_change<M: PhysMem + ?Sized>(
        &mut self,
        mem: &M,
        clock: &(impl Clock + ?Sized),
        domain_id: u16,
        iova: u64,
        size: PageSize,
    ) -> Result<(), UnitError> {
        let scope = match size {
            PageSize::Size4K => PageScope::Page(iova),
            PageSize::Size2M => PageScope::Large(iova),
        };
        let cmd = Command::InvalidateIommuPages { domain_id, scope };
        self.invalidate(mem, clock, [cmd])
    }

    /// INVALIDATE_IOMMU_ALL + wait (EFR.IASup only; [`Self::bring_up`] falls back to every
    /// DTE and DomainID without it).
    pub fn invalidate_all<M: PhysMem + ?Sized>(
        &mut self,
        mem: &M,
        clock: &(impl Clock + ?Sized),
    ) -> Result<(), UnitError> {
        if !self.features.invalidate_all() {
            return Err(UnitError::InvalidateAllUnsupported);
        }
        self.invalidate(mem, clock, [Command::InvalidateIommuAll])
    }

    /// Drains the event log into `sink`; on Status.EventOverflow restarts the log (see
    /// [`EventLog::restart`]) and reports it.
    pub fn drain_events<M: PhysMem + ?Sized>(
        &mut self,
        mem: &M,
        clock: &(impl Clock + ?Sized),
        sink: impl FnMut(Event),
    ) -> Result<DrainSummary, UnitError> {
        let mut summary = self.events.drain(mem, &self.regs, sink);
        if self.regs.read64(regs::STATUS) & status::EVENT_OVERFLOW != 0 {
            summary.overflowed = true;
            self.events
                .restart(&self.regs, clock, self.timeout_us)
                .map_err(UnitError::EventLog)?;
        }
        Ok(summary)
    }

    /// Gives the queue frames back and returns the registers. Only after [`Self::disable`].
    pub fn free<A: FrameAllocator + ?Sized>(self, alloc: &mut A) -> R {
        alloc.free_frame(self.commands.base());
        alloc.free_frame(self.commands.wait_slot());
        alloc.free_frame(self.events.base());
        self.regs
    }
}

mod interrupts;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device_table::DeviceTableEntry;
    use crate::pagetable::{PageTable, Perms, Translated};
    use crate::poll::StepClock;
    use crate::quarantine::{QuarantineDte, QuarantineTables};
    use crate::sim_device::SimAmdVi;
    use crate::walker::{translate, Fault};
    use crate::Levels;
    use lazaret_types::sim::{RegAccess, SimFrameAllocator, SimMemory, SimRegisters};
    use std::rc::Rc;

    /// QEMU 7.2's EFR (see regs tests).
    const QEMU_EFR: u64 = 0b1_1101_0011 | (2 << 12) | (2 << 10);

    fn unit(
        mem: &Rc<SimMemory>,
        alloc: &mut SimFrameAllocator<'_>,
    ) -> (AmdViUnit<SimRegisters>, SimAmdVi) {
        let regs = SimRegisters::new();
        let sim = SimAmdVi::install(&regs, mem.clone(), QEMU_EFR);
        (AmdViUnit::new(regs, &**mem, alloc, 100).unwrap(), sim)
    }

    #[test]
    fn bring_up_programs_bases_then_enables_in_order() {
        let mem = Rc::new(SimMemory::new());
        let mut a = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 64);
        let (u, _sim) = unit(&mem, &mut a);
        assert_eq!(u.features().max_levels(), Some(Levels::SIX));
        let dt = DeviceTable::new(&*mem, PhysAddr(0x80_0000), 0xff).unwrap();
        u.set_device_table(&dt);
        u.enable(&StepClock::default()).unwrap();
        assert!(u.enabled());
        let r = u.registers();
        assert_eq!(r.get(regs::DEVICE_TABLE_BASE), 0x80_0001);
        assert_eq!(r.get(regs::COMMAND_BUFFER_BASE) >> 56, 8, "256 commands");
        assert_eq!(
            (r.get(regs::EXCLUSION_BASE), r.get(regs::EXCLUSION_LIMIT)),
            (0, 0)
        );
        let controls: Vec<u64> = r
            .accesses()
            .into_iter()
            .filter_map(|a| match a {
                RegAccess::Write64(regs::CONTROL, v) => Some(v),
                _ => None,
            })
            .collect();
        assert_eq!(
            controls,
            vec![
                control::CMD_BUF_EN,
                control::CMD_BUF_EN | control::EVENT_LOG_EN,
                control::CMD_BUF_EN | control::EVENT_LOG_EN | control::IOMMU_EN
            ]
        );
        u.disable(&StepClock::default()).unwrap();
        assert_eq!(
            r.get(regs::STATUS) & (status::CMD_BUF_RUN | status::EVENT_LOG_RUN),
            0
        );
        u.free(&mut a);
        assert_eq!(a.frames_in_use(), 0);
    }

    #[test]
    fn enable_times_out_when_the_unit_does_not_run() {
        let mem = SimMemory::new();
        let mut a = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 64);
        let u = AmdViUnit::new(SimRegisters::new(), &mem, &mut a, 20).unwrap();
        assert!(matches!(
            u.enable(&StepClock::default()),
            Err(UnitError::StatusTimedOut(_))
        ));
    }

    #[test]
    fn queue_allocation_failure_leaks_nothing() {
        let mem = SimMemory::new();
        let mut a = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 64);
        for fail_at in 0..3 {
            a.fail_allocation(fail_at);
            assert!(matches!(
                AmdViUnit::new(SimRegisters::new(), &mem, &mut a, 20),
                Err(UnitError::OutOfFrames)
            ));
            assert_eq!(a.frames_in_use(), 0);
        }
    }

    #[test]
    fn owner_switch_moves_a_device_with_one_wait() {
        let mem = Rc::new(SimMemory::new());
        let mut a = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 256);
        let (mut u, sim) = unit(&mem, &mut a);
        let clock = StepClock::default();
        let dt = DeviceTable::new(&*mem, PhysAddr(0x80_0000), 0xff).unwrap();
        u.set_device_table(&dt);
        u.enable(&clock).unwrap();
        u.invalidate_all(&*mem, &clock).unwrap();
        let rid = 0x18;
        let levels = Levels::FOUR;
        let q = QuarantineTables::build(&*mem, &mut a, levels, &[], true).unwrap();
        let mut guest = PageTable::new(&*mem, &mut a, levels).unwrap();
        guest
            .map(
                &*mem,
                &mut a,
                0x10_0000,
                PhysAddr(0x77_7000),
                Perms::READ_WRITE,
            )
            .unwrap();
        let (quarantine_dom, guest_dom) = (0x8001, 5);
        let walk = |iova| translate(&*mem, dt.base(), dt.entries(), rid, iova, true);

        // Device add: quarantine.
        assert_eq!(walk(0x10_0000), Err(Fault::Blocked { write: true }));
        q.zero_scratch(&*mem);
        let prev = dt
            .switch_owner(&*mem, rid, q.device_table_entry(quarantine_dom))
            .unwrap();
        u.after_owner_switch(&*mem, &clock, &[rid], prev.domain_id())
            .unwrap();
        assert_eq!(walk(0x10_0000), Ok(q.scratch_page().unwrap()));

        // Assign: one exchange, then DTE invalidation, fence, page invalidation, polled wait:
        // 4 commands, 1 polled wait, 1 MMIO write.
        let before = u.command_stats();
        let writes = u.registers().write_count();
        let entry = DeviceTableEntry::translated(guest.translation_root(), guest_dom);
        let prev = dt.switch_owner(&*mem, rid, entry).unwrap();
        assert_eq!(prev.domain_id(), quarantine_dom);
        let mut batch = SwitchBatch::new();
        batch.entry_changed(rid, prev, entry);
        u.flush(&*mem, &batch, &clock).unwrap();
        let after = u.command_stats();
        assert_eq!(after.commands - before.commands, 4);
        assert_eq!(after.waits - before.waits, 1);
        assert_eq!(after.mmio_writes - before.mmio_writes, 1);
        assert_eq!(u.registers().write_count() - writes, 1);
        let executed = sim.executed();
        assert_eq!(
            &executed[executed.len() - 4..executed.len() - 1],
            &[
                Command::InvalidateDevtabEntry { device_id: rid },
                Command::CompletionWait {
                    store: None,
                    interrupt: false
                },
                Command::InvalidateIommuPages {
                    domain_id: quarantine_dom,
                    scope: PageScope::All
                }
            ]
        );
        assert_eq!(sim.dma(rid, 0x10_0000, true), Ok(PhysAddr(0x77_7000)));
        assert_eq!(walk(0x10_0000), Ok(PhysAddr(0x77_7000)));
        assert_eq!(walk(0x10_1000), Err(Fault::NotPresent { level: 1 }));

        // Deassign back to quarantine: scratch zeroed, nothing allocated.
        let frames = a.frames_in_use();
        mem.write_u64(q.scratch_page().unwrap(), 0x1eaf);
        q.zero_scratch(&*mem);
        let prev = dt
            .switch_owner(&*mem, rid, q.device_table_entry(quarantine_dom))
            .unwrap();
        u.after_owner_switch(&*mem, &clock, &[rid], prev.domain_id())
            .unwrap();
        assert_eq!(a.frames_in_use(), frames);
        assert_eq!(mem.read_u64(q.scratch_page().unwrap()), 0);
        assert_eq!(walk(0x10_0000), Ok(q.scratch_page().unwrap()));
        guest.free(&*mem, &mut a);
    }

    #[test]
    fn invalidate_all_needs_iasup() {
        let mem = Rc::new(SimMemory::new());
        let mut a = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 64);
        let regs = SimRegisters::new();
        let _sim = SimAmdVi::install(&regs, mem.clone(), QEMU_EFR & !(1 << 6));
        let mut u = AmdViUnit::new(regs, &*mem, &mut a, 100).unwrap();
        assert_eq!(
            u.invalidate_all(&*mem, &StepClock::default()),
            Err(UnitError::InvalidateAllUnsupported)
        );
    }

    #[test]
    fn drain_restarts_the_log_after_overflow() {
        let mem = Rc::new(SimMemory::new());
        let mut a = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 64);
        let (mut u, sim) = unit(&mem, &mut a);
        let clock = StepClock::default();
        u.enable(&clock).unwrap();
        let event = [(2u64 << 60) | 0x10, 0x1000];
        while sim.post_event(u.registers(), event) {}
        let mut n = 0;
        let s = u.drain_events(&*mem, &clock, |_| n += 1).unwrap();
        assert!(s.overflowed);
        assert_eq!((s.events, n), (255, 255));
        assert!(sim.post_event(u.registers(), event), "logging again");
        let s = u.drain_events(&*mem, &clock, |_| {}).unwrap();
        assert_eq!((s.events, s.overflowed), (1, false));
    }
}
