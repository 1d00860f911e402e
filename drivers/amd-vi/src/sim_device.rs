//! A simulated AMD-Vi unit for host tests that caches and reorders like hardware, so missing
//! or mis-ordered invalidations show up as wrong DMA results.
//!
//! - Registers: Control → Status running bits; Command Tail → execute commands; Status
//!   write-1-to-clear; base registers written while the unit runs are ignored and counted
//!   ([`SimAmdVi::programmed_while_running`](crate::sim_device::SimAmdVi::programmed_while_running)): the spec leaves them undefined then.
//! - DMA ([`SimAmdVi::dma`](crate::sim_device::SimAmdVi::dma)): IommuEn = 0 → untranslated. Otherwise the DTE comes from the
//!   Device Table Base register (base and Size) through a DTE cache; translations come from
//!   an IOTLB tagged by (DomainID, 4 KiB page), misses walk through a page-directory cache
//!   tagged by (DomainID, level, IOVA prefix). Caches fill on every translation and are
//!   dropped only by INVALIDATE_DEVTAB_ENTRY (one DTE), INVALIDATE_IOMMU_PAGES (DomainID,
//!   S/address range, PDE = 1 for directory entries; §2.4.3) and INVALIDATE_IOMMU_ALL. A
//!   refused DMA logs IO_PAGE_FAULT (or ILLEGAL_DEV_TABLE_ENTRY) in the event log and moves
//!   the tail register — which QEMU's amd-iommu does not do.
//! - Commands between two COMPLETION_WAITs run in a seeded random order ([`SimAmdVi::set_seed`](crate::sim_device::SimAmdVi::set_seed)),
//!   as §2.4 allows; [`SimAmdVi::set_dma_during_invalidation`](crate::sim_device::SimAmdVi::set_dma_during_invalidation) performs a DMA between every
//!   two command effects, the race a badly ordered batch loses.
//! - Faults: [`SimAmdVi::set_stalled`](crate::sim_device::SimAmdVi::set_stalled) (nothing runs), [`SimAmdVi::set_wait_never_completes`](crate::sim_device::SimAmdVi::set_wait_never_completes)
//!   (the processor stops at the next COMPLETION_WAIT), [`SimAmdVi::inject_illegal_command`](crate::sim_device::SimAmdVi::inject_illegal_command)
//!   (ILLEGAL_COMMAND_ERROR logged, CmdBufRun cleared, head left on the command),
//!   [`SimAmdVi::set_firmware_enabled`](crate::sim_device::SimAmdVi::set_firmware_enabled) (a unit left running).
//!
//! - Interrupts ([`SimAmdVi::msi`](crate::sim_device::SimAmdVi::msi), `interrupts`): remapped through the DTE's table and an
//!   interrupt entry cache that only INVALIDATE_INTERRUPT_TABLE / INVALIDATE_IOMMU_ALL drop;
//!   refused ones logged as IO_PAGE_FAULT with I = 1.
//!
//! Commands are decoded here from the raw bits (spec §2.4 figures), not with
//! [`Command::decode`], so an encoding bug in the driver cannot cancel out; DTEs and page
//! tables are judged by the independent [`crate::walker`]. [`SimAmdVi::executed`](crate::sim_device::SimAmdVi::executed) lists
//! what ran, decoded for test assertions.

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::fmt;
use core::ops::Deref;

use lazaret_types::sim::{SimMemory, SimRegisters};
use lazaret_types::{Mmio, PhysAddr, PhysMem};

use crate::command::Command;
use crate::regs::{self, control, status, BASE_MASK, RING_POINTER_MASK};

mod interrupts;
use crate::walker::{self, check_dte, walk_with, Access, DteDecision, Fault};
pub use interrupts::{is_interrupt_address, SimInterrupt, SimIrFault, SimIrReason};

/// A DMA the simulated unit refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimDmaFault {
    pub device_id: u16,
    pub iova: u64,
    pub write: bool,
    pub reason: Fault,
}

