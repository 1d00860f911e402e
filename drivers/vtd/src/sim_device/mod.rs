//! A simulated VT-d unit for host tests that behaves like hardware where hardware can hide
//! bugs: SimRegisters write hooks (GCMD → GSTS with SRTP latching RTADDR, IQT → the queue of
//! `queue`, CCMD / IOTLB register commands, RW1C fault records and FSTS), translation caches
//! (`caches`) that `SimVtd::dma` goes through, out-of-order descriptor completion, injectable
//! queue errors, and switches to make each part "dead" so time-outs can be tested.

mod caches;
mod interrupts;
mod queue;

use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::fmt;

use lazaret_types::sim::{SimMemory, SimRegisters};
use lazaret_types::{Bdf, Mmio, PhysAddr, PhysMem};

use crate::regs::{
    fsts, global, Capabilities, CAP, CCMD, ECAP, FSTS, GCMD, GSTS, IQA, IQH, IQT, IRTA, RTADDR,
};
use crate::walker::{root_table_of, Fault, WalkerConfig};
use caches::{Caches, Programmed, Request};
use interrupts::InterruptEntryCache;
pub use interrupts::{is_interrupt_address, SimInterrupt, SimIrFault};

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
/// Coherent, queued invalidation, interrupt remapping (no x2APIC mode), pass-through.
pub const DEFAULT_ECAP: u64 = 1 | 2 | (1 << 3) | (1 << 6) | ((IOTLB_OFFSET as u64 / 16) << 8);

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

/// The persistent FSTS bits (PFO, IQE, ICE, ITE, FRI).
fn shadow_fsts(r: &impl RegMap) -> u64 {
    r.val(SHADOW_FSTS)
}

fn set_shadow_fsts(r: &mut impl RegMap, v: u64) {
    r.put(SHADOW_FSTS, v);
    refresh_fsts(r);
}

/// FSTS = shadow (PFO, IQE, ICE, ITE, FRI) + PPF computed from the records' F bits.
fn refresh_fsts(r: &mut impl RegMap) {
    let pending = (0..NFR).any(|i| r.val(FRO_OFFSET + i * 16 + 8) >> 63 == 1);
    let v = r.val(SHADOW_FSTS) | if pending { u64::from(fsts::PPF) } else { 0 };
    r.put(FSTS, v);
}

/// A queue error to inject at the next invalidation descriptor the unit fetches / performs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueFault {
    /// The descriptor is treated as invalid: FSTS.IQE, the queue stops with IQH at it.
    InvalidDescriptor,
    /// The same, at the next interrupt entry cache descriptor (§6.5.2.7) fetched.
    InvalidInterruptEntry,
    /// An invalidation completion error: FSTS.ICE, processing goes on.
    CompletionError,
    /// An invalidation time-out: FSTS.ITE, the segment's waits are aborted, the queue stops.
    TimeOut,
}

/// A DMA the simulated unit refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimDmaFault {
    pub source_id: Bdf,
    pub iova: u64,
    pub write: bool,
    pub fault: Fault,
}

impl fmt::Display for SimDmaFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} DMA {} at {:#x} refused: {}",
            self.source_id,
            if self.write { "write" } else { "read" },
            self.iova,
            self.fault
        )
    }
}

/// What a device's write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimWrite {
    Interrupt(Result<SimInterrupt, SimIrFault>),
    Memory(Result<PhysAddr, SimDmaFault>),
}

/// Hardware state that is not in a register.
pub(crate) struct State {
    /// The root table pointer latched by the last GCMD.SRTP (not RTADDR as last written).
    latched_root: u64,
    /// IRTA as latched by the last GCMD.SIRTP.
    latched_irta: u64,
    iec: InterruptEntryCache,
    /// IQA as accepted (a write while QIES is set is ignored).
    iqa: u64,
    iqa_writes_while_enabled: u32,
    /// The fault recording register hardware writes next.
    next_fault_record: usize,
    caches: Caches,
    rng: u64,
    inject: Option<QueueFault>,
    /// (slot, descriptor) an injected IQE made invalid.
    poisoned: Option<(usize, u128)>,
    dma_during_invalidation: Option<(Bdf, u64, bool)>,
    dma_during_results: Vec<Result<PhysAddr, SimDmaFault>>,
    /// Descriptors in the order they took effect.
    effects: Vec<u128>,
}

