//! Placing the assigned functions' memory BARs in the guest's MMIO window.
//!
//! Each BAR is naturally aligned to its size (PCI Local Bus Spec 3.0 §6.2.5.1: an OS, and the
//! device's decoders, assume it), placed largest first so that power-of-two sizes pack without
//! holes. I/O BARs are not offered: the guest gets no port I/O to devices.
use alloc::vec::Vec;
use core::cmp::Reverse;

use lazaret_types::Sbdf;

use super::bar::VirtualBar;
use super::{BarMapping, VirtualBusError, MAX_VIRTUAL_FUNCTIONS};
use crate::{Bar, BarKind};

const PAGE: u64 = 4096;
const FOUR_GIB: u64 = 1 << 32;
/// BAR slots of a type 0 header.
pub const SLOTS: usize = 6;
/// Memory BAR type bits (§6.2.5.1): bit 3 prefetchable, bits 2:1 = 10b for 64-bit.
const PREFETCHABLE: u32 = 1 << 3;
const TYPE_64: u32 = 0b100;

/// A memory BAR waiting for its place.
struct Pending {
    function: usize,
    bar: Bar,
}

/// The virtual BAR registers of every function, in input order, and the mappings for nested
/// paging in function and slot order.
pub fn lay_out(
    functions: &[(Sbdf, &[Bar])],
    (gpa, size): (u64, u64),
) -> Result<(Vec<[VirtualBar; SLOTS]>, Vec<BarMapping>), VirtualBusError> {
    let window_end = gpa
        .checked_add(size)
        .filter(|_| size != 0 && gpa.is_multiple_of(PAGE) && size.is_multiple_of(PAGE));
    let Some(window_end) = window_end else {
        return Err(VirtualBusError::BadWindow { gpa, size });
    };
    if functions.len() > MAX_VIRTUAL_FUNCTIONS {
        return Err(VirtualBusError::TooManyFunctions {
            count: functions.len(),
        });
    }
    let mut pending = Vec::new();
    for (n, &(real, bars)) in functions.iter().enumerate() {
        if functions[..n].iter().any(|&(other, _)| other == real) {
            return Err(VirtualBusError::DuplicateFunction(real));
        }
        if let Some(&(first, _)) = functions.first().filter(|(f, _)| f.segment != real.segment) {
            return Err(VirtualBusError::MixedSegments { first, other: real });
        }
        let mut used = [false; SLOTS];
        for bar in bars {
            check_bar(real, bar, &mut used)?;
            if bar.kind != BarKind::Io {
                pending.push(Pending {
                    function: n,
                    bar: *bar,
                });
            }
        }
    }
    pending.sort_by_key(|p| Reverse(p.bar.size));

    let mut registers = alloc::vec![[VirtualBar::UNIMPLEMENTED; SLOTS]; functions.len()];
    let mut mappings = Vec::with_capacity(pending.len());
    let mut cursor = gpa;
    for Pending { function, bar } in pending {
        let real = functions[function].0;
        let (index, size) = (bar.index, bar.size);
        let place = cursor
            .checked_next_multiple_of(size)
            .filter(|start| start.checked_add(size).is_some_and(|end| end <= window_end))
            .ok_or(VirtualBusError::WindowTooSmall {
                function: real,
                index,
            })?;
        if bar.kind == BarKind::Mem32 && place + size > FOUR_GIB {
            return Err(VirtualBusError::Bar32OutOfReach {
                function: real,
                index,
            });
        }
        cursor = place + size;
        let flags = if bar.prefetchable { PREFETCHABLE } else { 0 };
        let slots = &mut registers[function];
        let slot = usize::from(index);
        if bar.kind == BarKind::Mem64 {
            slots[slot] = VirtualBar::lower(place, size, flags | TYPE_64);
            slots[slot + 1] = VirtualBar::upper(place, size);
        } else {
            slots[slot] = VirtualBar::lower(place, size, flags);
        }
        mappings.push(BarMapping {
            function: real,
            index,
            gpa: place,
            host_phys: bar.base,
            size,
        });
    }
    mappings.sort_by_key(|m| {
        let n = functions.iter().position(|&(f, _)| f == m.function);
        (n, m.index)
    });
    Ok((registers, mappings))
}

/// Rejects BARs enumeration cannot have produced, and memory BARs nested paging cannot map
/// without exposing a neighbour; marks the slots `bar` occupies.
fn check_bar(function: Sbdf, bar: &Bar, used: &mut [bool; SLOTS]) -> Result<(), VirtualBusError> {
    let index = bar.index;
    let bad = VirtualBusError::BadBar { function, index };
    let width = if bar.kind == BarKind::Mem64 { 2 } else { 1 };
    let slots = used
        .get_mut(usize::from(index)..usize::from(index) + width)
        .ok_or(bad)?;
    if slots.iter().any(|&u| u) || !bar.size.is_power_of_two() {
        return Err(bad);
    }
    slots.fill(true);
    if bar.kind == BarKind::Io {
        return Ok(());
    }
    if bar.base.checked_add(bar.size).is_none() {
        return Err(bad);
    }
    if bar.base == 0 {
        return Err(VirtualBusError::BarNotProgrammed { function, index });
    }
    if bar.size < PAGE || !bar.base.is_multiple_of(PAGE) {
        return Err(VirtualBusError::BarNotPageAligned { function, index });
    }
    Ok(())
}