impl fmt::Display for SimDmaFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = if self.write { "write" } else { "read" };
        write!(
            f,
            "DMA {dir} by device {:#06x} at iova {:#x} refused: {}",
            self.device_id, self.iova, self.reason
        )
    }
}

/// What a device's write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimWrite {
    Interrupt(Result<SimInterrupt, SimIrFault>),
    Memory(Result<PhysAddr, SimDmaFault>),
}

const RUNNING: u64 = control::IOMMU_EN | control::CMD_BUF_EN | control::EVENT_LOG_EN;
const DEFAULT_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// Raw command fields (§2.4 figures).
mod raw {
    pub const OPCODE_SHIFT: u32 = 60;
    pub const COMPLETION_WAIT: u64 = 0x1;
    pub const INVALIDATE_DEVTAB_ENTRY: u64 = 0x2;
    pub const INVALIDATE_IOMMU_PAGES: u64 = 0x3;
    pub const INVALIDATE_IOTLB_PAGES: u64 = 0x4;
    pub const INVALIDATE_INTERRUPT_TABLE: u64 = 0x5;
    pub const INVALIDATE_IOMMU_ALL: u64 = 0x8;
    /// COMPLETION_WAIT: S (store), I (interrupt), store address 51:3.
    pub const CW_S: u64 = 1 << 0;
    pub const CW_I: u64 = 1 << 1;
    pub const CW_ADDRESS: u64 = 0x000f_ffff_ffff_fff8;
    /// INVALIDATE_IOMMU_PAGES second quadword: S, PDE, address 63:12.
    pub const PAGES_S: u64 = 1 << 0;
    pub const PAGES_PDE: u64 = 1 << 1;
    /// Event codes (§2.5).
    pub const EVENT_ILLEGAL_DEV_TABLE_ENTRY: u64 = 0x1;
    pub const EVENT_IO_PAGE_FAULT: u64 = 0x2;
    pub const EVENT_ILLEGAL_COMMAND: u64 = 0x5;
}

/// The IOVA range INVALIDATE_IOMMU_PAGES names (§2.4.3): S = 0 one 4 KiB page; S = 1 a
/// naturally aligned range of 2^(13 + n) bytes, n = the ones in the address from bit 12.
fn page_range(q1: u64) -> (u64, u64) {
    let addr = q1 & !0xfff;
    if q1 & raw::PAGES_S == 0 {
        return (addr, addr | 0xfff);
    }
    let bits = 13 + (addr >> 12).trailing_ones();
    if bits >= 64 {
        return (0, u64::MAX);
    }
    let start = addr & !((1u64 << bits) - 1);
    (start, start + ((1u64 << bits) - 1))
}

/// IOVA bits that select the entry at `level` and the path above it.
fn prefix_shift(level: u32) -> u32 {
    (12 + 9 * (level - 1)).min(63)
}

struct State {
    mem: Rc<SimMemory>,
    efr: u64,
    executed: Vec<Command>,
    stalled: bool,
    hang_wait: bool,
    illegal_next: bool,
    cmd_error: bool,
    status: u64,
    control: u64,
    device_table_base: u64,
    command_base: u64,
    event_base: u64,
    command_head: u64,
    event_head: u64,
    event_tail: u64,
    programmed_while_running: u32,
    /// DeviceID → bits 127:0 and 255:128 of its DTE as read (DMA and interrupts share it).
    dte_cache: BTreeMap<u16, [u128; 2]>,
    /// (DeviceID, IRTE offset) → the IRTE as read (remapped entries only).
    irte_cache: BTreeMap<(u16, u16), u128>,
    /// (DomainID, 4 KiB page) → (physical page, permissions of the walk).
    iotlb: BTreeMap<(u16, u64), (u64, Access)>,
    /// (DomainID, level, IOVA >> prefix_shift(level)) → directory entry.
    pde_cache: BTreeMap<(u16, u32, u64), u64>,
    rng: u64,
    dma_during: Option<(u16, u64, bool)>,
    dma_log: Vec<Result<PhysAddr, SimDmaFault>>,
    msi_during: Option<(u16, u64, u32)>,
    msi_log: Vec<Result<SimInterrupt, SimIrFault>>,
    /// Shadow registers changed outside a register write: copied to the map at the next one.
    dirty: bool,
}

