//! A simulated VT-d unit for host tests: SimRegisters write hooks that behave like the
//! hardware (GCMD → GSTS, IQT → consume descriptors and perform wait status writes, CCMD /
//! IOTLB command completion, RW1C fault records and FSTS), with switches to make each part
//! "dead" so time-outs can be tested.

use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;

use lazaret_types::sim::{SimMemory, SimRegisters};
use lazaret_types::{Mmio, PhysAddr, PhysMem};

use crate::regs::{fsts, global, Capabilities, CAP, CCMD, ECAP, FSTS, GCMD, GSTS, IQA, IQH, IQT};

pub const FRO_OFFSET: usize = 0x200;
pub const NFR: usize = 8;
pub const IOTLB_OFFSET: usize = 0x100;

/// Simulator state kept in the register map at offsets no driver touches.
const SHADOW_FSTS: usize = 0x10_0000;
const DEAD: usize = 0x10_0008;
pub const DEAD_GCMD: u64 = 1;
pub const DEAD_QUEUE: u64 = 2;
pub const DEAD_REGISTERS: u64 = 4;
pub const FAULT_STORM: u64 = 8;

/// Default capabilities: 4-level + 3-level, MGAW 48, 256 DIDs, PSI, MAMV 9, 8 fault records.
pub const DEFAULT_CAP: u64 = 2
    | (0b0110 << 8)
    | (47 << 16)
    | ((FRO_OFFSET as u64 / 16) << 24)
    | (1 << 39)
    | ((NFR as u64 - 1) << 40)
    | (9 << 48);
/// Coherent, queued invalidation, pass-through.
pub const DEFAULT_ECAP: u64 = 1 | 2 | (1 << 6) | ((IOTLB_OFFSET as u64 / 16) << 8);

trait RegMap {
    fn val(&self, off: usize) -> u64;
    fn put(&mut self, off: usize, v: u64);
}

impl RegMap for BTreeMap<usize, u64> {
    fn val(&self, off: usize) -> u64 {
        self.get(&off).copied().unwrap_or(0)
    }
    fn put(&mut self, off: usize, v: u64) {
        self.insert(off, v);
    }
}

impl RegMap for &SimRegisters {
    fn val(&self, off: usize) -> u64 {
        self.get(off)
    }
    fn put(&mut self, off: usize, v: u64) {
        self.set(off, v);
    }
}

/// FSTS = shadow (PFO, IQE, ICE, ITE, FRI) + PPF computed from the records' F bits.
fn refresh_fsts(r: &mut impl RegMap) {
    let pending = (0..NFR).any(|i| r.val(FRO_OFFSET + i * 16 + 8) >> 63 == 1);
    let v = r.val(SHADOW_FSTS) | if pending { u64::from(fsts::PPF) } else { 0 };
    r.put(FSTS, v);
}

pub struct SimVtd {
    pub regs: SimRegisters,
    pub mem: Rc<SimMemory>,
    /// Every descriptor the simulated queue consumed, in order.
    pub consumed: Rc<RefCell<Vec<u128>>>,
}

/// `&SimRegisters` as an owned [`Mmio`] for `VtdUnit<R>`.
pub struct SimRef<'a>(pub &'a SimRegisters);

impl Mmio for SimRef<'_> {
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

impl Default for SimVtd {
    fn default() -> Self {
        SimVtd::new()
    }
}

impl SimVtd {
    pub fn new() -> SimVtd {
        SimVtd::with_caps(DEFAULT_CAP, DEFAULT_ECAP)
    }

    pub fn with_caps(cap: u64, ecap: u64) -> SimVtd {
        let regs = SimRegisters::new();
        regs.set(0, 0x10);
        regs.set(CAP, cap);
        regs.set(ECAP, ecap);
        let mem = Rc::new(SimMemory::new());
        let consumed = Rc::new(RefCell::new(Vec::new()));
        let (m, log) = (mem.clone(), consumed.clone());
        regs.on_write(move |r, off, v| hook(r, &m, &log, off, v));
        SimVtd {
            regs,
            mem,
            consumed,
        }
    }

