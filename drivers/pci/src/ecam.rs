use lazaret_types::{Mmio, PhysAddr, Sbdf};

use crate::{ConfigSpace, PciError};

/// Bytes of configuration space per function under ECAM (PCIe Base §7.2.2).
const FUNCTION_SPACE: u16 = 4096;
/// ECAM address bits: bus in 27:20, device in 19:15, function in 14:12 (PCIe Base §7.2.2,
/// Table 7-1); devfn is therefore the function's byte index shifted by 12.
const BUS_SHIFT: u32 = 20;
const DEVFN_SHIFT: u32 = 12;

/// Physical base and length of the ECAM window that decodes `start_bus..=end_bus`, given an
/// MCFG entry's base address; the kernel maps exactly this, uncached, for [`Ecam`].
///
/// The MCFG base is that of bus 0 even when the decoded range starts higher (PCI Firmware Spec
/// 3.2 §4.1.2, Table 4-3; Linux maps `base + (start_bus << 20)` the same way). `None` when the
/// range is empty or the window would pass the end of the address space.
pub fn ecam_window(mcfg_base: PhysAddr, start_bus: u8, end_bus: u8) -> Option<(PhysAddr, u64)> {
    if start_bus > end_bus {
        return None;
    }
    let base = mcfg_base.checked_add(u64::from(start_bus) << BUS_SHIFT)?;
    let len = (u64::from(end_bus - start_bus) + 1) << BUS_SHIFT;
    base.checked_add(len - 1)?;
    Some((base, len))
}

/// The Enhanced Configuration Access Mechanism: one memory-mapped window per segment and bus
/// range, as described by an ACPI MCFG entry.
///
/// The `Mmio` block starts at the window of `start_bus` (see [`ecam_window`]). Accesses
/// to another segment, a bus outside the range or an offset beyond 4 KiB read all ones and
/// drop writes, like a master abort, so that the enumerator needs no special case for them.
pub struct Ecam<M: Mmio> {
    regs: M,
    segment: u16,
    start_bus: u8,
    end_bus: u8,
}

impl<M: Mmio> Ecam<M> {
    pub fn new(regs: M, segment: u16, start_bus: u8, end_bus: u8) -> Result<Self, PciError> {
        if start_bus > end_bus {
            return Err(PciError::EcamBusRange { start_bus, end_bus });
        }
        Ok(Ecam {
            regs,
            segment,
            start_bus,
            end_bus,
        })
    }

    pub fn segment(&self) -> u16 {
        self.segment
    }

    /// First and last bus of the window: the root buses the enumerator may start from.
    pub fn bus_range(&self) -> (u8, u8) {
        (self.start_bus, self.end_bus)
    }

    /// Offset of the dword into the window, or `None` when the access falls outside it.
    fn offset(&self, addr: Sbdf, offset: u16) -> Option<usize> {
        let bus = addr.bdf.bus();
        if addr.segment != self.segment
            || bus < self.start_bus
            || bus > self.end_bus
            || offset >= FUNCTION_SPACE
        {
            return None;
        }
        let bus_index = usize::from(bus - self.start_bus);
        Some(
            (bus_index << BUS_SHIFT)
                | (usize::from(addr.bdf.devfn()) << DEVFN_SHIFT)
                | usize::from(offset & !3),
        )
    }
}

impl<M: Mmio> ConfigSpace for Ecam<M> {
    fn read32(&self, addr: Sbdf, offset: u16) -> u32 {
        match self.offset(addr, offset) {
            Some(at) => self.regs.read32(at),
            None => u32::MAX,
        }
    }

    fn write32(&self, addr: Sbdf, offset: u16, value: u32) {
        if let Some(at) = self.offset(addr, offset) {
            self.regs.write32(at, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lazaret_types::sim::{RegAccess, SimRegisters};
    use lazaret_types::Bdf;

    fn at(segment: u16, bus: u8, dev: u8, func: u8) -> Sbdf {
        Sbdf::new(segment, Bdf::new(bus, dev, func).unwrap())
    }

    #[test]
    fn offsets_follow_the_ecam_layout_relative_to_the_start_bus() {
        let ecam = Ecam::new(SimRegisters::new(), 1, 0x10, 0x1f).unwrap();
        ecam.regs
            .set((2 << 20) | (3 << 15) | (5 << 12) | 0x08, 0x0c03_3001);
        assert_eq!(ecam.read32(at(1, 0x12, 3, 5), 0x08), 0x0c03_3001);
        ecam.write32(at(1, 0x1f, 31, 7), 0xffc, 7);
        assert_eq!(
            ecam.regs.accesses().last(),
            Some(&RegAccess::Write32(
                (0xf << 20) | (31 << 15) | (7 << 12) | 0xffc,
                7
            ))
        );
    }

    #[test]
    fn accesses_outside_the_window_read_all_ones_and_touch_nothing() {
        let ecam = Ecam::new(SimRegisters::new(), 0, 0x10, 0x1f).unwrap();
        assert_eq!(ecam.read32(at(0, 0x0f, 0, 0), 0), u32::MAX);
        assert_eq!(ecam.read32(at(0, 0x20, 0, 0), 0), u32::MAX);
        assert_eq!(ecam.read32(at(1, 0x10, 0, 0), 0), u32::MAX);
        assert_eq!(ecam.read32(at(0, 0x10, 0, 0), 0x1000), u32::MAX);
        ecam.write32(at(0, 0x20, 0, 0), 0x04, 6);
        assert!(ecam.regs.accesses().is_empty());
    }

    #[test]
    fn window_geometry_matches_mcfg_conventions() {
        assert_eq!(
            ecam_window(PhysAddr(0xb000_0000), 0x10, 0x1f),
            Some((PhysAddr(0xb100_0000), 16 << 20))
        );
        assert_eq!(
            ecam_window(PhysAddr(0xe000_0000), 0, 0xff),
            Some((PhysAddr(0xe000_0000), 256 << 20))
        );
        assert_eq!(ecam_window(PhysAddr(0), 1, 0), None);
        assert_eq!(ecam_window(PhysAddr(u64::MAX - 0xfffff), 0, 1), None);
        assert_eq!(
            Ecam::new(SimRegisters::new(), 0, 2, 1).err(),
            Some(PciError::EcamBusRange {
                start_bus: 2,
                end_bus: 1
            })
        );
    }
}