impl State {
    /// splitmix64: small, seedable, good enough to shuffle a segment.
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

pub struct SimVtd {
    pub regs: SimRegisters,
    pub mem: Rc<SimMemory>,
    /// Every descriptor the simulated queue fetched, in queue order.
    pub consumed: Rc<RefCell<Vec<u128>>>,
    state: Rc<RefCell<State>>,
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
        let state = Rc::new(RefCell::new(State {
            latched_root: 0,
            latched_irta: 0,
            iec: InterruptEntryCache::default(),
            iqa: 0,
            iqa_writes_while_enabled: 0,
            next_fault_record: 0,
            caches: Caches::default(),
            rng: 0x1a2a_5e7d,
            inject: None,
            poisoned: None,
            dma_during_invalidation: None,
            dma_during_results: Vec::new(),
            effects: Vec::new(),
        }));
        let (m, log, st) = (mem.clone(), consumed.clone(), state.clone());
        regs.on_write(move |r, off, v| hook(r, &m, &log, &mut st.borrow_mut(), off, v));
        SimVtd {
            regs,
            mem,
            consumed,
            state,
        }
    }

    /// A DMA as the hardware does it: untranslated while GSTS.TE is clear; otherwise through
    /// the context cache and IOTLB (filled on a miss by walking from the root latched by SRTP,
    /// under this unit's CAP / ECAP). A refused DMA is recorded in the fault registers.
    pub fn dma(&self, source_id: Bdf, iova: u64, write: bool) -> Result<PhysAddr, SimDmaFault> {
        let mut st = self.state.borrow_mut();
        dma_in(&mut &self.regs, &*self.mem, &mut st, source_id, iova, write)
    }

    /// An MSI: a 32-bit write of `data` to `address` (0xFEEx_xxxx) from `source_id`, delivered,
    /// blocked or faulted as §5.1 says (see `interrupts`).
    pub fn msi(&self, source_id: Bdf, address: u64, data: u32) -> Result<SimInterrupt, SimIrFault> {
        let mut st = self.state.borrow_mut();
        interrupts::msi(
            &mut &self.regs,
            &*self.mem,
            &mut st,
            source_id,
            address,
            data,
        )
    }

    /// A device's 32-bit DMA write: to the interrupt address range it is an interrupt request
    /// (never translated by DMA remapping, §3.14), elsewhere a translated DMA that writes `value`.
    pub fn dma_write32(&self, source_id: Bdf, address: u64, value: u32) -> SimWrite {
        if is_interrupt_address(address) {
            return SimWrite::Interrupt(self.msi(source_id, address, value));
        }
        let result = self.dma(source_id, address, true);
        if let Ok(pa) = result {
            self.mem.write_bytes(pa, &value.to_le_bytes());
        }
        SimWrite::Memory(result)
    }

    /// IRTEs in the interrupt entry cache.
    pub fn cached_interrupt_entries(&self) -> usize {
        self.state.borrow().iec.len()
    }

    /// Seeds the PRNG that orders descriptor effects between fences.
    pub fn set_seed(&self, seed: u64) {
        self.state.borrow_mut().rng = seed;
    }

    /// A DMA to perform between every two descriptor effects (`None`: none).
    pub fn set_dma_during_invalidation(&self, dma: Option<(Bdf, u64, bool)>) {
        self.state.borrow_mut().dma_during_invalidation = dma;
    }

    /// Results of the DMAs performed during invalidation so far (and forgets them).
    pub fn take_dma_during_invalidation(&self) -> Vec<Result<PhysAddr, SimDmaFault>> {
        core::mem::take(&mut self.state.borrow_mut().dma_during_results)
    }

    pub fn inject_queue_fault(&self, fault: QueueFault) {
        self.state.borrow_mut().inject = Some(fault);
    }

    /// Descriptors in the order they took effect.
    pub fn effects(&self) -> Vec<u128> {
        self.state.borrow().effects.clone()
    }

    /// IQA writes the unit ignored because queued invalidation was enabled (§10.4.24).
    pub fn iqa_writes_while_enabled(&self) -> u32 {
        self.state.borrow().iqa_writes_while_enabled
    }