/// Ring base and size in bytes from a base-register value (ComLen / EventLen 59:56).
fn ring(base_register: u64) -> (u64, u64) {
    let n = ((base_register >> 56) & 0xf).clamp(8, 15);
    (base_register & BASE_MASK, 16 << n)
}

impl State {
    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn set_status(&mut self, bit: u64, on: bool) {
        self.status = if on {
            self.status | bit
        } else {
            self.status & !bit
        };
    }

    fn recompute_running(&mut self) {
        let on = self.control & control::IOMMU_EN != 0;
        let cmd = on && self.control & control::CMD_BUF_EN != 0 && !self.cmd_error;
        let log = on
            && self.control & control::EVENT_LOG_EN != 0
            && self.status & status::EVENT_OVERFLOW == 0;
        self.set_status(status::CMD_BUF_RUN, cmd);
        self.set_status(status::EVENT_LOG_RUN, log);
    }

    fn sync(&mut self, map: &mut BTreeMap<usize, u64>) {
        map.insert(regs::STATUS, self.status);
        map.insert(regs::EVENT_TAIL, self.event_tail);
        map.insert(regs::COMMAND_HEAD, self.command_head);
        self.dirty = false;
    }

    fn sync_regs(&mut self, regs: &SimRegisters) {
        regs.set(regs::STATUS, self.status);
        regs.set(regs::EVENT_TAIL, self.event_tail);
        regs.set(regs::COMMAND_HEAD, self.command_head);
        self.dirty = false;
    }

    /// §2.5: written at the tail, tail moved; a full log sets EventOverflow and stops.
    fn post(&mut self, entry: [u64; 2]) -> bool {
        if self.status & (status::EVENT_LOG_RUN | status::EVENT_OVERFLOW) != status::EVENT_LOG_RUN {
            return false;
        }
        let (base, bytes) = ring(self.event_base);
        let next = (self.event_tail + 16) % bytes;
        self.dirty = true;
        if next == self.event_head {
            self.status |= status::EVENT_OVERFLOW;
            self.status &= !status::EVENT_LOG_RUN;
            return false;
        }
        self.mem
            .write_u64(PhysAddr(base + self.event_tail), entry[0]);
        self.mem
            .write_u64(PhysAddr(base + self.event_tail + 8), entry[1]);
        self.event_tail = next;
        self.status |= status::EVENT_LOG_INT;
        true
    }

    fn log_fault(&mut self, device_id: u16, domain_id: u16, iova: u64, write: bool, f: Fault) {
        let (code, present, permission) = match f {
            Fault::IllegalDte { .. }
            | Fault::ModeAboveHats { .. }
            | Fault::DeviceIdBeyondTable { .. } => (raw::EVENT_ILLEGAL_DEV_TABLE_ENTRY, 0, 0),
            Fault::Permission { .. } => (raw::EVENT_IO_PAGE_FAULT, 1, 1),
            Fault::Blocked { .. } => (raw::EVENT_IO_PAGE_FAULT, 0, 1),
            _ => (raw::EVENT_IO_PAGE_FAULT, 0, 0),
        };
        // §2.5.3 flags (bits 59:48): PR bit 4, RW bit 5, PE bit 6.
        let flags = (present << 4) | (u64::from(write) << 5) | (permission << 6);
        let q0 = u64::from(device_id)
            | (u64::from(domain_id) << 32)
            | (flags << 48)
            | (code << raw::OPCODE_SHIFT);
        self.post([q0, iova]);
    }

