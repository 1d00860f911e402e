//! Finding and enabling the guest's edu device the way an OS does: configuration mechanism #1
//! through ports 0xCF8/0xCFC (PCI Local Bus Spec 3.0 §3.2.2.3.2), a scan of bus 0, BAR sizing
//! (§6.2.5.1) and the Command register (§6.2.2). Lazaret answers these ports from a virtual
//! bus holding only this guest's functions, so nothing here trusts what it reads: the BAR
//! must lie in the MMIO window and be big enough for edu's registers. The MSI capability
//! (§6.7 capability list, §6.8.1 MSI) is found by a bounded walk and programmed the way an OS
//! does it: disabled while the message is written, one vector, then enabled and read back.

use core::fmt;

use lazaret_guest_abi::BootInfo;

use crate::Platform;

const CONFIG_ADDRESS: u16 = 0xcf8;
const CONFIG_DATA: u16 = 0xcfc;
const ENABLE: u32 = 1 << 31;

const ID: u8 = 0x00;
const COMMAND: u8 = 0x04;
const HEADER_TYPE_DWORD: u8 = 0x0c;
const BAR0: u8 = 0x10;
/// Status register bit 4 (in the Command dword's upper half): a capability list exists.
const STATUS_CAPABILITIES: u32 = 1 << (16 + 4);
const CAPABILITIES_POINTER: u8 = 0x34;
/// Capability ID of MSI (PCI 3.0 Appendix H).
pub const CAP_ID_MSI: u8 = 0x05;
/// At most this many capabilities fit in the 192 bytes after the header (4 bytes each): a
/// longer walk is a loop in the list.
const MAX_CAPABILITIES: usize = 48;
/// Message Control, as bits of the capability's first dword: Enable (bit 0), Multiple
/// Message Enable (6:4), 64-bit address capable (7), per-vector masking capable (8).
const MSI_ENABLE: u32 = 1 << 16;
const MSI_MULTIPLE_ENABLE: u32 = 0b111 << 20;
const MSI_64BIT: u32 = 1 << 23;
const MSI_MASKING: u32 = 1 << 24;
/// Command register: Memory Space Enable (bit 1) and Bus Master Enable (bit 2).
pub const COMMAND_MEMORY: u16 = 1 << 1;
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;

/// A function on bus 0 (the guest's virtual bus has no bridges).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Function {
    pub device: u8,
    pub function: u8,
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00:{:02x}.{}", self.device, self.function)
    }
}

/// BAR0 of the device once sized and enabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryBar {
    pub gpa: u64,
    pub size: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciError {
    /// No function with this vendor/device ID on bus 0.
    NotFound,
    /// BAR0 is an I/O BAR, or of a reserved memory type.
    NotMemoryBar { raw: u32 },
    /// BAR0 does not lie in the MMIO window, or is smaller than `min_size`, or its size is
    /// not a power of two.
    BadBar { gpa: u64, size: u64 },
    /// The Command register did not take Memory Space Enable.
    DecodeOff { command: u16 },
    /// No MSI capability in the function's capability list.
    NoMsi,
    /// The MSI capability read back something other than what was written: the message at
    /// `address`/`data`, or `enabled` false.
    MsiNotTaken {
        address: u64,
        data: u32,
        enabled: bool,
    },
}

impl fmt::Display for PciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PciError::NotFound => write!(f, "no edu device on bus 0"),
            PciError::NotMemoryBar { raw } => write!(f, "BAR0 {raw:#010x} is not a memory BAR"),
            PciError::BadBar { gpa, size } => {
                write!(
                    f,
                    "BAR0 at {gpa:#x} ({size:#x} bytes) is outside the MMIO window"
                )
            }
            PciError::DecodeOff { command } => {
                write!(f, "memory decoding stayed off (command {command:#06x})")
            }
            PciError::NoMsi => write!(f, "no MSI capability"),
            PciError::MsiNotTaken {
                address,
                data,
                enabled,
            } => write!(
                f,
                "MSI reads back address {address:#x}, data {data:#x}, enable {enabled}"
            ),
        }
    }
}

/// Configuration mechanism #1 on bus 0.
pub struct Config<'p, P: Platform> {
    platform: &'p P,
}

