//! The MSI capability (PCI Local Bus Spec 3.0 §6.8.1): the guest's virtual copy, and the one
//! path that programs the real one.
//!
//! Layout, in bytes from the capability: +0 ID 05h, Next, Message Control (bits 31:16 of the
//! dword: bit 0 MSI Enable, 3:1 Multiple Message Capable, 6:4 Multiple Message Enable, 7
//! 64-bit address capable, 8 per-vector masking capable); +4 Message Address (bits 1:0
//! reserved); with 64-bit addresses +8 Message Upper Address and +0xC Message Data, else +8
//! Message Data; with per-vector masking, Mask Bits and Pending Bits follow the data dword.
//!
//! The guest's writes land only in [`VirtualMsi`]; reads show it, never the device's own
//! registers. Lazaret gives one vector: Multiple Message Capable and Enable read 0.
use lazaret_types::Sbdf;

use super::address::Lanes;
use super::VirtualBusError;
use crate::ConfigSpace;

/// Message Control bits, as bits of the capability's first dword.
const ENABLE: u32 = 1 << 16;
const MULTIPLE_MESSAGE_ENABLE: u32 = 0b111 << 20;
const ADDRESS_64: u32 = 1 << 23;
const PER_VECTOR_MASKING: u32 = 1 << 24;
/// The bits of the first dword the guest sees as the device has them: ID, and the two
/// capability bits that fix the layout. Next is the virtual list's; the rest (Multiple
/// Message Capable, Extended Message Data, reserved) read 0.
const DEVICE_BITS: u32 = 0xff | ADDRESS_64 | PER_VECTOR_MASKING;
/// Message Address bits 1:0 are reserved (§6.8.1.4).
const ADDRESS_RESERVED: u32 = 0b11;
/// One vector: only its mask bit exists.
const MASK_VECTOR_0: u32 = 1;
/// The MSI window of the local APICs: an address outside 0xFEEx_xxxx is no interrupt.
const APIC_WINDOW: u64 = 0xfee;

/// Where a function's MSI registers are, from its real Message Control.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiLayout {
    /// Offset of the capability.
    pub offset: u8,
    pub address_64: bool,
    pub masking: bool,
}

/// One MSI register, by its place in the layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Register {
    Control,
    Address,
    UpperAddress,
    Data,
    Mask,
    Pending,
}

impl MsiLayout {
    /// The layout of the MSI capability at `offset` of `real`.
    pub fn read<C: ConfigSpace + ?Sized>(cfg: &C, real: Sbdf, offset: u8) -> MsiLayout {
        let first = cfg.read32(real, u16::from(offset));
        MsiLayout {
            offset,
            address_64: first & ADDRESS_64 != 0,
            masking: first & PER_VECTOR_MASKING != 0,
        }
    }

    /// The capability's length in dwords.
    pub fn dwords(self) -> u16 {
        3 + u16::from(self.address_64) + 2 * u16::from(self.masking)
    }

    /// The register at `relative` bytes into the capability.
    fn register(self, relative: u16) -> Option<Register> {
        let data = if self.address_64 { 0xc } else { 0x8 };
        match relative {
            0 => Some(Register::Control),
            4 => Some(Register::Address),
            8 if self.address_64 => Some(Register::UpperAddress),
            r if r == data => Some(Register::Data),
            r if self.masking && r == data + 4 => Some(Register::Mask),
            r if self.masking && r == data + 8 => Some(Register::Pending),
            _ => None,
        }
    }

    fn at(self, register: Register) -> Option<u16> {
        (0..self.dwords() * 4)
            .step_by(4)
            .find(|&r| self.register(r) == Some(register))
            .map(|r| u16::from(self.offset) + r)
    }
}

/// What the guest last asked of its device's MSI capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestMsi {
    /// MSI Enable as the guest wrote it.
    pub enabled: bool,
    /// The guest's per-vector mask bit (vector 0); false when the device has no masking.
    pub masked: bool,
    /// Message Address (and Upper Address on a 64-bit capability), bits 1:0 clear.
    pub address: u64,
    pub data: u16,
    /// Message Data bits 7:0: the guest's vector.
    pub vector: u8,
    /// Message Address bits 19:12: the guest's xAPIC destination ID.
    pub destination: u8,
    /// Whether `address` is in the APIC window 0xFEEx_xxxx. An invalid message is recorded
    /// so the exit loop can see it, and must never be acted on.
    pub valid: bool,
}