    /// (context-cache entries, IOTLB entries) currently cached.
    pub fn cached(&self) -> (usize, usize) {
        let st = self.state.borrow();
        (st.caches.contexts(), st.caches.translations())
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

/// A DMA against the register map `r` (the hook's, or the SimRegisters outside it).
fn dma_in(
    r: &mut impl RegMap,
    mem: &impl PhysMem,
    st: &mut State,
    source_id: Bdf,
    iova: u64,
    write: bool,
) -> Result<PhysAddr, SimDmaFault> {
    if r.val(GSTS) as u32 & global::TE == 0 {
        return Ok(PhysAddr(iova));
    }
    let cap = r.val(CAP);
    let cfg = WalkerConfig::from_registers(cap, r.val(ECAP), 52);
    let caching_mode = cap & (1 << 7) != 0;
    let result = root_table_of(st.latched_root).and_then(|root| {
        let unit = Programmed {
            cfg,
            root,
            caching_mode,
        };
        st.caches.translate(mem, &unit, source_id, iova, write)
    });
    result.map_err(|fault| {
        record_fault(r, st, source_id, iova, write, fault.reason_code());
        SimDmaFault {
            source_id,
            iova,
            write,
            fault,
        }
    })
}

/// Primary fault logging (§7.3.1, FSTS §10.4.9): hardware writes the record its internal
/// pointer names, unless that record still holds an unread fault (then PFO, fault lost); FRI
/// names the record of the first pending fault, set when PPF goes from 0 to 1.
fn record_fault(
    r: &mut impl RegMap,
    st: &mut State,
    source_id: Bdf,
    iova: u64,
    write: bool,
    reason: u8,
) {
    let shadow = shadow_fsts(r);
    let index = st.next_fault_record % NFR;
    let at = FRO_OFFSET + index * 16;
    if r.val(at + 8) >> 63 == 1 {
        set_shadow_fsts(r, shadow | u64::from(fsts::PFO));
        return;
    }
    let was_pending = r.val(FSTS) as u32 & fsts::PPF != 0;
    r.put(at, iova & !0xfff);
    let hi = u64::from(source_id.requester_id())
        | (u64::from(reason) << 32)
        | (u64::from(!write) << 62)
        | (1 << 63);
    r.put(at + 8, hi);
    st.next_fault_record = (index + 1) % NFR;
    let fri = if was_pending {
        shadow & 0xff00
    } else {
        (index as u64) << 8
    };
    set_shadow_fsts(r, (shadow & !0xff00) | fri);
}

fn hook(
    r: &mut BTreeMap<usize, u64>,
    mem: &SimMemory,
    log: &RefCell<Vec<u128>>,
    st: &mut State,
    off: usize,
    v: u64,
) {
    let dead = r.val(DEAD);
    let iotlb_register = ((r.val(ECAP) >> 8) & 0x3ff) as usize * 16 + 8;
    match off {
        GCMD if dead & DEAD_GCMD == 0 => {
            let cmd = v as u32;
            let persistent = global::TE | global::QIE | global::IRE | global::CFI | global::EAFL;
            if cmd & global::SRTP != 0 {
                st.latched_root = r.val(RTADDR);
            }
            // SIRTP latches IRTA but leaves the interrupt entry cache alone (§10.4.4).
            if cmd & global::SIRTP != 0 {
                st.latched_irta = r.val(IRTA);
            }
            let was = r.val(GSTS) as u32;
            if cmd & global::QIE != 0 && was & global::QIE == 0 {
                // Enabling queued invalidation starts fetching at slot 0 (§10.4.22).
                r.put(IQH, 0);
            }
            // SRTP / SIRTP latch their status; WBF completes at once (WBFS reads 0).
            let latched = cmd & (global::SRTP | global::SIRTP);
            r.put(GSTS, u64::from((cmd & persistent) | latched));
            queue::consume(r, mem, log, st);
        }
        IQA => {
            if r.val(GSTS) as u32 & global::QIE != 0 {
                r.put(IQA, st.iqa);
                st.iqa_writes_while_enabled += 1;
            } else {
                st.iqa = v;
            }
        }
        CCMD if dead & DEAD_REGISTERS == 0 => {
            if v >> 63 == 1 {
                if let Some(request) = Request::from_ccmd(v) {
                    st.caches.invalidate(request);
                }
            }
            r.put(CCMD, v & !(1 << 63))
        }
        o if o == iotlb_register && dead & DEAD_REGISTERS == 0 => {
            if v >> 63 == 1 {
                let iva = r.val(o - 8);
                if let Some(request) = Request::from_iotlb_register(v, iva) {
                    st.caches.invalidate(request);
                }
            }
            r.put(o, v & !(1 << 63))
        }
        IQT if dead & DEAD_QUEUE == 0 => queue::consume(r, mem, log, st),
        FSTS => {
            let rw1c = u64::from(fsts::PFO | fsts::IQE | fsts::ICE | fsts::ITE);
            let s = r.val(SHADOW_FSTS) & !(v & rw1c);
            set_shadow_fsts(r, s);
            // Clearing IQE / ITE lets the queue resume from IQH.
            if dead & DEAD_QUEUE == 0 {
                queue::consume(r, mem, log, st);
            }
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

#[cfg(test)]
pub(crate) mod tests;
