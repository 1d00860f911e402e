//! Base Address Registers: decoding what firmware programmed and sizing each window (PCI Local
//! Bus Spec 3.0 §6.2.5.1; PCIe Base §7.5.1.2.1).
use alloc::vec::Vec;

use lazaret_types::Sbdf;

use crate::command::write_command;
use crate::function::header_type;
use crate::regs;
use crate::{ConfigSpace, PciError};

/// What a BAR decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    Mem32,
    /// Occupies this slot and the next (the upper half of the address).
    Mem64,
    Io,
}

/// One implemented BAR: where firmware put it and how large it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    /// Slot number (0–5); a 64-bit BAR also uses `index + 1`.
    pub index: u8,
    pub kind: BarKind,
    pub prefetchable: bool,
    pub base: u64,
    pub size: u64,
}

/// BAR slots of each header layout: 6 for type 0, 2 for a type 1 bridge, 1 for a CardBus
/// bridge (its socket register window), none for layouts we do not know.
pub(crate) fn slot_count(layout: u8) -> u8 {
    match layout {
        0 => 6,
        1 => 2,
        2 => 1,
        _ => 0,
    }
}

fn slot_offset(index: u8) -> u16 {
    regs::BAR0 + 4 * u16::from(index)
}

/// One BAR as read, before sizing; keeps the raw dwords to restore them afterwards.
struct Slot {
    kind: BarKind,
    prefetchable: bool,
    base: u64,
    low: u32,
    high: Option<u32>,
}

fn read_slot<C: ConfigSpace + ?Sized>(
    cfg: &C,
    function: Sbdf,
    index: u8,
    slots: u8,
) -> Result<Slot, PciError> {
    if index >= slots {
        return Err(PciError::NoSuchBar { function, index });
    }
    let low = cfg.read32(function, slot_offset(index));
    if low & regs::BAR_IO != 0 {
        return Ok(Slot {
            kind: BarKind::Io,
            prefetchable: false,
            base: u64::from(low & regs::BAR_IO_ADDRESS_MASK),
            low,
            high: None,
        });
    }
    let prefetchable = low & regs::BAR_MEM_PREFETCHABLE != 0;
    let base_low = u64::from(low & regs::BAR_MEM_ADDRESS_MASK);
    match low & regs::BAR_MEM_TYPE_MASK {
        regs::BAR_MEM_TYPE_32 => Ok(Slot {
            kind: BarKind::Mem32,
            prefetchable,
            base: base_low,
            low,
            high: None,
        }),
        regs::BAR_MEM_TYPE_64 if index + 1 < slots => {
            let high = cfg.read32(function, slot_offset(index + 1));
            Ok(Slot {
                kind: BarKind::Mem64,
                prefetchable,
                base: (u64::from(high) << 32) | base_low,
                low,
                high: Some(high),
            })
        }
        regs::BAR_MEM_TYPE_64 => Err(PciError::Bar64WithoutUpperHalf { function, index }),
        _ => Err(PciError::ReservedBarType { function, index }),
    }
}

/// Writes all ones to a BAR register, reads back which bits stick and restores the original.
fn probe_mask<C: ConfigSpace + ?Sized>(cfg: &C, function: Sbdf, offset: u16, original: u32) -> u32 {
    cfg.write32(function, offset, u32::MAX);
    let mask = cfg.read32(function, offset);
    cfg.write32(function, offset, original);
    mask
}