    fn dma(&mut self, device_id: u16, iova: u64, write: bool) -> Result<PhysAddr, SimDmaFault> {
        let fault = |reason| SimDmaFault {
            device_id,
            iova,
            write,
            reason,
        };
        if self.control & control::IOMMU_EN == 0 {
            return Ok(PhysAddr(iova));
        }
        let entries = walker::programmed_entries(self.device_table_base);
        if u32::from(device_id) >= entries {
            let f = Fault::DeviceIdBeyondTable {
                requester_id: device_id,
                entries,
            };
            self.log_fault(device_id, 0, iova, write, f);
            return Err(fault(f));
        }
        let [dte, _] = self.dte(device_id);
        let did = (dte >> 64) as u16;
        let hats = walker::hats_levels(self.efr);
        let decision = check_dte(dte, device_id, hats, write).map_err(|f| {
            self.log_fault(device_id, did, iova, write, f);
            fault(f)
        })?;
        let (root, levels, access) = match decision {
            DteDecision::PassThrough | DteDecision::Untranslated => return Ok(PhysAddr(iova)),
            DteDecision::Translate {
                root,
                levels,
                access,
                ..
            } => (root, levels, access),
        };
        let page = iova & !0xfff;
        if let Some(&(phys, cached)) = self.iotlb.get(&(did, page)) {
            let allowed = cached.and(access);
            if allowed.allows(write) {
                return Ok(PhysAddr(phys | (iova & 0xfff)));
            }
            let f = Fault::Permission { level: 1, write };
            self.log_fault(device_id, did, iova, write, f);
            return Err(fault(f));
        }
        let mem = self.mem.clone();
        let pdes = &mut self.pde_cache;
        let read = |level: u32, at: PhysAddr| {
            let key = (did, level, iova >> prefix_shift(level));
            if let Some(e) = pdes.get(&key) {
                return *e;
            }
            let e = mem.read_u64(at);
            let next = ((e >> 9) & 0b111) as u32;
            if e & 1 != 0 && (1..level).contains(&next) {
                pdes.insert(key, e);
            }
            e
        };
        match walk_with(read, root, levels, access, iova, write) {
            Ok((pa, walked)) => {
                self.iotlb.insert((did, page), (pa.0 & !0xfff, walked));
                Ok(pa)
            }
            Err(f) => {
                self.log_fault(device_id, did, iova, write, f);
                Err(fault(f))
            }
        }
    }

    /// The probe DMA and MSI, if set, between two command effects.
    fn probe(&mut self) {
        if let Some((device_id, iova, write)) = self.dma_during {
            let r = self.dma(device_id, iova, write);
            self.dma_log.push(r);
        }
        if let Some((device_id, address, data)) = self.msi_during {
            let r = self.msi(device_id, address, data);
            self.msi_log.push(r);
        }
    }

    fn invalidate_pages(&mut self, q0: u64, q1: u64) {
        let did = (q0 >> 32) as u16;
        let (start, end) = page_range(q1);
        self.iotlb
            .retain(|&(d, page), _| d != did || page < start || page > end);
        if q1 & raw::PAGES_PDE != 0 {
            self.pde_cache.retain(|&(d, level, prefix), _| {
                let shift = prefix_shift(level);
                let first = prefix << shift;
                let last = first | ((1u64 << shift) - 1);
                d != did || last < start || first > end
            });
        }
    }

