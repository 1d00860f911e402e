//! A simulated AMD-Vi unit for host tests: reacts to register writes the way the spec (and
//! QEMU's `amd_iommu.c`) does — Control → Status running bits, Command Tail → execute
//! commands and perform COMPLETION_WAIT stores, Status → write-1-to-clear — and can post
//! events into the event log.

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;

use lazaret_types::sim::{SimMemory, SimRegisters};
use lazaret_types::{PhysAddr, PhysMem};

use crate::command::{Command, COMMAND_BYTES};
use crate::regs::{self, control, status, RingLength, BASE_MASK, RING_POINTER_MASK};

struct State {
    mem: Rc<SimMemory>,
    executed: Vec<Command>,
    stalled: bool,
    status: u64,
}

/// Handle on the simulated unit's state (the registers stay in the [`SimRegisters`]).
#[derive(Clone)]
pub struct SimAmdVi {
    state: Rc<RefCell<State>>,
}

/// Base address and size in bytes of a ring from its base-register value.
fn ring(base_register: u64) -> (u64, u64) {
    let len = RingLength::from_encoding(((base_register >> 56) & 0xf) as u8)
        .unwrap_or(RingLength::ONE_PAGE);
    (base_register & BASE_MASK, len.bytes())
}

impl State {
    fn run_commands(&mut self, map: &mut BTreeMap<usize, u64>) {
        let get = |m: &BTreeMap<usize, u64>, o| m.get(&o).copied().unwrap_or(0);
        if self.stalled || self.status & status::CMD_BUF_RUN == 0 {
            return;
        }
        let (base, bytes) = ring(get(map, regs::COMMAND_BUFFER_BASE));
        let tail = get(map, regs::COMMAND_TAIL) & RING_POINTER_MASK;
        let mut head = get(map, regs::COMMAND_HEAD) & RING_POINTER_MASK;
        while head != tail {
            let q0 = self.mem.read_u64(PhysAddr(base + head));
            let q1 = self.mem.read_u64(PhysAddr(base + head + 8));
            if let Some(cmd) = Command::decode([q0, q1]) {
                if let Command::CompletionWait { store, interrupt } = cmd {
                    if let Some((addr, value)) = store {
                        self.mem.write_u64(addr, value);
                    }
                    if interrupt {
                        self.status |= status::COM_WAIT_INT;
                    }
                }
                self.executed.push(cmd);
            }
            head = (head + COMMAND_BYTES) % bytes;
            map.insert(regs::COMMAND_HEAD, head);
        }
        map.insert(regs::STATUS, self.status);
    }

    fn on_write(&mut self, map: &mut BTreeMap<usize, u64>, offset: usize, value: u64) {
        match offset {
            regs::CONTROL => {
                let on = value & control::IOMMU_EN != 0;
                let set = |s: u64, bit: u64, cond: bool| if cond { s | bit } else { s & !bit };
                self.status = set(
                    self.status,
                    status::CMD_BUF_RUN,
                    on && value & control::CMD_BUF_EN != 0,
                );
                self.status = set(
                    self.status,
                    status::EVENT_LOG_RUN,
                    on && value & control::EVENT_LOG_EN != 0,
                );
                map.insert(regs::STATUS, self.status);
                self.run_commands(map);
            }
            regs::COMMAND_BUFFER_BASE => {
                map.insert(regs::COMMAND_HEAD, 0);
                map.insert(regs::COMMAND_TAIL, 0);
            }
            regs::EVENT_LOG_BASE => {
                map.insert(regs::EVENT_HEAD, 0);
                map.insert(regs::EVENT_TAIL, 0);
            }
            regs::COMMAND_TAIL => self.run_commands(map),
            regs::STATUS => {
                let w1c = status::EVENT_OVERFLOW | status::EVENT_LOG_INT | status::COM_WAIT_INT;
                self.status &= !(value & w1c);
                map.insert(regs::STATUS, self.status);
            }
            _ => {}
        }
    }
}

impl SimAmdVi {
    /// Presets the Extended Feature Register to `efr` and installs the write hook.
    pub fn install(regs: &SimRegisters, mem: Rc<SimMemory>, efr: u64) -> SimAmdVi {
        regs.set(regs::EXTENDED_FEATURE, efr);
        let state = Rc::new(RefCell::new(State {
            mem,
            executed: Vec::new(),
            stalled: false,
            status: 0,
        }));
        let hook_state = state.clone();
        regs.on_write(move |map, offset, value| {
            hook_state.borrow_mut().on_write(map, offset, value)
        });
        SimAmdVi { state }
    }

    /// Commands executed so far, in order.
    pub fn executed(&self) -> Vec<Command> {
        self.state.borrow().executed.clone()
    }

    /// A stalled unit consumes no commands (to test time-outs).
    pub fn set_stalled(&self, stalled: bool) {
        self.state.borrow_mut().stalled = stalled;
    }

    /// Logs one event as the IOMMU would (§2.5): written at the tail, tail moved. When the
    /// log is full it sets EventOverflow and stops logging (EventLogRun cleared) instead.
    /// Returns whether the event was logged.
    pub fn post_event(&self, regs: &SimRegisters, entry: [u64; 2]) -> bool {
        let mut st = self.state.borrow_mut();
        if st.status & (status::EVENT_LOG_RUN | status::EVENT_OVERFLOW) != status::EVENT_LOG_RUN {
            return false;
        }
        let (base, bytes) = ring(regs.get(regs::EVENT_LOG_BASE));
        let head = regs.get(regs::EVENT_HEAD) & RING_POINTER_MASK;
        let tail = regs.get(regs::EVENT_TAIL) & RING_POINTER_MASK;
        let next = (tail + 16) % bytes;
        if next == head {
            st.status |= status::EVENT_OVERFLOW;
            st.status &= !status::EVENT_LOG_RUN;
            regs.set(regs::STATUS, st.status);
            return false;
        }
        st.mem.write_u64(PhysAddr(base + tail), entry[0]);
        st.mem.write_u64(PhysAddr(base + tail + 8), entry[1]);
        regs.set(regs::EVENT_TAIL, next);
        st.status |= status::EVENT_LOG_INT;
        regs.set(regs::STATUS, st.status);
        true
    }
}
