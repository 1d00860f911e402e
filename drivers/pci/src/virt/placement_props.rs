//! Property: for any set of memory BARs, the bus places every one naturally aligned, inside
//! the window, without overlap and 32-bit ones below 4 GiB, and it refuses only when the
//! sizes do not add up to the window (largest first packs power-of-two sizes without holes
//! from a base aligned to the largest).
use alloc::vec::Vec;

use lazaret_types::Sbdf;
use proptest::prelude::*;

use super::fixture::{at, WINDOW};
use super::layout_tests::check_placement;
use super::{VirtualBus, VirtualBusError};
use crate::{Bar, BarKind};

/// Up to six functions, each with BARs given as (64-bit, log2 size) in consecutive slots.
fn machine() -> impl Strategy<Value = Vec<Vec<(bool, u32)>>> {
    let bar = (any::<bool>(), 12u32..29);
    prop::collection::vec(prop::collection::vec(bar, 0..4), 1..7)
}

fn bars(spec: &[(bool, u32)], device: u8) -> Vec<Bar> {
    let mut slot = 0;
    spec.iter()
        .map(|&(wide, log2)| {
            let size = 1u64 << log2;
            let bar = Bar {
                index: slot,
                kind: if wide { BarKind::Mem64 } else { BarKind::Mem32 },
                prefetchable: wide,
                // Real addresses: distinct, aligned, 64-bit ones above 4 GiB.
                base: (u64::from(device) << 36 | u64::from(slot) << 32)
                    + if wide { 1 << 40 } else { 0 }
                    + size,
                size,
            };
            slot += if wide { 2 } else { 1 };
            bar
        })
        .collect()
}

proptest! {
    #[test]
    fn every_bar_fits_aligned_or_the_window_is_really_too_small(
        spec in machine(),
        offset in prop_oneof![Just(0u64), 1u64..0x10000],
    ) {
        // Aligned to 256 MiB, or only to a page (then alignment may waste room).
        let window = (WINDOW.0 + offset * 4096, WINDOW.1);
        let per_function: Vec<Vec<Bar>> =
            spec.iter().enumerate().map(|(d, s)| bars(s, d as u8)).collect();
        let list: Vec<(Sbdf, &[Bar])> = per_function
            .iter()
            .enumerate()
            .map(|(d, b)| (at(3, d as u8, 0), &b[..]))
            .collect();
        let total: u64 = per_function.iter().flatten().map(|b| b.size).sum();
        match VirtualBus::new(&list, window) {
            Ok(bus) => {
                prop_assert!(total <= window.1);
                let mappings = bus.mappings();
                prop_assert_eq!(mappings.len(), per_function.iter().flatten().count());
                check_placement(mappings, window);
                for (f, b) in list.iter().flat_map(|(f, bars)| bars.iter().map(move |b| (f, b))) {
                    let m = mappings.iter().find(|m| m.function == *f && m.index == b.index);
                    prop_assert_eq!(m.map(|m| (m.host_phys, m.size)), Some((b.base, b.size)));
                    if b.kind == BarKind::Mem32 {
                        prop_assert!(m.is_some_and(|m| m.gpa + m.size <= 1 << 32));
                    }
                }
            }
            Err(VirtualBusError::WindowTooSmall { .. }) => {
                prop_assert!(offset != 0 || total > window.1)
            }
            Err(other) => prop_assert!(false, "{other}"),
        }
    }
}