impl<'p, P: Platform> Config<'p, P> {
    pub fn new(platform: &'p P) -> Config<'p, P> {
        Config { platform }
    }

    /// CONFIG_ADDRESS: enable (31), bus (23:16) = 0, device (15:11), function (10:8),
    /// dword register (7:2).
    fn select(&self, at: Function, offset: u8) {
        let address = ENABLE
            | (u32::from(at.device & 0x1f) << 11)
            | (u32::from(at.function & 0x7) << 8)
            | u32::from(offset & 0xfc);
        self.platform.outl(CONFIG_ADDRESS, address);
    }

    pub fn read32(&self, at: Function, offset: u8) -> u32 {
        self.select(at, offset);
        self.platform.inl(CONFIG_DATA)
    }

    pub fn write32(&self, at: Function, offset: u8, value: u32) {
        self.select(at, offset);
        self.platform.outl(CONFIG_DATA, value);
    }

    /// The first function on bus 0 with this vendor and device ID. Functions 1–7 are looked
    /// at only when function 0 says it is multi-function (Header Type bit 7).
    pub fn find(&self, vendor: u16, device: u16) -> Option<Function> {
        let wanted = u32::from(vendor) | (u32::from(device) << 16);
        for dev in 0..32 {
            for function in 0..8 {
                let at = Function {
                    device: dev,
                    function,
                };
                let id = self.read32(at, ID);
                if id as u16 == 0xffff {
                    if function == 0 {
                        break;
                    }
                    continue;
                }
                if id == wanted {
                    return Some(at);
                }
                let multi = self.read32(at, HEADER_TYPE_DWORD) & (0x80 << 16) != 0;
                if function == 0 && !multi {
                    break;
                }
            }
        }
        None
    }

    /// Sizes BAR0 (all ones written with decoding off, size mask read back, address
    /// restored), checks it against the MMIO window, then turns on memory decoding and bus
    /// mastering. Returns the BAR and the Command register as read back: Lazaret filters
    /// Command writes, so Bus Master Enable may stay off.
    pub fn enable_bar0(
        &self,
        at: Function,
        info: &BootInfo,
        min_size: u64,
    ) -> Result<(MemoryBar, u16), PciError> {
        let command = self.read32(at, COMMAND) as u16;
        // Status (the upper half) is written as zero: its bits are RW1C.
        self.write32(at, COMMAND, u32::from(command & !COMMAND_MEMORY));
        let low = self.read32(at, BAR0);
        let sized = self.size(at, low);
        let bar = sized.and_then(|(gpa, size)| {
            let fits = size >= min_size && size.is_power_of_two() && info.in_mmio_window(gpa, size);
            if fits {
                Ok(MemoryBar { gpa, size })
            } else {
                Err(PciError::BadBar { gpa, size })
            }
        });
        let bar = match bar {
            Ok(bar) => bar,
            Err(e) => {
                self.write32(at, COMMAND, u32::from(command));
                return Err(e);
            }
        };
        let wanted = command | COMMAND_MEMORY | COMMAND_BUS_MASTER;
        self.write32(at, COMMAND, u32::from(wanted));
        let now = self.read32(at, COMMAND) as u16;
        if now & COMMAND_MEMORY == 0 {
            return Err(PciError::DecodeOff { command: now });
        }
        Ok((bar, now))
    }

    /// The offset of the first capability with ID `id`, walking at most [`MAX_CAPABILITIES`]
    /// entries (a looping or wild list ends the walk, it cannot hang the guest). Pointers'
    /// bits 1:0 are reserved (§6.7); one below 0x40 ends the list.
    pub fn find_capability(&self, at: Function, id: u8) -> Option<u8> {
        if self.read32(at, COMMAND) & STATUS_CAPABILITIES == 0 {
            return None;
        }
        let mut next = self.read32(at, CAPABILITIES_POINTER) as u8 & 0xfc;
        for _ in 0..MAX_CAPABILITIES {
            if next < 0x40 {
                return None;
            }
            let header = self.read32(at, next);
            if header as u8 == id {
                return Some(next);
            }
            next = (header >> 8) as u8 & 0xfc;
        }
        None
    }

    /// Programs the MSI capability with one vector's `address`/`data` and enables it: MSI
    /// Enable cleared first (a device must never signal a half-written message), the address
    /// (Upper Address 0 on a 64-bit capability), the data, vector 0 unmasked if the function
    /// can mask, then Enable with Multiple Message Enable 0 (one vector). Everything is read
    /// back: Lazaret's copy of the capability is what will be acted on.
    pub fn enable_msi(&self, at: Function, address: u32, data: u16) -> Result<u8, PciError> {
        let cap = self
            .find_capability(at, CAP_ID_MSI)
            .ok_or(PciError::NoMsi)?;
        let control = self.read32(at, cap);
        // The upper half is Message Control; the lower half (ID, Next) is read-only.
        let off = control & !(MSI_ENABLE | MSI_MULTIPLE_ENABLE);
        self.write32(at, cap, off);
        let wide = control & MSI_64BIT != 0;
        self.write32(at, cap + 4, address);
        let data_at = if wide {
            self.write32(at, cap + 8, 0);
            cap + 0xc
        } else {
            cap + 8
        };
        self.write32(at, data_at, u32::from(data));
        if control & MSI_MASKING != 0 {
            self.write32(at, data_at + 4, 0);
        }
        self.write32(at, cap, off | MSI_ENABLE);
        let upper = if wide { self.read32(at, cap + 8) } else { 0 };
        let read_address = (u64::from(upper) << 32) | u64::from(self.read32(at, cap + 4));
        let read_data = self.read32(at, data_at) & 0xffff;
        let enabled = self.read32(at, cap) & MSI_ENABLE != 0;
        if read_address != u64::from(address) || read_data != u32::from(data) || !enabled {
            return Err(PciError::MsiNotTaken {
                address: read_address,
                data: read_data,
                enabled,
            });
        }
        Ok(cap)
    }

    /// (address, size) of a memory BAR0 whose first dword reads `low` (§6.2.5.1: bit 0 = 0
    /// memory; bits 2:1 = 00 32-bit, 10 64-bit; bits 3:0 are not address).
    fn size(&self, at: Function, low: u32) -> Result<(u64, u64), PciError> {
        let wide = match (low & 1, (low >> 1) & 3) {
            (0, 0) => false,
            (0, 2) => true,
            _ => return Err(PciError::NotMemoryBar { raw: low }),
        };
        let high = if wide { self.read32(at, BAR0 + 4) } else { 0 };
        self.write32(at, BAR0, u32::MAX);
        let mask_low = self.read32(at, BAR0);
        self.write32(at, BAR0, low);
        let mask_high = if wide {
            self.write32(at, BAR0 + 4, u32::MAX);
            let m = self.read32(at, BAR0 + 4);
            self.write32(at, BAR0 + 4, high);
            m
        } else {
            u32::MAX
        };
        let gpa = (u64::from(high) << 32) | u64::from(low & !0xf);
        let mask = (u64::from(mask_high) << 32) | u64::from(mask_low & !0xf);
        // An all-zero mask (an unimplemented BAR) gives size 0, refused by the caller.
        let size = (!mask).wrapping_add(1);
        Ok((gpa, size))
    }
}