    /// One command's effect; `false` when it is illegal.
    fn execute(&mut self, q0: u64, q1: u64) -> bool {
        match q0 >> raw::OPCODE_SHIFT {
            raw::COMPLETION_WAIT => {
                if q0 & raw::CW_S != 0 {
                    self.mem.write_u64(PhysAddr(q0 & raw::CW_ADDRESS), q1);
                }
                if q0 & raw::CW_I != 0 {
                    self.status |= status::COM_WAIT_INT;
                }
            }
            raw::INVALIDATE_DEVTAB_ENTRY => {
                self.dte_cache.remove(&(q0 as u16));
            }
            raw::INVALIDATE_IOMMU_PAGES => self.invalidate_pages(q0, q1),
            raw::INVALIDATE_IOMMU_ALL => {
                self.dte_cache.clear();
                self.irte_cache.clear();
                self.iotlb.clear();
                self.pde_cache.clear();
            }
            raw::INVALIDATE_INTERRUPT_TABLE => self.invalidate_interrupt_table(q0),
            raw::INVALIDATE_IOTLB_PAGES => {}
            _ => return false,
        }
        if let Some(c) = Command::decode([q0, q1]) {
            self.executed.push(c);
        }
        true
    }

    /// Runs a group of commands not separated by a COMPLETION_WAIT, in a random order.
    fn run_group(&mut self, mut group: Vec<[u64; 2]>) {
        for i in (1..group.len()).rev() {
            let j = (self.next_random() % (i as u64 + 1)) as usize;
            group.swap(i, j);
        }
        for [q0, q1] in group {
            self.probe();
            self.execute(q0, q1);
        }
        self.probe();
    }

    fn stop_on_illegal(&mut self, at: u64, address: u64) {
        self.command_head = at;
        self.cmd_error = true;
        self.recompute_running();
        self.post([raw::EVENT_ILLEGAL_COMMAND << raw::OPCODE_SHIFT, address]);
    }

    fn run_commands(&mut self, map: &BTreeMap<usize, u64>) {
        if self.stalled || self.status & status::CMD_BUF_RUN == 0 {
            return;
        }
        let (base, bytes) = ring(self.command_base);
        let tail = map.get(&regs::COMMAND_TAIL).copied().unwrap_or(0) & RING_POINTER_MASK;
        let tail = tail % bytes;
        loop {
            let mut group = Vec::new();
            let mut at = self.command_head;
            let mut wait = None;
            while at != tail {
                let q0 = self.mem.read_u64(PhysAddr(base + at));
                let q1 = self.mem.read_u64(PhysAddr(base + at + 8));
                let legal = matches!(
                    q0 >> raw::OPCODE_SHIFT,
                    raw::COMPLETION_WAIT
                        | raw::INVALIDATE_DEVTAB_ENTRY
                        | raw::INVALIDATE_IOMMU_PAGES
                        | raw::INVALIDATE_IOTLB_PAGES
                        | raw::INVALIDATE_INTERRUPT_TABLE
                        | raw::INVALIDATE_IOMMU_ALL
                );
                if !legal || core::mem::take(&mut self.illegal_next) {
                    self.run_group(group);
                    self.stop_on_illegal(at, base + at);
                    return;
                }
                if q0 >> raw::OPCODE_SHIFT == raw::COMPLETION_WAIT {
                    wait = Some([q0, q1]);
                    break;
                }
                group.push([q0, q1]);
                at = (at + 16) % bytes;
            }
            self.run_group(group);
            self.command_head = at;
            let Some([q0, q1]) = wait else {
                return;
            };
            if self.hang_wait {
                return;
            }
            self.execute(q0, q1);
            self.command_head = (at + 16) % bytes;
        }
    }

    fn program_base(&mut self, map: &mut BTreeMap<usize, u64>, offset: usize, value: u64) {
        if self.control & RUNNING != 0 {
            self.programmed_while_running += 1;
            let old = match offset {
                regs::DEVICE_TABLE_BASE => self.device_table_base,
                regs::COMMAND_BUFFER_BASE => self.command_base,
                _ => self.event_base,
            };
            map.insert(offset, old);
            return;
        }
        match offset {
            regs::DEVICE_TABLE_BASE => self.device_table_base = value,
            regs::COMMAND_BUFFER_BASE => {
                self.command_base = value;
                self.command_head = 0;
                map.insert(regs::COMMAND_TAIL, 0);
            }
            _ => {
                self.event_base = value;
                self.event_head = 0;
                self.event_tail = 0;
            }
        }
    }

