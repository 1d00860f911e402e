//! Offsets and bits of the configuration-space header (PCI Local Bus Spec 3.0 §6.1–6.2;
//! PCI Express Base Spec 6.x §7.5.1). Kept in one place so that the enumerator, the BAR
//! sizer, the capability walker and the fake all agree on the layout.

/// Vendor ID (15:0) and Device ID (31:16). Vendor 0xFFFF means "no function here": a
/// configuration read that nobody claims completes with all ones.
pub const ID: u16 = 0x00;
/// Command (15:0) and Status (31:16).
pub const COMMAND: u16 = 0x04;
/// Revision ID (7:0), Programming Interface (15:8), Sub-Class (23:16), Base Class (31:24).
pub const CLASS_REVISION: u16 = 0x08;
/// Cache line size, latency timer, Header Type (23:16), BIST.
pub const HEADER_DWORD: u16 = 0x0c;
/// First Base Address Register; BAR `n` is at `BAR0 + 4 * n`.
pub const BAR0: u16 = 0x10;
/// Type 1 header: primary (7:0), secondary (15:8) and subordinate (23:16) bus numbers.
pub const BRIDGE_BUS_NUMBERS: u16 = 0x18;
/// Capabilities Pointer of type 0 and type 1 headers.
pub const CAPABILITY_POINTER: u16 = 0x34;
/// Capabilities Pointer of the type 2 (CardBus) header.
pub const CARDBUS_CAPABILITY_POINTER: u16 = 0x14;

/// Vendor ID of an absent function.
pub const VENDOR_ABSENT: u16 = 0xffff;

/// Command bit 0: I/O Space Enable.
pub const COMMAND_IO_SPACE: u16 = 1 << 0;
/// Command bit 1: Memory Space Enable.
pub const COMMAND_MEMORY_SPACE: u16 = 1 << 1;
/// Command bit 2: Bus Master Enable — without it a function cannot issue DMA.
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;

/// Status bit 4: Capabilities List present (bit 20 of the COMMAND dword).
pub const STATUS_CAPABILITIES_LIST: u32 = 1 << (16 + 4);

/// Header Type bit 7 (on function 0): the device implements functions 1–7.
pub const HEADER_MULTI_FUNCTION: u8 = 0x80;
/// Header Type bits 6:0: the layout of bytes 0x10–0x3f.
pub const HEADER_LAYOUT_MASK: u8 = 0x7f;

/// BAR bit 0: 1 = I/O space, 0 = memory space.
pub const BAR_IO: u32 = 1 << 0;
/// Memory BAR bits 2:1: 00 = 32-bit, 10 = 64-bit (01 and 11 reserved).
pub const BAR_MEM_TYPE_MASK: u32 = 0b110;
pub const BAR_MEM_TYPE_32: u32 = 0b000;
pub const BAR_MEM_TYPE_64: u32 = 0b100;
/// Memory BAR bit 3: Prefetchable.
pub const BAR_MEM_PREFETCHABLE: u32 = 1 << 3;
/// Address bits of a memory BAR (the low four bits are type information).
pub const BAR_MEM_ADDRESS_MASK: u32 = !0xf;
/// Address bits of an I/O BAR (bit 1 is reserved).
pub const BAR_IO_ADDRESS_MASK: u32 = !0x3;

/// Capability IDs (PCI Code and ID Assignment Spec §2).
pub const CAP_ID_PCI_EXPRESS: u8 = 0x10;

/// PCI Express Capabilities Register (cap + 2): Device/Port Type in bits 7:4 (PCIe Base §7.5.3.2).
pub const PCIE_CAPABILITIES: u16 = 0x02;
/// Device Capabilities Register (cap + 4): Function Level Reset Capability is bit 28 (§7.5.3.3).
pub const PCIE_DEVICE_CAPABILITIES: u16 = 0x04;
pub const PCIE_DEVCAP_FLR: u32 = 1 << 28;
/// Device Capabilities bits 4:3: Phantom Functions Supported.
pub const PCIE_DEVCAP_PHANTOM: u32 = 0b11 << 3;

/// Extended capabilities start right after the first 256 bytes (PCIe Base §7.6).
pub const EXTENDED_CAPABILITIES: u16 = 0x100;