/// The window size of `slot`, or `None` when no address bit is writable (unimplemented BAR).
/// The size is the lowest writable address bit, not `!mask + 1`: I/O BARs and some memory
/// BARs leave upper address bits read-only zero (Linux's `pci_size` does the same).
fn size_slot<C: ConfigSpace + ?Sized>(
    cfg: &C,
    function: Sbdf,
    index: u8,
    slot: &Slot,
) -> Option<u64> {
    let offset = slot_offset(index);
    let low_mask = probe_mask(cfg, function, offset, slot.low);
    let mask = match (slot.kind, slot.high) {
        (BarKind::Io, _) => u64::from(low_mask & regs::BAR_IO_ADDRESS_MASK),
        (BarKind::Mem64, Some(high)) => {
            let high_mask = probe_mask(cfg, function, offset + 4, high);
            (u64::from(high_mask) << 32) | u64::from(low_mask & regs::BAR_MEM_ADDRESS_MASK)
        }
        (BarKind::Mem32 | BarKind::Mem64, _) => u64::from(low_mask & regs::BAR_MEM_ADDRESS_MASK),
    };
    (mask != 0).then(|| mask & mask.wrapping_neg())
}

/// Sizes every BAR of a function with `slots` BAR registers.
///
/// I/O and memory decoding are off while a BAR holds all ones — otherwise the function would
/// claim whatever address range the all-ones pattern happens to cover — and the BARs and the
/// Command register are restored afterwards. `keep_decoding` is for host bridges (see
/// [`crate::ClassCode::is_host_bridge`]). Malformed slots are reported in `issues` and skipped.
pub(crate) fn probe_bars<C: ConfigSpace + ?Sized>(
    cfg: &C,
    function: Sbdf,
    slots: u8,
    keep_decoding: bool,
    issues: &mut Vec<PciError>,
) -> Vec<Bar> {
    let mut bars = Vec::new();
    if slots == 0 {
        return bars;
    }
    let command = cfg.read16(function, regs::COMMAND);
    let decoding = command & (regs::COMMAND_IO_SPACE | regs::COMMAND_MEMORY_SPACE);
    let pause = decoding != 0 && !keep_decoding;
    if pause {
        write_command(cfg, function, command & !decoding);
    }
    let mut index = 0;
    while index < slots {
        match read_slot(cfg, function, index, slots) {
            Ok(slot) => {
                if let Some(size) = size_slot(cfg, function, index, &slot) {
                    bars.push(Bar {
                        index,
                        kind: slot.kind,
                        prefetchable: slot.prefetchable,
                        base: slot.base,
                        size,
                    });
                }
                index += if slot.kind == BarKind::Mem64 { 2 } else { 1 };
            }
            Err(error) => {
                issues.push(error);
                index += 1;
            }
        }
    }
    if pause {
        write_command(cfg, function, command);
    }
    bars
}