    fn on_write(&mut self, map: &mut BTreeMap<usize, u64>, offset: usize, value: u64) {
        let pointer = value & RING_POINTER_MASK;
        match offset {
            regs::CONTROL => {
                self.control = value;
                if value & control::CMD_BUF_EN == 0 {
                    self.cmd_error = false;
                }
                self.recompute_running();
                self.run_commands(map);
            }
            regs::DEVICE_TABLE_BASE | regs::COMMAND_BUFFER_BASE | regs::EVENT_LOG_BASE => {
                self.program_base(map, offset, value)
            }
            regs::COMMAND_HEAD => self.command_head = pointer,
            regs::COMMAND_TAIL => self.run_commands(map),
            regs::EVENT_HEAD => self.event_head = pointer,
            regs::EVENT_TAIL => self.event_tail = pointer,
            regs::STATUS => {
                let w1c = status::EVENT_OVERFLOW | status::EVENT_LOG_INT | status::COM_WAIT_INT;
                self.status &= !(value & w1c);
            }
            _ => {}
        }
        self.sync(map);
    }
}

/// Registers shared between a test and the [`SimAmdVi`] that reacts to them.
#[derive(Clone)]
pub struct SimMmio(Rc<SimRegisters>);

impl Deref for SimMmio {
    type Target = SimRegisters;
    fn deref(&self) -> &SimRegisters {
        &self.0
    }
}

impl Mmio for SimMmio {
    fn read32(&self, o: usize) -> u32 {
        self.0.read32(o)
    }
    fn write32(&self, o: usize, v: u32) {
        self.0.write32(o, v)
    }
    fn read64(&self, o: usize) -> u64 {
        self.0.read64(o)
    }
    fn write64(&self, o: usize, v: u64) {
        self.0.write64(o, v)
    }
}

/// Handle on the simulated unit's state (the registers stay in the [`SimRegisters`]).
#[derive(Clone)]
pub struct SimAmdVi {
    state: Rc<RefCell<State>>,
    regs: Option<SimMmio>,
}

impl SimAmdVi {
    /// Presets the Extended Feature Register to `efr` and installs the write hook on `regs`.
    /// Register updates the unit makes on its own (event log tail after a refused
    /// [`Self::dma`]) reach `regs` at its next register write; [`Self::new`] has none of
    /// that lag.
    pub fn install(regs: &SimRegisters, mem: Rc<SimMemory>, efr: u64) -> SimAmdVi {
        regs.set(regs::EXTENDED_FEATURE, efr);
        let state = Rc::new(RefCell::new(State {
            mem,
            efr,
            executed: Vec::new(),
            stalled: false,
            hang_wait: false,
            illegal_next: false,
            cmd_error: false,
            status: 0,
            control: 0,
            device_table_base: 0,
            command_base: 0,
            event_base: 0,
            command_head: 0,
            event_head: 0,
            event_tail: 0,
            programmed_while_running: 0,
            dte_cache: BTreeMap::new(),
            irte_cache: BTreeMap::new(),
            iotlb: BTreeMap::new(),
            pde_cache: BTreeMap::new(),
            rng: DEFAULT_SEED,
            dma_during: None,
            dma_log: Vec::new(),
            msi_during: None,
            msi_log: Vec::new(),
            dirty: false,
        }));
        let hook_state = state.clone();
        regs.on_write(move |map, offset, value| {
            hook_state.borrow_mut().on_write(map, offset, value)
        });
        SimAmdVi { state, regs: None }
    }

    /// A unit with its own registers ([`Self::mmio`]).
    pub fn new(mem: Rc<SimMemory>, efr: u64) -> SimAmdVi {
        let regs = Rc::new(SimRegisters::new());
        let mut sim = SimAmdVi::install(&regs, mem, efr);
        sim.regs = Some(SimMmio(regs));
        sim
    }