impl GuestMsi {
    /// Whether the guest wants interrupts delivered now: enabled, unmasked, valid.
    pub fn deliverable(&self) -> bool {
        self.enabled && !self.masked && self.valid
    }
}

/// The guest's copy of the MSI registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VirtualMsi {
    enabled: bool,
    address: u32,
    upper: u32,
    data: u16,
    mask: u32,
}

impl VirtualMsi {
    pub fn request(&self) -> GuestMsi {
        let address = (u64::from(self.upper) << 32) | u64::from(self.address);
        GuestMsi {
            enabled: self.enabled,
            masked: self.mask & MASK_VECTOR_0 != 0,
            address,
            data: self.data,
            vector: self.data as u8,
            destination: (address >> 12) as u8,
            valid: address >> 20 == APIC_WINDOW,
        }
    }

    /// The dword at `relative` bytes into the capability as the guest reads it; `next` is the
    /// virtual list's Next pointer, `device` the real first dword (for ID and layout bits).
    pub fn read(&self, layout: MsiLayout, relative: u16, next: u8, device: u32) -> u32 {
        match layout.register(relative) {
            Some(Register::Control) => {
                (device & DEVICE_BITS) | (u32::from(next) << 8) | self.control()
            }
            Some(Register::Address) => self.address,
            Some(Register::UpperAddress) => self.upper,
            Some(Register::Data) => u32::from(self.data),
            Some(Register::Mask) => self.mask,
            // Pending bits are the device's; the guest's vector is never pending in hardware.
            Some(Register::Pending) | None => 0,
        }
    }

    /// A guest write of `lanes` of the dword at `relative`; only the guest's copy changes.
    /// Returns whether the request the exit loop sees changed.
    pub fn write(&mut self, layout: MsiLayout, relative: u16, lanes: Lanes, value: u32) -> bool {
        let before = *self;
        let old = self.read(layout, relative, 0, 0);
        let new = lanes.merge(old, value);
        match layout.register(relative) {
            Some(Register::Control) => self.enabled = new & ENABLE != 0,
            Some(Register::Address) => self.address = new & !ADDRESS_RESERVED,
            Some(Register::UpperAddress) => self.upper = new,
            // Bits 31:16 are Extended Message Data on some devices: not offered.
            Some(Register::Data) => self.data = new as u16,
            Some(Register::Mask) => self.mask = new & MASK_VECTOR_0,
            Some(Register::Pending) | None => {}
        }
        *self != before
    }

    fn control(&self) -> u32 {
        if self.enabled {
            ENABLE
        } else {
            0
        }
    }
}

/// Programs the real MSI capability of `real` with `address`/`data`: disable, write the
/// message, then enable if asked (a device never signals a half-written message). One vector,
/// unmasked when the device has masking.
pub fn program_host<C: ConfigSpace + ?Sized>(
    cfg: &C,
    real: Sbdf,
    offset: u8,
    address: u64,
    data: u32,
    enable: bool,
) -> Result<(), VirtualBusError> {
    let layout = MsiLayout::read(cfg, real, offset);
    let unfit = VirtualBusError::MsiMessageUnfit {
        function: real,
        address,
        data,
    };
    let upper = (address >> 32) as u32;
    let data = u16::try_from(data).map_err(|_| unfit)?;
    if address as u32 & ADDRESS_RESERVED != 0 || (upper != 0 && !layout.address_64) {
        return Err(unfit);
    }
    let at = |register| layout.at(register).ok_or(unfit);
    let (address_at, data_at) = (at(Register::Address)?, at(Register::Data)?);
    let upper_at = layout
        .address_64
        .then(|| at(Register::UpperAddress))
        .transpose()?;
    let mask_at = layout.masking.then(|| at(Register::Mask)).transpose()?;
    let first = u16::from(offset);
    // ID and Next are read-only; writing them back as read is harmless.
    let control = cfg.read32(real, first) & !(ENABLE | MULTIPLE_MESSAGE_ENABLE);
    cfg.write32(real, first, control);
    cfg.write32(real, address_at, address as u32);
    if let Some(upper_at) = upper_at {
        cfg.write32(real, upper_at, upper);
    }
    cfg.write32(real, data_at, u32::from(data));
    if let Some(mask_at) = mask_at {
        cfg.write32(real, mask_at, cfg.read32(real, mask_at) & !MASK_VECTOR_0);
    }
    if enable {
        cfg.write32(real, first, control | ENABLE);
    }
    Ok(())
}
