//! One assigned function as the guest sees it: the real function's configuration space with
//! the registers that would let a guest escape (BARs, expansion ROM, Command, the interrupt
//! capabilities) virtualised.
use lazaret_types::Sbdf;

use super::address::Lanes;
use super::bar::VirtualBar;
use super::caps::{region, Region};
use super::layout::SLOTS;
use super::msi::VirtualMsi;
use crate::regs;
use crate::{update_command, ConfigSpace};

/// Expansion ROM Base Address of a type 0 header (PCI Local Bus Spec 3.0 §6.2.5.2).
const EXPANSION_ROM: u16 = 0x30;
/// Command bit 10: Interrupt Disable (INTx#), the guest's to set (§6.2.2).
const COMMAND_INTX_DISABLE: u16 = 1 << 10;
/// The Command register is the low half of its dword; Status (RW1C) the high half.
const COMMAND_HALF: u32 = 0xffff;
/// Header Type's multi-function bit within the dword at 0x0c: cleared, so an OS scanning
/// virtual 00:N.0 does not probe functions 1–7 (they read all ones anyway).
const MULTI_FUNCTION: u32 = (regs::HEADER_MULTI_FUNCTION as u32) << 16;

#[derive(Clone, Debug)]
pub struct VirtualFunction {
    pub real: Sbdf,
    pub bars: [VirtualBar; SLOTS],
    pub bus_master_allowed: bool,
    pub memory_space_allowed: bool,
    pub msi: VirtualMsi,
    /// The guest's MSI request changed since the exit loop last took the changes.
    pub msi_changed: bool,
}

impl VirtualFunction {
    pub fn new(real: Sbdf, bars: [VirtualBar; SLOTS]) -> VirtualFunction {
        VirtualFunction {
            real,
            bars,
            bus_master_allowed: true,
            memory_space_allowed: true,
            msi: VirtualMsi::default(),
            msi_changed: false,
        }
    }

    /// The BAR slot behind dword `offset`, if it is one.
    fn slot(offset: u16) -> Option<usize> {
        let n = usize::from(offset.checked_sub(regs::BAR0)? / 4);
        (n < SLOTS).then_some(n)
    }

    /// The dword at `offset` (dword aligned, below 0x100) as the guest reads it.
    pub fn read<C: ConfigSpace + ?Sized>(&self, cfg: &C, offset: u16) -> u32 {
        if let Some(bar) = Self::slot(offset).and_then(|n| self.bars.get(n)) {
            return bar.read();
        }
        match offset {
            regs::HEADER_DWORD => return cfg.read32(self.real, offset) & !MULTI_FUNCTION,
            EXPANSION_ROM => return 0,
            _ => {}
        }
        let real = cfg.read32(self.real, offset);
        match region(cfg, self.real, offset) {
            Region::Other => real,
            Region::Command { any_visible } if !any_visible => {
                real & !regs::STATUS_CAPABILITIES_LIST
            }
            Region::Command { .. } => real,
            Region::Pointer { first } => (real & !0xff) | u32::from(first),
            Region::Header { next } => (real & !0xff00) | (u32::from(next) << 8),
            Region::Msi {
                layout,
                relative,
                next,
            } => {
                let device = cfg.read32(self.real, u16::from(layout.offset));
                self.msi.read(layout, relative, next, device)
            }
            Region::Hidden => 0,
        }
    }

    /// A guest write of the bytes `lanes` of dword `offset`. Returns `false` when the write
    /// was dropped; only a Command write can reach the device, BAR writes stay virtual.
    pub fn write<C: ConfigSpace + ?Sized>(
        &mut self,
        cfg: &C,
        offset: u16,
        lanes: Lanes,
        value: u32,
    ) -> bool {
        if let Some(bar) = Self::slot(offset).and_then(|n| self.bars.get_mut(n)) {
            bar.write(lanes.merge(bar.read(), value));
            return true;
        }
        if offset == regs::COMMAND && lanes.covers(COMMAND_HALF) {
            let (memory, bus_master) = (self.memory_space_allowed, self.bus_master_allowed);
            // An absent device (surprise removal) has nothing to filter: the write is dropped.
            return update_command(cfg, self.real, |old| {
                let guest = lanes.merge(u32::from(old), value) as u16;
                filter_command(old, guest, memory, bus_master)
            })
            .is_ok();
        }
        if let Region::Msi {
            layout, relative, ..
        } = region(cfg, self.real, offset)
        {
            // Never passed to the device: only `VirtualBus::program_host_msi` writes its MSI.
            self.msi_changed |= self.msi.write(layout, relative, lanes, value);
            return true;
        }
        false
    }
}

/// The Command value Lazaret writes when the guest asks for `guest` and the device holds
/// `old`: Interrupt Disable is the guest's; Memory Space and Bus Master are the guest's only
/// while Lazaret allows them and are forced off otherwise; every other bit — I/O Space,
/// which the guest has no BAR for, parity and SERR# reporting — stays as Lazaret left it.
fn filter_command(old: u16, guest: u16, memory: bool, bus_master: bool) -> u16 {
    let mut granted = COMMAND_INTX_DISABLE;
    if memory {
        granted |= regs::COMMAND_MEMORY_SPACE;
    }
    if bus_master {
        granted |= regs::COMMAND_BUS_MASTER;
    }
    let lazarets = !(COMMAND_INTX_DISABLE | regs::COMMAND_MEMORY_SPACE | regs::COMMAND_BUS_MASTER);
    (old & lazarets) | (guest & granted)
}