    /// The registers of a unit made by [`Self::new`].
    pub fn mmio(&self) -> Option<SimMmio> {
        self.regs.clone()
    }

    fn after_change(&self, st: &mut State) {
        if let (Some(r), true) = (&self.regs, st.dirty) {
            st.sync_regs(r);
        }
    }

    /// A DMA by `device_id` at `iova`, as the unit performs it now (caches included).
    pub fn dma(&self, device_id: u16, iova: u64, write: bool) -> Result<PhysAddr, SimDmaFault> {
        let mut st = self.state.borrow_mut();
        let r = st.dma(device_id, iova, write);
        self.after_change(&mut st);
        r
    }

    /// An MSI: `device_id` writes `data` to `address` (0xFEEx_xxxx), delivered, passed or
    /// refused as §2.2.5 says (see `interrupts`).
    pub fn msi(&self, device_id: u16, address: u64, data: u32) -> Result<SimInterrupt, SimIrFault> {
        let mut st = self.state.borrow_mut();
        let r = st.msi(device_id, address, data);
        self.after_change(&mut st);
        r
    }

    /// A device's 32-bit write: into the interrupt range it is an interrupt request (QEMU and
    /// hardware route it to the remapper, not the page tables), elsewhere a translated DMA
    /// that stores `value`.
    pub fn dma_write32(&self, device_id: u16, address: u64, value: u32) -> SimWrite {
        if is_interrupt_address(address) {
            return SimWrite::Interrupt(self.msi(device_id, address, value));
        }
        let r = self.dma(device_id, address, true);
        if let Ok(pa) = r {
            self.state
                .borrow()
                .mem
                .write_bytes(pa, &value.to_le_bytes());
        }
        SimWrite::Memory(r)
    }

    /// Sends this MSI (device, address, data) before and after every command effect.
    pub fn set_msi_during_invalidation(&self, msi: Option<(u16, u64, u32)>) {
        self.state.borrow_mut().msi_during = msi;
    }

    /// Results of the MSIs sent during invalidation, oldest first (drained).
    pub fn take_msis_during_invalidation(&self) -> Vec<Result<SimInterrupt, SimIrFault>> {
        core::mem::take(&mut self.state.borrow_mut().msi_log)
    }

    /// Cached IRTEs.
    pub fn cached_interrupt_entries(&self) -> usize {
        self.state.borrow().irte_cache.len()
    }

    /// Commands executed so far, in the order they took effect.
    pub fn executed(&self) -> Vec<Command> {
        self.state.borrow().executed.clone()
    }

    /// A stalled unit consumes no commands (to test time-outs).
    pub fn set_stalled(&self, stalled: bool) {
        self.state.borrow_mut().stalled = stalled;
    }

    /// The processor stops at the next COMPLETION_WAIT (head stays on it, CmdBufRun stays
    /// set) until cleared and the tail is written again.
    pub fn set_wait_never_completes(&self, hang: bool) {
        self.state.borrow_mut().hang_wait = hang;
    }

    /// The next command fetched is refused as ILLEGAL_COMMAND_ERROR (§2.5.5): the event is
    /// logged, CmdBufRun clears, the head stays on it; older commands of its group ran.
    pub fn inject_illegal_command(&self) {
        self.state.borrow_mut().illegal_next = true;
    }

    /// Seeds the order in which commands between two COMPLETION_WAITs take effect.
    pub fn set_seed(&self, seed: u64) {
        self.state.borrow_mut().rng = seed.max(1);
    }

    /// Performs this DMA (device, iova, write) before and after every command effect.
    pub fn set_dma_during_invalidation(&self, dma: Option<(u16, u64, bool)>) {
        self.state.borrow_mut().dma_during = dma;
    }

    /// Results of the DMAs made during invalidation, oldest first (drained).
    pub fn take_dmas_during_invalidation(&self) -> Vec<Result<PhysAddr, SimDmaFault>> {
        core::mem::take(&mut self.state.borrow_mut().dma_log)
    }

