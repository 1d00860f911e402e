//! The simulated unit's interrupt remapping (§2.2.5): an MSI (a device's write into
//! 0xFEE0_0000–0xFEEF_FFFF) is judged by its DeviceID's DTE (through the DTE cache), by the
//! message type in data 10:8 and the DTE's pass-through bits, by IntCtl, and for remapped
//! interrupts by the IRTE at offset data 10:0 of the table the DTE names — through an
//! interrupt entry cache tagged by (DeviceID, offset), filled by deliveries and dropped only
//! by INVALIDATE_INTERRUPT_TABLE for that DeviceID or INVALIDATE_IOMMU_ALL. The IRTE size is
//! what Control.GAEn says (128-bit when set), not what the driver meant.
//!
//! A refused interrupt is target-aborted and logged as IO_PAGE_FAULT with I = 1 (RZ = 1 for a
//! malformed IRTE), address = the MSI address, unless the IRTE's SupIOPF or (for an entry
//! that is not remapped) the DTE's IG suppresses the log.
//!
//! Every layout is decoded here from the spec's figures, not with the driver's encoders.

pub use lazaret_types::sim::SimInterrupt;
use lazaret_types::{PhysAddr, PhysMem};

use super::{raw, State};
use crate::regs::{control, BASE_MASK};

/// Why the unit refused an interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimIrReason {
    /// The address is outside the interrupt range (not an interrupt; use DMA).
    NotAnInterrupt,
    DeviceIdBeyondTable,
    /// IntCtl = 00b (or the reserved 11b).
    IntCtlAbort,
    /// IntTabLen above 1011b.
    IllegalIntTabLen,
    /// Message type (data 10:8) that is neither fixed nor arbitrated, and not passed by the DTE.
    MessageTypeBlocked {
        message_type: u8,
    },
    /// Offset at or beyond 2^IntTabLen.
    IndexBeyondTable,
    /// RemapEn = 0.
    NotRemapped,
    /// GuestMode = 1, a reserved IntType or reserved bits set.
    ReservedIrte,
}

/// An interrupt the unit refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimIrFault {
    pub device_id: u16,
    pub index: Option<u16>,
    pub reason: SimIrReason,
    /// An IO_PAGE_FAULT event was written to the event log.
    pub logged: bool,
}

/// Is `address` in the interrupt address range?
pub const fn is_interrupt_address(address: u64) -> bool {
    address >> 20 == 0xFEE
}

/// Message types (data 10:8, §2.2.5).
const MT_FIXED: u8 = 0b000;
const MT_ARBITRATED: u8 = 0b001;
const MT_NMI: u8 = 0b100;
const MT_INIT: u8 = 0b101;
const MT_EXTINT: u8 = 0b111;

fn bits(v: u128, lo: u32, width: u32) -> u64 {
    ((v >> lo) & ((1u128 << width) - 1)) as u64
}

impl State {
    /// Bits 255:0 of `device_id`'s DTE through the DTE cache (filled on a miss).
    pub(super) fn dte(&mut self, device_id: u16) -> [u128; 2] {
        if let Some(d) = self.dte_cache.get(&device_id) {
            return *d;
        }
        let at = (self.device_table_base & BASE_MASK) + u64::from(device_id) * 32;
        let d = [
            self.mem.read_u128(PhysAddr(at)),
            self.mem.read_u128(PhysAddr(at + 16)),
        ];
        self.dte_cache.insert(device_id, d);
        d
    }

    fn log_interrupt_fault(&mut self, device_id: u16, domain_id: u16, address: u64, rz: bool) {
        // §2.5.3 flags: I bit 3, RW bit 5, RZ bit 7.
        let flags = (1 << 3) | (1 << 5) | (u64::from(rz) << 7);
        let q0 = u64::from(device_id)
            | (u64::from(domain_id) << 32)
            | (flags << 48)
            | (raw::EVENT_IO_PAGE_FAULT << raw::OPCODE_SHIFT);
        self.post([q0, address]);
    }

