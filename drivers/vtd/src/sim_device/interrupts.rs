//! The simulated unit's interrupt remapping (§5.1): an MSI (a DMA write to 0xFEEx_xxxx) is
//! delivered untranslated while GSTS.IRES is clear; with remapping on, a compatibility-format
//! request passes only with GSTS.CFIS set, and a remappable one is looked up by its
//! interrupt_index in the table latched by the last GCMD.SIRTP, through an interrupt entry
//! cache that deliveries fill and only the IEC descriptor (§6.5.2.7) empties. A refused request
//! is recorded in the fault registers (FI bits 63:48 = interrupt_index, §10.4.14) unless the
//! entry has FPD set.
//!
//! Every layout here is decoded from the spec (§5.1.5.2 address / data, §9.10 IRTE, §10.4.29
//! IRTA), never with the driver's encoders.

use alloc::collections::BTreeMap;

pub use lazaret_types::sim::SimInterrupt;
use lazaret_types::{Bdf, PhysAddr, PhysMem};

use super::{record_fault, RegMap, State};
use crate::regs::{global, GSTS};

/// An interrupt the unit refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimIrFault {
    pub source_id: Bdf,
    /// The computed interrupt_index (none for a compatibility-format request).
    pub index: Option<u16>,
    /// §7.1.3 reason (0x20–0x26); 0 when the address was not an interrupt address at all.
    pub reason: u8,
    /// Written to a fault recording register (not when FPD = 1 or every record was full).
    pub recorded: bool,
}

/// The interrupt entry cache: IRTEs by interrupt_index, as fetched.
#[derive(Default)]
pub struct InterruptEntryCache {
    entries: BTreeMap<u16, u128>,
}

impl InterruptEntryCache {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Applies an IEC descriptor; `false` if `d` is not a well-formed one.
    fn invalidate(&mut self, d: u128) -> bool {
        let lo = d as u64;
        if lo & 0xf != 4 || (d >> 64) != 0 {
            return false;
        }
        if lo & (1 << 4) == 0 {
            self.entries.clear();
            return true;
        }
        let im = ((lo >> 27) & 0x1f) as u32;
        let index = u32::from((lo >> 32) as u16);
        if im > 16 {
            return false;
        }
        let first = index & !((1u32 << im) - 1);
        let last = first + (1u32 << im) - 1;
        self.entries
            .retain(|&i, _| !(first..=last).contains(&u32::from(i)));
        true
    }
}

/// Is `d` an interrupt entry cache invalidation descriptor (type 4) the unit accepts?
pub fn is_iec_descriptor(d: u128) -> bool {
    let lo = d as u64;
    lo & 0xf == 4 && (d >> 64) == 0 && (lo >> 27) & 0x1f <= 16
}

/// Performs an IEC descriptor (the queue calls this when it takes effect).
pub fn iec_effect(st: &mut State, d: u128) {
    st.iec.invalidate(d);
}

/// Is `address` in the interrupt address range 0xFEE0_0000–0xFEEF_FFFF (§3.14)?
pub const fn is_interrupt_address(address: u64) -> bool {
    address >> 20 == 0xFEE
}

const P: u128 = 1;
const FPD: u128 = 1 << 1;
/// IRTE bits that must be zero in a present remapped-format entry without posting support:
/// 14:12, IM (15), 31:24, 127:84.
const IRTE_RESERVED: u128 = (0b111 << 12) | (1 << 15) | (0xff << 24) | (!0u128 << 84);

fn field(v: u128, lo: u32, width: u32) -> u64 {
    ((v >> lo) & ((1u128 << width) - 1)) as u64
}

/// One MSI as the unit handles it (see the module docs).
pub fn msi(
    r: &mut impl RegMap,
    mem: &impl PhysMem,
    st: &mut State,
    source_id: Bdf,
    address: u64,
    data: u32,
) -> Result<SimInterrupt, SimIrFault> {
    let refuse = |reason: u8, index: Option<u16>, recorded: bool| SimIrFault {
        source_id,
        index,
        reason,
        recorded,
    };
    if !is_interrupt_address(address) {
        return Err(refuse(0, None, false));
    }
    let status = r.val(GSTS) as u32;
    let compatibility = SimInterrupt {
        vector: data as u8,
        destination: ((address >> 12) & 0xff) as u32,
        index: None,
    };
    if status & global::IRE == 0 {
        return Ok(compatibility);
    }
    // Address bit 4: interrupt format (1 = remappable).
    if address & (1 << 4) == 0 {
        if status & global::CFI != 0 {
            return Ok(compatibility);
        }
        return Err(fault(r, st, source_id, 0, 0x25, true));
    }
    let handle = ((address >> 5) & 0x7fff) | (((address >> 2) & 1) << 15);
    let shv = address & (1 << 3) != 0;
    if shv && data >> 16 != 0 {
        return Err(fault(r, st, source_id, handle as u16, 0x20, true));
    }
    let index = if shv {
        handle + u64::from(data & 0xffff)
    } else {
        handle
    };
    let irta = st.latched_irta;
    let entries = 1u64 << ((irta & 0xf) + 1);
    let extended = irta & (1 << 11) != 0;
    if index >= entries {
        return Err(fault(r, st, source_id, index as u16, 0x21, true));
    }
    let index = index as u16;
    let irte = match st.iec.entries.get(&index) {
        Some(cached) => *cached,
        None => {
            let at = PhysAddr((irta & !0xfff) + u64::from(index) * 16);
            let fetched = mem.read_u128(at);
            if fetched & P != 0 {
                st.iec.entries.insert(index, fetched);
            }
            fetched
        }
    };
    if irte & P == 0 {
        return Err(fault(r, st, source_id, index, 0x22, irte & FPD == 0));
    }
    let log = irte & FPD == 0;
    let dst = field(irte, 32, 32) as u32;
    // xAPIC mode: only DST[15:8] holds the APIC ID; 7:0 and 31:16 are reserved.
    let dst_reserved = !extended && dst & 0xffff_00ff != 0;
    let svt = field(irte, 82, 2);
    if irte & IRTE_RESERVED != 0 || dst_reserved || svt == 0b11 {
        return Err(fault(r, st, source_id, index, 0x24, log));
    }
    let sid = field(irte, 64, 16) as u16;
    let sq = field(irte, 80, 2);
    let rid = source_id.requester_id();
    let verified = match svt {
        0b00 => true,
        0b01 => {
            // SQ: 00 all 16 bits; 01 ignore function bit 2; 10 bits 2:1; 11 bits 2:0.
            let ignore: u16 = [0, 0b100, 0b110, 0b111][sq as usize];
            rid & !ignore == sid & !ignore
        }
        _ => {
            let bus = rid >> 8;
            (sid >> 8) <= bus && bus <= (sid & 0xff)
        }
    };
    if !verified {
        return Err(fault(r, st, source_id, index, 0x26, log));
    }
    Ok(SimInterrupt {
        vector: field(irte, 16, 8) as u8,
        destination: if extended { dst } else { (dst >> 8) & 0xff },
        index: Some(index),
    })
}

/// Records an IR fault (when `log`: FPD clear) and builds the refusal.
fn fault(
    r: &mut impl RegMap,
    st: &mut State,
    source_id: Bdf,
    index: u16,
    reason: u8,
    log: bool,
) -> SimIrFault {
    let before = st.next_fault_record;
    if log {
        record_fault(r, st, source_id, u64::from(index) << 48, true, reason);
    }
    SimIrFault {
        source_id,
        index: (reason != 0x25).then_some(index),
        reason,
        recorded: log && st.next_fault_record != before,
    }
}
