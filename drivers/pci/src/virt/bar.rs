//! One virtual BAR register (PCI Local Bus Spec 3.0 §6.2.5.1): it reads as its place in the
//! guest's MMIO window, and answers the sizing protocol (write all ones, read back which
//! address bits are writable, plus the type bits) with the real BAR's size.
//!
//! Policy: the guest cannot move a BAR. Nested paging maps each BAR at one guest-physical
//! address fixed when the bus is built, so a write whose writable bits are all ones puts the
//! register in its sizing state and any other write (the address put back, or a new one)
//! returns it to the fixed address. An OS that sizes and restores sees what hardware does; an
//! OS that relocates reads its BAR back where Lazaret placed it (as after a failed move).

/// Memory BAR bits 3:0 are type information, never address (§6.2.5.1).
const TYPE_BITS: u32 = 0xf;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VirtualBar {
    /// The address bits as they read normally.
    address: u32,
    /// The address bits a write can set: what reads back after all ones.
    writable: u32,
    /// Type bits (memory, 32/64-bit, prefetchable); zero in the upper half of a 64-bit BAR.
    flags: u32,
    sizing: bool,
}

impl VirtualBar {
    /// A slot that offers nothing (no BAR, an I/O BAR, the upper half's absence): reads 0,
    /// and sizing reads 0, as an unimplemented BAR does.
    pub const UNIMPLEMENTED: VirtualBar = VirtualBar {
        address: 0,
        writable: 0,
        flags: 0,
        sizing: false,
    };

    /// The only dword of a 32-bit BAR or the lower one of a 64-bit BAR at `gpa`; `flags` are
    /// the type bits it reports. `size` is a power of two.
    pub fn lower(gpa: u64, size: u64, flags: u32) -> VirtualBar {
        let size_mask = !(size - 1);
        VirtualBar {
            address: gpa as u32 & !TYPE_BITS,
            writable: size_mask as u32 & !TYPE_BITS,
            flags: flags & TYPE_BITS,
            sizing: false,
        }
    }

    /// The upper dword of a 64-bit BAR at `gpa`.
    pub fn upper(gpa: u64, size: u64) -> VirtualBar {
        let size_mask = !(size - 1);
        VirtualBar {
            address: (gpa >> 32) as u32,
            writable: (size_mask >> 32) as u32,
            flags: 0,
            sizing: false,
        }
    }

    pub fn read(&self) -> u32 {
        let address = if self.sizing {
            self.writable
        } else {
            self.address
        };
        address | self.flags
    }

    /// Records a guest write; it never reaches the device.
    pub fn write(&mut self, value: u32) {
        self.sizing = value & self.writable == self.writable;
    }
}