    pub(super) fn msi(
        &mut self,
        device_id: u16,
        address: u64,
        data: u32,
    ) -> Result<SimInterrupt, SimIrFault> {
        let unmapped = SimInterrupt {
            vector: data as u8,
            destination: ((address >> 12) & 0xff) as u32,
            index: None,
        };
        let refuse = |reason, index, logged| {
            Err(SimIrFault {
                device_id,
                index,
                reason,
                logged,
            })
        };
        if !is_interrupt_address(address) {
            return refuse(SimIrReason::NotAnInterrupt, None, false);
        }
        if self.control & control::IOMMU_EN == 0 {
            return Ok(unmapped);
        }
        if u32::from(device_id) >= crate::walker::programmed_entries(self.device_table_base) {
            return refuse(SimIrReason::DeviceIdBeyondTable, None, false);
        }
        let [lower, upper] = self.dte(device_id);
        let domain_id = (lower >> 64) as u16;
        let fail = |st: &mut State, reason, index, log: bool, rz: bool| {
            if log {
                st.log_interrupt_fault(device_id, domain_id, address, rz);
            }
            refuse(reason, index, log)
        };
        // IV (bit 128) = 0: interrupts pass unmapped.
        if bits(upper, 0, 1) == 0 {
            return Ok(unmapped);
        }
        let message_type = ((data >> 8) & 0b111) as u8;
        // Fixed and arbitrated are remapped; the rest pass only if the DTE says so.
        let passed = match message_type {
            MT_FIXED | MT_ARBITRATED => None,
            MT_INIT => Some(bits(upper, 56, 1) == 1), // InitPass, DTE bit 184
            MT_EXTINT => Some(bits(upper, 57, 1) == 1), // EIntPass, DTE bit 185
            MT_NMI => Some(bits(upper, 58, 1) == 1),  // NMIPass, DTE bit 186
            _ => Some(false),                         // SMI and reserved types
        };
        match passed {
            None => {}
            Some(true) => return Ok(unmapped),
            Some(false) => {
                let reason = SimIrReason::MessageTypeBlocked { message_type };
                return fail(self, reason, None, true, false);
            }
        }
        match bits(upper, 60, 2) {
            0b01 => return Ok(unmapped),
            0b10 => {}
            _ => return fail(self, SimIrReason::IntCtlAbort, None, true, false),
        }
        let len = bits(upper, 1, 4);
        if len > 11 {
            return fail(self, SimIrReason::IllegalIntTabLen, None, true, false);
        }
        let index = (data & 0x7ff) as u16;
        let ignore_unmapped = bits(upper, 5, 1) == 1;
        if u64::from(index) >= 1 << len {
            let reason = SimIrReason::IndexBeyondTable;
            return fail(self, reason, Some(index), !ignore_unmapped, false);
        }
        let root = (upper as u64) & 0x000f_ffff_ffff_ffc0;
        let wide = self.control & control::GA_EN != 0;
        let irte = match self.irte_cache.get(&(device_id, index)) {
            Some(e) => *e,
            None => {
                let e = if wide {
                    self.mem.read_u128(PhysAddr(root + u64::from(index) * 16))
                } else {
                    let mut b = [0u8; 4];
                    self.mem
                        .read_bytes(PhysAddr(root + u64::from(index) * 4), &mut b);
                    u128::from(u32::from_le_bytes(b))
                };
                if e & 1 == 1 {
                    self.irte_cache.insert((device_id, index), e);
                }
                e
            }
        };
        let suppress = bits(irte, 1, 1) == 1;
        if bits(irte, 0, 1) == 0 {
            let log = !suppress && !ignore_unmapped;
            return fail(self, SimIrReason::NotRemapped, Some(index), log, false);
        }
        let int_type = bits(irte, 2, 3);
        let guest_mode = bits(irte, 7, 1);
        let reserved = if wide {
            bits(irte, 32, 32) != 0 || bits(irte, 72, 48) != 0
        } else {
            bits(irte, 24, 8) != 0
        };
        if guest_mode == 1 || int_type > 1 || reserved {
            return fail(
                self,
                SimIrReason::ReservedIrte,
                Some(index),
                !suppress,
                true,
            );
        }
        let (vector, destination) = if wide {
            let dst = bits(irte, 8, 24) | (bits(irte, 120, 8) << 24);
            (bits(irte, 64, 8) as u8, dst as u32)
        } else {
            (bits(irte, 16, 8) as u8, bits(irte, 8, 8) as u32)
        };
        Ok(SimInterrupt {
            vector,
            destination,
            index: Some(index),
        })
    }

    /// INVALIDATE_INTERRUPT_TABLE (§2.4.5): every cached IRTE of DeviceID `q0` 15:0.
    pub(super) fn invalidate_interrupt_table(&mut self, q0: u64) {
        let device_id = q0 as u16;
        self.irte_cache.retain(|&(d, _), _| d != device_id);
    }
}
