//! The Command register: the switches the passthrough core flips — Bus Master Enable to stop a
//! function's DMA, Memory Space Enable around BAR programming (PCI Local Bus Spec 3.0 §6.2.2).
use lazaret_types::Sbdf;

use crate::regs::{self, COMMAND_BUS_MASTER, COMMAND_MEMORY_SPACE};
use crate::{ConfigSpace, PciError};

/// Writes Command with the Status half zero: Status bits are RW1C, so writing back what was
/// read would clear pending error bits that the fault path still wants to see.
pub(crate) fn write_command<C: ConfigSpace + ?Sized>(cfg: &C, function: Sbdf, command: u16) {
    cfg.write32(function, regs::COMMAND, u32::from(command));
}

/// The Command register, or [`PciError::Absent`].
pub fn read_command<C: ConfigSpace + ?Sized>(cfg: &C, function: Sbdf) -> Result<u16, PciError> {
    if cfg.read16(function, regs::ID) == regs::VENDOR_ABSENT {
        return Err(PciError::Absent(function));
    }
    Ok(cfg.read16(function, regs::COMMAND))
}

/// Applies `change` to the Command register; writes only when it changes something. Returns
/// the previous value so the caller can restore it.
pub fn update_command<C: ConfigSpace + ?Sized>(
    cfg: &C,
    function: Sbdf,
    change: impl FnOnce(u16) -> u16,
) -> Result<u16, PciError> {
    let old = read_command(cfg, function)?;
    let new = change(old);
    if new != old {
        write_command(cfg, function, new);
    }
    Ok(old)
}

fn set_bits<C: ConfigSpace + ?Sized>(
    cfg: &C,
    function: Sbdf,
    bits: u16,
    enable: bool,
) -> Result<bool, PciError> {
    let old = update_command(cfg, function, |c| if enable { c | bits } else { c & !bits })?;
    Ok(old & bits != 0)
}

/// Sets or clears Bus Master Enable (bit 2); returns whether it was set before. With it clear
/// a function issues no DMA and no MSI — what the fault path does to a storming device.
pub fn set_bus_master<C: ConfigSpace + ?Sized>(
    cfg: &C,
    function: Sbdf,
    enable: bool,
) -> Result<bool, PciError> {
    set_bits(cfg, function, COMMAND_BUS_MASTER, enable)
}

/// Sets or clears Memory Space Enable (bit 1); returns whether it was set before.
pub fn set_memory_space<C: ConfigSpace + ?Sized>(
    cfg: &C,
    function: Sbdf,
    enable: bool,
) -> Result<bool, PciError> {
    set_bits(cfg, function, COMMAND_MEMORY_SPACE, enable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{FakeConfigSpace, FakeFunction};
    use lazaret_types::Bdf;

    fn edu() -> (FakeConfigSpace, Sbdf) {
        let at = Sbdf::new(0, Bdf::new(0, 3, 0).unwrap());
        let mut cfg = FakeConfigSpace::new();
        // Status has Received Master Abort (bit 13, RW1C) pending and a capability list.
        cfg.insert(
            at,
            FakeFunction::endpoint(0x1234, 0x11e8, 0x00ff00).raw(regs::COMMAND, 0x2010_0002),
        );
        (cfg, at)
    }

    #[test]
    fn bus_master_toggles_without_touching_status() {
        let (cfg, at) = edu();
        assert_eq!(set_bus_master(&cfg, at, true), Ok(false));
        assert_eq!(cfg.peek(at, regs::COMMAND), Some(0x2010_0006));
        assert_eq!(set_bus_master(&cfg, at, true), Ok(true));
        assert_eq!(set_bus_master(&cfg, at, false), Ok(true));
        assert_eq!(cfg.peek(at, regs::COMMAND), Some(0x2010_0002));
        let writes = cfg.writes();
        assert_eq!(writes.len(), 2, "an unchanged value is not rewritten");
        assert!(
            writes.iter().all(|w| w.value >> 16 == 0),
            "status half is zero"
        );
    }

    #[test]
    fn memory_space_and_absent_functions() {
        let (cfg, at) = edu();
        assert_eq!(set_memory_space(&cfg, at, false), Ok(true));
        assert_eq!(read_command(&cfg, at), Ok(0));
        let nobody = Sbdf::new(0, Bdf::new(0, 4, 0).unwrap());
        assert_eq!(
            set_bus_master(&cfg, nobody, false),
            Err(PciError::Absent(nobody))
        );
    }
}