    pub fn mmio(&self) -> SimRef<'_> {
        SimRef(&self.regs)
    }

    pub fn cap(&self) -> Capabilities {
        Capabilities(self.regs.get(CAP))
    }

    pub fn set_dead(&self, flags: u64) {
        self.regs.set(DEAD, flags);
    }

    pub fn post_fault(&self, index: usize, (lo, hi): (u64, u64)) {
        self.regs.set(FRO_OFFSET + index * 16, lo);
        self.regs.set(FRO_OFFSET + index * 16 + 8, hi);
        refresh_fsts(&mut &self.regs);
    }

    pub fn set_fault_index(&self, fri: usize) {
        let s = self.regs.get(SHADOW_FSTS) & !0xff00;
        self.regs.set(SHADOW_FSTS, s | ((fri as u64) << 8));
        refresh_fsts(&mut &self.regs);
    }

    pub fn set_overflow(&self) {
        let s = self.regs.get(SHADOW_FSTS);
        self.regs.set(SHADOW_FSTS, s | u64::from(fsts::PFO));
        refresh_fsts(&mut &self.regs);
    }
}

fn hook(
    r: &mut BTreeMap<usize, u64>,
    mem: &SimMemory,
    log: &RefCell<Vec<u128>>,
    off: usize,
    v: u64,
) {
    let dead = r.val(DEAD);
    match off {
        GCMD if dead & DEAD_GCMD == 0 => {
            let cmd = v as u32;
            let persistent = global::TE | global::QIE | global::IRE | global::CFI | global::EAFL;
            // SRTP / SIRTP latch their status; WBF completes at once (WBFS reads 0).
            let latched = cmd & (global::SRTP | global::SIRTP);
            r.put(GSTS, u64::from((cmd & persistent) | latched));
        }
        CCMD if dead & DEAD_REGISTERS == 0 => r.put(CCMD, v & !(1 << 63)),
        o if o == IOTLB_OFFSET + 8 && dead & DEAD_REGISTERS == 0 => r.put(o, v & !(1 << 63)),
        IQT if dead & DEAD_QUEUE == 0 && r.val(GSTS) as u32 & global::QIE != 0 => {
            consume_queue(r, mem, log, ((v >> 4) & 0xff) as usize)
        }
        FSTS => {
            let rw1c = u64::from(fsts::PFO | fsts::IQE | fsts::ICE | fsts::ITE);
            let s = r.val(SHADOW_FSTS) & !(v & rw1c);
            r.put(SHADOW_FSTS, s);
            refresh_fsts(r);
        }
        o if (FRO_OFFSET..FRO_OFFSET + NFR * 16).contains(&o) && o % 16 == 12 => {
            r.remove(&o);
            if v & (1 << 31) != 0 && dead & FAULT_STORM == 0 {
                let hi = r.val(o - 4);
                r.put(o - 4, hi & !(1 << 63));
            }
            refresh_fsts(r);
        }
        _ => {}
    }
}

/// Processes descriptors from IQH up to `tail` like hardware: wait descriptors with SW write
/// their status dword; an unknown type stops the queue with FSTS.IQE.
fn consume_queue(
    r: &mut BTreeMap<usize, u64>,
    mem: &SimMemory,
    log: &RefCell<Vec<u128>>,
    tail: usize,
) {
    let base = r.val(IQA) & !0xfff;
    let mut head = ((r.val(IQH) >> 4) & 0xff) as usize;
    while head != tail {
        let d = mem.read_u128(PhysAddr(base + head as u64 * 16));
        match d & 0xf {
            1 | 2 => {}
            5 => {
                if d & (1 << 5) != 0 {
                    let status = ((d >> 64) as u64) & !3;
                    mem.write_bytes(PhysAddr(status), &((d >> 32) as u32).to_le_bytes());
                }
            }
            _ => {
                let s = r.val(SHADOW_FSTS) | u64::from(fsts::IQE);
                r.put(SHADOW_FSTS, s);
                refresh_fsts(r);
                break;
            }
        }
        log.borrow_mut().push(d);
        head = (head + 1) % 256;
    }
    r.put(IQH, (head as u64) << 4);
}