    /// Base-register writes ignored because the unit was running.
    pub fn programmed_while_running(&self) -> u32 {
        self.state.borrow().programmed_while_running
    }

    /// Cached DTEs and IOTLB entries (for tests of the caches themselves).
    pub fn cache_sizes(&self) -> (usize, usize, usize) {
        let st = self.state.borrow();
        (st.dte_cache.len(), st.iotlb.len(), st.pde_cache.len())
    }

    /// Firmware left the unit running on its own device table and rings at `tables`
    /// (three consecutive pages: device table, command buffer, event log).
    pub fn set_firmware_enabled(&self, regs: &SimRegisters, tables: PhysAddr) {
        regs.write64(regs::DEVICE_TABLE_BASE, tables.0);
        regs.write64(regs::COMMAND_BUFFER_BASE, (8 << 56) | (tables.0 + 0x1000));
        regs.write64(regs::EVENT_LOG_BASE, (8 << 56) | (tables.0 + 0x2000));
        regs.write64(regs::CONTROL, RUNNING | control::EVENT_INT_EN);
    }

    /// Logs one event as the IOMMU would (§2.5): written at the tail, tail moved. When the
    /// log is full it sets EventOverflow and stops logging (EventLogRun cleared) instead.
    /// Returns whether the event was logged.
    pub fn post_event(&self, regs: &SimRegisters, entry: [u64; 2]) -> bool {
        let mut st = self.state.borrow_mut();
        let logged = st.post(entry);
        st.sync_regs(regs);
        logged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_ranges_follow_the_s_bit_encoding() {
        // S = 0: one page, PDE and S bits ignored for the address.
        assert_eq!(page_range(0x5000 | raw::PAGES_PDE), (0x5000, 0x5fff));
        // S = 1, bit 12 clear: 8 KiB; bits 12 set, 13 clear: 16 KiB, naturally aligned.
        assert_eq!(page_range(0x4000 | raw::PAGES_S), (0x4000, 0x5fff));
        assert_eq!(page_range(0x5000 | raw::PAGES_S), (0x4000, 0x7fff));
        // 2 MiB: bits 20:12 set, 21 clear.
        assert_eq!(page_range(0x6ff000 | raw::PAGES_S), (0x600000, 0x7fffff));
        // The driver's "all pages" address: bits 62:12 set.
        assert_eq!(page_range(0x7fff_ffff_ffff_f000 | 3), (0, u64::MAX));
    }

    #[test]
    fn dma_beyond_the_programmed_table_is_refused_and_logged() {
        let mem = Rc::new(SimMemory::new());
        let sim = SimAmdVi::new(mem.clone(), 2 << 10);
        let r = sim.mmio().unwrap();
        r.write64(regs::DEVICE_TABLE_BASE, 0x20_0000); // one page: 128 DeviceIDs
        r.write64(regs::EVENT_LOG_BASE, (8 << 56) | 0x30_0000);
        r.write64(regs::CONTROL, control::IOMMU_EN | control::EVENT_LOG_EN);
        // DeviceID 0x7f: all-zero DTE, V = 0, untranslated (as hardware does).
        assert_eq!(sim.dma(0x7f, 0x1234, true), Ok(PhysAddr(0x1234)));
        let f = sim.dma(0x80, 0x1234, true).unwrap_err();
        assert!(matches!(f.reason, Fault::DeviceIdBeyondTable { .. }));
        assert_eq!(r.get(regs::EVENT_TAIL), 16, "tail moved by the unit");
        assert_eq!(mem.read_u64(PhysAddr(0x30_0000)) >> 60, 1);
        // IommuEn = 0: every DMA passes untranslated.
        r.write64(regs::CONTROL, 0);
        assert_eq!(sim.dma(0x80, 0x1234, true), Ok(PhysAddr(0x1234)));
    }
}
