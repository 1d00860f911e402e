//! One AMD-Vi unit: its registers, command queue and event log, and the bring-up order.
//!
//! Bring-up (§3.4, and the order Linux and Xen follow): program the device table, command
//! buffer and event log bases while IommuEn = 0; leave the exclusion range off (base and
//! limit 0: an exclusion range lets matching DMA bypass translation entirely, the opposite
//! of quarantine; IVMD unity ranges go into the per-device tables instead); then set
//! CmdBufEn, EventLogEn and finally IommuEn, and wait (bounded) for Status.CmdBufRun and
//! EventLogRun. The running bits only follow once IommuEn is set (QEMU's
//! `amdvi_handle_control_write` gates both on it), so the wait comes after the last write.

use core::fmt;

use lazaret_types::{FrameAllocator, Mmio, PhysAddr, PhysMem, PAGE_SIZE};

use crate::command::{Command, CommandError, CommandQueue, CommandStats, PageScope};
use crate::device_table::DeviceTable;
use crate::event_log::{wait_status, DrainSummary, Event, EventLog, EventLogError};
use crate::poll::{Clock, TimedOut};
use crate::regs::{self, control, status, ExtendedFeatures, RingLength};

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
    /// Reads EFR, allocates a one-page command buffer, the completion-wait slot and a
    /// one-page event log, and programs their base registers (the unit must be disabled).
    /// `timeout_us` bounds every wait.
    pub fn new<M, A>(regs: R, mem: &M, alloc: &mut A, timeout_us: u64) -> Result<Self, UnitError>
    where
        M: PhysMem + ?Sized,
        A: FrameAllocator + ?Sized,
    {
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
        self.update_control(0, control::CMD_BUF_EN | control::EVENT_LOG_EN);
        self.update_control(0, control::IOMMU_EN);
        self.wait(clock, status::CMD_BUF_RUN | status::EVENT_LOG_RUN, false)
    }

    pub fn enabled(&self) -> bool {
        self.regs.read64(regs::CONTROL) & control::IOMMU_EN != 0
    }

    /// Runs `cmds` followed by one completion wait.
    pub fn invalidate<M: PhysMem + ?Sized>(
        &mut self,
        mem: &M,
        clock: &(impl Clock + ?Sized),
        cmds: impl IntoIterator<Item = Command>,
    ) -> Result<(), UnitError> {
        Ok(self
            .commands
            .submit_and_wait(mem, &self.regs, clock, cmds)?)
    }

    /// After DTE switches of `device_ids` (a device and its aliases) away from
    /// `previous_domain`: INVALIDATE_DEVTAB_ENTRY per DeviceID, INVALIDATE_IOMMU_PAGES for the
    /// whole previous domain, ONE completion wait (see [`crate::command`] for why one wait
    /// suffices), one tail-register write.
    pub fn after_owner_switch<M: PhysMem + ?Sized>(
        &mut self,
        mem: &M,
        clock: &(impl Clock + ?Sized),
        device_ids: &[u16],
        previous_domain: u16,
    ) -> Result<(), UnitError> {
        let devices = device_ids
            .iter()
            .map(|&device_id| Command::InvalidateDevtabEntry { device_id });
        let pages = Command::InvalidateIommuPages {
            domain_id: previous_domain,
            scope: PageScope::All,
        };
        self.invalidate(mem, clock, devices.chain([pages]))
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
    ) -> Result<(), UnitError> {
        let cmd = Command::InvalidateIommuPages {
            domain_id,
            scope: PageScope::Page(iova),
        };
        self.invalidate(mem, clock, [cmd])
    }

    /// INVALIDATE_IOMMU_ALL + wait, after enabling (drops anything cached from firmware).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device_table::DeviceTableEntry;
    use crate::pagetable::{PageTable, Perms};
    use crate::poll::StepClock;
    use crate::quarantine::QuarantineTables;
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

        // Assign: one exchange, then 2 commands + 1 wait, 1 MMIO write.
        let before = u.command_stats();
        let writes = u.registers().write_count();
        let entry = DeviceTableEntry::translated(guest.translation_root(), guest_dom);
        let prev = dt.switch_owner(&*mem, rid, entry).unwrap();
        assert_eq!(prev.domain_id(), quarantine_dom);
        u.after_owner_switch(&*mem, &clock, &[rid], prev.domain_id())
            .unwrap();
        let after = u.command_stats();
        assert_eq!(after.commands - before.commands, 3);
        assert_eq!(after.waits - before.waits, 1);
        assert_eq!(after.mmio_writes - before.mmio_writes, 1);
        assert_eq!(u.registers().write_count() - writes, 1);
        let executed = sim.executed();
        assert_eq!(
            &executed[executed.len() - 3..executed.len() - 1],
            &[
                Command::InvalidateDevtabEntry { device_id: rid },
                Command::InvalidateIommuPages {
                    domain_id: quarantine_dom,
                    scope: PageScope::All
                }
            ]
        );
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
