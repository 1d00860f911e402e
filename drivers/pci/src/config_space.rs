use lazaret_types::Sbdf;

/// Access to the configuration space of PCI functions.
///
/// The unit of access is the aligned dword because that is what both mechanisms move on the
/// wire (PCI Local Bus Spec 3.0 §3.2.2.3.2; PCIe Base §7.2.2): narrower reads are carved out
/// of a dword here, and there are deliberately no narrow *writes* — a read-modify-write of a
/// dword would write back RW1C status bits and clear them. Callers that update the Command
/// register write the whole dword with the Status half zero (see [`crate::update_command`]).
///
/// A read of a function that does not exist, or outside the mechanism's reach, returns all
/// ones, exactly like a configuration read that ends in a master abort; writes there are
/// dropped. Methods take `&self`: configuration space is shared hardware state and the kernel
/// serialises through its own lock.
pub trait ConfigSpace {
    /// The dword at `offset` (which must be dword-aligned; the low two bits are ignored).
    fn read32(&self, addr: Sbdf, offset: u16) -> u32;
    /// Writes the dword at `offset` (dword-aligned; the low two bits are ignored).
    fn write32(&self, addr: Sbdf, offset: u16, value: u32);

    /// The 16-bit register at `offset` (bit 0 ignored), from its enclosing dword.
    fn read16(&self, addr: Sbdf, offset: u16) -> u16 {
        let shift = u32::from(offset & 2) * 8;
        (self.read32(addr, offset & !3) >> shift) as u16
    }

    /// The byte at `offset`, from its enclosing dword.
    fn read8(&self, addr: Sbdf, offset: u16) -> u8 {
        let shift = u32::from(offset & 3) * 8;
        (self.read32(addr, offset & !3) >> shift) as u8
    }
}

impl<C: ConfigSpace + ?Sized> ConfigSpace for &C {
    fn read32(&self, addr: Sbdf, offset: u16) -> u32 {
        (**self).read32(addr, offset)
    }

    fn write32(&self, addr: Sbdf, offset: u16, value: u32) {
        (**self).write32(addr, offset, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;
    use lazaret_types::Bdf;

    /// Answers every dword read with a fixed pattern and remembers the last offset asked for.
    struct Pattern(Cell<u16>);

    impl ConfigSpace for Pattern {
        fn read32(&self, _: Sbdf, offset: u16) -> u32 {
            self.0.set(offset);
            0x4433_2211
        }
        fn write32(&self, _: Sbdf, _: u16, _: u32) {}
    }

    #[test]
    fn narrow_reads_come_from_the_enclosing_aligned_dword() {
        let cfg = Pattern(Cell::new(0xffff));
        let at = Sbdf::new(0, Bdf::new(0, 0, 0).unwrap());
        assert_eq!(cfg.read16(at, 0x0e), 0x4433);
        assert_eq!(cfg.0.get(), 0x0c);
        assert_eq!(cfg.read16(at, 0x0c), 0x2211);
        assert_eq!(cfg.read8(at, 0x0d), 0x22);
        assert_eq!(cfg.read8(at, 0x0f), 0x44);
        assert_eq!(cfg.0.get(), 0x0c);
    }
}