/// What a BAR decodes and the base address firmware programmed, without sizing it (no writes).
pub fn bar_address<C: ConfigSpace + ?Sized>(
    cfg: &C,
    function: Sbdf,
    index: u8,
) -> Result<(BarKind, u64), PciError> {
    if cfg.read16(function, regs::ID) == regs::VENDOR_ABSENT {
        return Err(PciError::Absent(function));
    }
    let layout = header_type(cfg, function) & regs::HEADER_LAYOUT_MASK;
    let slot = read_slot(cfg, function, index, slot_count(layout))?;
    Ok((slot.kind, slot.base))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{FakeConfigSpace, FakeFunction};
    use lazaret_types::Bdf;

    fn at() -> Sbdf {
        Sbdf::new(0, Bdf::new(0, 5, 0).unwrap())
    }

    fn fake(f: FakeFunction) -> FakeConfigSpace {
        let mut cfg = FakeConfigSpace::new();
        cfg.insert(at(), f);
        cfg
    }

    fn probe(f: FakeFunction) -> (FakeConfigSpace, Vec<Bar>, Vec<PciError>) {
        let cfg = fake(f);
        let mut issues = Vec::new();
        let bars = probe_bars(&cfg, at(), 6, false, &mut issues);
        (cfg, bars, issues)
    }

    fn header(cfg: &FakeConfigSpace) -> Vec<u32> {
        (0..16).filter_map(|i| cfg.peek(at(), i * 4)).collect()
    }

    #[test]
    fn sizes_every_kind_and_restores_the_registers() {
        let device = FakeFunction::endpoint(0x8086, 0x10d3, 0x020000)
            .command(0x0007)
            .bar_mem32(0, 0xfeb8_0000, 128 << 10, false)
            .bar_io(1, 0xc000, 32)
            .bar_mem64(2, 0x8_0000_0000, 8 << 30, true)
            .bar_mem64(4, 0xfe00_0000, 16 << 10, false);
        let cfg = fake(device);
        let before = header(&cfg);
        let mut issues = Vec::new();
        let bars = probe_bars(&cfg, at(), 6, false, &mut issues);
        assert!(issues.is_empty());
        let summary: Vec<_> = bars
            .iter()
            .map(|b| (b.index, b.kind, b.prefetchable, b.base, b.size))
            .collect();
        assert_eq!(
            summary,
            vec![
                (0, BarKind::Mem32, false, 0xfeb8_0000, 128 << 10),
                (1, BarKind::Io, false, 0xc000, 32),
                (2, BarKind::Mem64, true, 0x8_0000_0000, 8 << 30),
                (4, BarKind::Mem64, false, 0xfe00_0000, 16 << 10),
            ]
        );
        assert_eq!(before, header(&cfg), "BARs and command restored");
    }

    #[test]
    fn decoding_is_off_whenever_a_bar_holds_all_ones() {
        let (cfg, _, _) = probe(
            FakeFunction::endpoint(0x1234, 0x11e8, 0x00ff00)
                .command(0x0007)
                .bar_mem32(0, 0xfea0_0000, 1 << 20, false),
        );
        let writes = cfg.writes();
        let probes: Vec<_> = writes.iter().filter(|w| w.value == u32::MAX).collect();
        assert!(!probes.is_empty());
        assert!(probes.iter().all(|w| w.command_before & 0b11 == 0));
        assert_eq!(writes.first().map(|w| w.value), Some(0x0004));
        assert_eq!(writes.last().map(|w| w.value), Some(0x0007));
    }

    #[test]
    fn a_function_that_is_not_decoding_gets_no_command_writes() {
        let (cfg, bars, _) =
            probe(FakeFunction::endpoint(0x1234, 0x11e8, 0x00ff00).bar_mem32(0, 0, 4096, false));
        assert_eq!(bars.len(), 1);
        assert!(cfg.writes().iter().all(|w| w.offset != regs::COMMAND));
    }

    #[test]
    fn malformed_slots_are_reported_and_skipped() {
        let (_, bars, issues) = probe(
            FakeFunction::endpoint(0x1234, 0x0001, 0x00ff00)
                .raw(regs::BAR0, 0b010)
                .bar_mem32(1, 0xfe00_0000, 4096, false)
                .raw(regs::BAR0 + 20, regs::BAR_MEM_TYPE_64),
        );
        assert_eq!(bars.iter().map(|b| b.index).collect::<Vec<_>>(), vec![1]);
        assert_eq!(
            issues,
            vec![
                PciError::ReservedBarType {
                    function: at(),
                    index: 0
                },
                PciError::Bar64WithoutUpperHalf {
                    function: at(),
                    index: 5
                },
            ]
        );
    }

    #[test]
    fn bar_address_reads_without_writing() {
        let cfg = fake(FakeFunction::bridge(0x1b36, 0x000c, 0, 1, 1).bar_mem64(
            0,
            0x1_2345_6000,
            4096,
            false,
        ));
        assert_eq!(
            bar_address(&cfg, at(), 0),
            Ok((BarKind::Mem64, 0x1_2345_6000))
        );
        assert_eq!(
            bar_address(&cfg, at(), 2),
            Err(PciError::NoSuchBar {
                function: at(),
                index: 2
            })
        );
        let nobody = Sbdf::new(0, Bdf::new(0, 6, 0).unwrap());
        assert_eq!(bar_address(&cfg, nobody, 0), Err(PciError::Absent(nobody)));
        assert!(cfg.writes().is_empty());
    }
}
