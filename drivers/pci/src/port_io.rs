use core::arch::asm;

use lazaret_types::Sbdf;

use crate::ConfigSpace;

/// CONFIG_ADDRESS and CONFIG_DATA of configuration mechanism #1 (PCI Local Bus Spec 3.0 §3.2.2.3.2).
const CONFIG_ADDRESS: u16 = 0xcf8;
const CONFIG_DATA: u16 = 0xcfc;
/// CONFIG_ADDRESS bit 31: the next CONFIG_DATA access is a configuration cycle.
const ENABLE: u32 = 1 << 31;

/// Legacy configuration access through I/O ports 0xCF8/0xCFC: segment 0 and the first 256
/// bytes of each function only. Used before the MCFG table is known, or on machines without
/// ECAM. Everything it cannot reach reads all ones.
pub struct PortIo {
    _private: (),
}

impl PortIo {
    /// # Safety
    ///
    /// The caller runs at CPL 0 (or with IOPL 3) and owns ports 0xCF8–0xCFF: the address/data
    /// pair is a two-step protocol, so no other CPU or interrupt handler may use them while
    /// this value is in use (the kernel holds its PCI lock around every access).
    pub const unsafe fn new() -> PortIo {
        PortIo { _private: () }
    }

    fn address(addr: Sbdf, offset: u16) -> Option<u32> {
        if addr.segment != 0 || offset > 0xff {
            return None;
        }
        Some(ENABLE | (u32::from(addr.bdf.requester_id()) << 8) | u32::from(offset & 0xfc))
    }

    /// No `nomem` on the asm below: a configuration write (Bus Master Enable, say) must stay
    /// ordered with the memory accesses around it, so each access is a compiler barrier.
    fn select(address: u32) {
        // SAFETY: `PortIo::new`'s contract gives us exclusive use of CONFIG_ADDRESS at CPL 0;
        // writing it only latches the target of the next CONFIG_DATA access.
        unsafe {
            asm!("out dx, eax", in("dx") CONFIG_ADDRESS, in("eax") address, options(nostack, preserves_flags));
        }
    }
}

impl ConfigSpace for PortIo {
    fn read32(&self, addr: Sbdf, offset: u16) -> u32 {
        let Some(address) = Self::address(addr, offset) else {
            return u32::MAX;
        };
        Self::select(address);
        let value: u32;
        // SAFETY: as in `select`; CONFIG_DATA now performs the configuration read selected above.
        unsafe {
            asm!("in eax, dx", in("dx") CONFIG_DATA, out("eax") value, options(nostack, preserves_flags));
        }
        value
    }

    fn write32(&self, addr: Sbdf, offset: u16, value: u32) {
        let Some(address) = Self::address(addr, offset) else {
            return;
        };
        Self::select(address);
        // SAFETY: as in `select`; CONFIG_DATA now performs the configuration write selected above.
        unsafe {
            asm!("out dx, eax", in("dx") CONFIG_DATA, in("eax") value, options(nostack, preserves_flags));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lazaret_types::Bdf;

    #[test]
    fn config_address_encodes_bdf_and_dword_and_refuses_what_it_cannot_reach() {
        let f = Bdf::new(0x12, 0x1f, 3).unwrap();
        assert_eq!(
            PortIo::address(Sbdf::new(0, f), 0x3e),
            Some(0x8000_0000 | (0x12 << 16) | (0x1f << 11) | (3 << 8) | 0x3c)
        );
        assert_eq!(PortIo::address(Sbdf::new(0, f), 0x100), None);
        assert_eq!(PortIo::address(Sbdf::new(1, f), 0), None);
    }
}
