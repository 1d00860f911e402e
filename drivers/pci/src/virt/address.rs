//! Configuration mechanism #1 as a guest drives it (PCI Local Bus Spec 3.0 §3.2.2.3.2): a
//! dword written to CONFIG_ADDRESS (0xCF8) selects bus, device, function and dword register;
//! the next access to CONFIG_DATA (0xCFC–0xCFF) moves 1, 2 or 4 bytes of that dword.
use lazaret_types::Bdf;

pub const CONFIG_ADDRESS_PORT: u16 = 0xcf8;
pub const CONFIG_DATA_PORT: u16 = 0xcfc;
/// CONFIG_ADDRESS bit 31: data-port accesses are configuration cycles.
const ENABLE: u32 = 1 << 31;
/// CONFIG_ADDRESS bits 30:24 are reserved; AMD uses 27:24 for extended registers
/// (offset 0x100+), which the virtual bus does not offer, so a set bit is no access at all
/// rather than a silent alias of the first 256 bytes.
const RESERVED: u32 = 0x7f00_0000;
/// Bits 23:8: the bus/device/function (the requester-ID layout); bits 7:2: the dword.
const REGISTER: u32 = 0xfc;

/// The bytes of a dword one data-port access covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lanes {
    shift: u32,
    mask: u32,
}

impl Lanes {
    /// `byte` (0–3) within the dword and `width` (1, 2 or 4); `None` for another width or
    /// an access that crosses the dword (0xCFD with 4 bytes, 0xCFF with 2).
    pub fn new(byte: u16, width: u8) -> Option<Lanes> {
        let ones: u32 = match width {
            1 => 0xff,
            2 => 0xffff,
            4 => u32::MAX,
            _ => return None,
        };
        if byte + u16::from(width) > 4 {
            return None;
        }
        let shift = u32::from(byte) * 8;
        Some(Lanes {
            shift,
            mask: ones << shift,
        })
    }

    /// The covered bytes of `dword`, moved down to bit 0.
    pub fn extract(self, dword: u32) -> u32 {
        (dword & self.mask) >> self.shift
    }

    /// `dword` with the covered bytes replaced by the low bytes of `value`.
    pub fn merge(self, dword: u32, value: u32) -> u32 {
        (dword & !self.mask) | ((value << self.shift) & self.mask)
    }

    /// Whether the access touches any bit of `bits`.
    pub fn covers(self, bits: u32) -> bool {
        self.mask & bits != 0
    }
}

/// What a master-aborted read returns at `width`: all ones in the bytes moved.
pub fn all_ones(width: u8) -> u32 {
    match width {
        1 => 0xff,
        2 => 0xffff,
        _ => u32::MAX,
    }
}

/// The register a data-port access reaches: the BDF as the guest named it, the dword offset
/// and the bytes within it. `None` when it is no configuration access (enable clear, a
/// reserved bit set, a port outside CONFIG_DATA, a bad width).
pub fn decode(address: u32, port: u16, width: u8) -> Option<(Bdf, u16, Lanes)> {
    if address & ENABLE == 0 || address & RESERVED != 0 {
        return None;
    }
    let byte = port.checked_sub(CONFIG_DATA_PORT)?;
    let lanes = Lanes::new(byte, width)?;
    let bdf = Bdf::from_requester_id((address >> 8) as u16);
    Some((bdf, (address & REGISTER) as u16, lanes))
}
