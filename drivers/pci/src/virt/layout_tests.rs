//! Building a bus: where BARs land in the window, and the inputs it refuses.
use alloc::vec::Vec;

use lazaret_types::Sbdf;

use super::fixture::{at, bus_for, machine, WINDOW};
use super::{BarMapping, VirtualBus, VirtualBusError};
use crate::{Bar, BarKind};

#[test]
fn bars_are_placed_naturally_aligned_disjoint_and_inside_the_window() {
    let cfg = machine();
    let bus = bus_for(&cfg);
    let summary: Vec<_> = bus
        .mappings()
        .iter()
        .map(|m| (m.function, m.index, m.host_phys, m.size))
        .collect();
    assert_eq!(
        summary,
        vec![
            (at(0, 2, 0), 0, 0xfea0_0000, 1 << 20),
            (at(0, 4, 1), 0, 0x8_0000_0000, 8 << 20),
            (at(0, 4, 1), 3, 0xfed0_0000, 16 << 10),
            (at(1, 0, 0), 0, 0xfe80_0000, 16 << 10),
        ]
    );
    check_placement(bus.mappings(), WINDOW);
}

#[test]
fn a_window_base_aligned_only_to_a_page_still_gets_aligned_bars() {
    let bars = [
        mem32(0, 0xfea0_0000, 1 << 20),
        mem64(1, 0x8_0000_0000, 8 << 20),
    ];
    let window = (0xc010_1000, 64 << 20);
    let bus = VirtualBus::new(&[(at(0, 2, 0), &bars)], window).unwrap();
    let placed: Vec<_> = bus.mappings().iter().map(|m| (m.index, m.gpa)).collect();
    assert_eq!(placed, vec![(0, 0xc100_0000), (1, 0xc080_0000)]);
    check_placement(bus.mappings(), window);
}

/// Natural alignment, inside the window, no two overlapping.
pub fn check_placement(mappings: &[BarMapping], (base, size): (u64, u64)) {
    for (i, m) in mappings.iter().enumerate() {
        assert_eq!(m.gpa % m.size, 0, "{m:?} naturally aligned");
        assert!(
            m.gpa >= base && m.gpa + m.size <= base + size,
            "{m:?} in the window"
        );
        for other in &mappings[i + 1..] {
            assert!(
                m.gpa + m.size <= other.gpa || other.gpa + other.size <= m.gpa,
                "{m:?} {other:?}"
            );
        }
    }
}

fn mem32(index: u8, base: u64, size: u64) -> Bar {
    Bar {
        index,
        kind: BarKind::Mem32,
        prefetchable: false,
        base,
        size,
    }
}

fn mem64(index: u8, base: u64, size: u64) -> Bar {
    Bar {
        kind: BarKind::Mem64,
        ..mem32(index, base, size)
    }
}

fn build(functions: &[(Sbdf, &[Bar])], window: (u64, u64)) -> Result<(), VirtualBusError> {
    VirtualBus::new(functions, window).map(|_| ())
}

#[test]
fn construction_errors_are_clean() {
    let f = at(0, 2, 0);
    let one: &[Bar] = &[mem32(0, 0xfea0_0000, 1 << 20)];
    let bad_window = |gpa, size| Err(VirtualBusError::BadWindow { gpa, size });
    assert_eq!(
        build(&[(f, one)], (0xc000_0000, 0)),
        bad_window(0xc000_0000, 0)
    );
    assert_eq!(
        build(&[(f, one)], (0xc000_0800, 1 << 20)),
        bad_window(0xc000_0800, 1 << 20)
    );
    assert_eq!(
        build(&[(f, one)], (0xc000_0000, 0x1800)),
        bad_window(0xc000_0000, 0x1800)
    );
    assert_eq!(
        build(&[(f, one)], (u64::MAX - 0xfff, 0x2000)),
        bad_window(u64::MAX - 0xfff, 0x2000)
    );

    let many: Vec<(Sbdf, &[Bar])> = (0..33).map(|d| (at(2, d % 32, d / 32), &[][..])).collect();
    assert_eq!(
        build(&many, WINDOW),
        Err(VirtualBusError::TooManyFunctions { count: 33 })
    );
    assert_eq!(build(&many[..32], WINDOW), Ok(()));
    assert_eq!(
        build(&[(f, one), (f, &[])], WINDOW),
        Err(VirtualBusError::DuplicateFunction(f))
    );
    let elsewhere = Sbdf::new(1, f.bdf);
    assert_eq!(
        build(&[(f, one), (elsewhere, &[])], WINDOW),
        Err(VirtualBusError::MixedSegments {
            first: f,
            other: elsewhere
        })
    );

    let bar = |bar: Bar| build(&[(f, &[bar])], WINDOW);
    let bad = |index| Err(VirtualBusError::BadBar { function: f, index });
    assert_eq!(bar(mem32(6, 0xfea0_0000, 4096)), bad(6));
    assert_eq!(bar(mem64(5, 0xfea0_0000, 4096)), bad(5));
    assert_eq!(bar(mem32(0, 0xfea0_0000, 0x3000)), bad(0));
    assert_eq!(bar(mem64(0, u64::MAX - 0xfff, 0x2000)), bad(0));
    let overlap: &[Bar] = &[mem64(0, 0xfea0_0000, 4096), mem32(1, 0xfeb0_0000, 4096)];
    assert_eq!(build(&[(f, overlap)], WINDOW), bad(1));
    assert_eq!(
        bar(mem32(2, 0, 4096)),
        Err(VirtualBusError::BarNotProgrammed {
            function: f,
            index: 2
        })
    );
    let unaligned = |index| Err(VirtualBusError::BarNotPageAligned { function: f, index });
    assert_eq!(bar(mem32(1, 0xfea0_0010, 16)), unaligned(1));
    assert_eq!(bar(mem32(1, 0xfea0_0800, 4096)), unaligned(1));
    let io = Bar {
        kind: BarKind::Io,
        ..mem32(1, 0xc010, 16)
    };
    assert_eq!(bar(io), Ok(()), "I/O BARs are skipped, not refused");

    let big: &[Bar] = &[
        mem64(0, 0x10_0000_0000, 128 << 20),
        mem64(2, 0x20_0000_0000, 128 << 20),
    ];
    let g = at(0, 3, 0);
    assert_eq!(build(&[(f, big)], WINDOW), Ok(()));
    assert_eq!(
        build(&[(f, big), (g, one)], WINDOW),
        Err(VirtualBusError::WindowTooSmall {
            function: g,
            index: 0
        })
    );
    let straddling = (0xfff0_0000, 3 << 20);
    let two: &[Bar] = &[
        mem32(0, 0xfea0_0000, 1 << 20),
        mem32(1, 0xfeb0_0000, 1 << 20),
    ];
    assert_eq!(
        build(&[(f, two)], straddling),
        Err(VirtualBusError::Bar32OutOfReach {
            function: f,
            index: 1
        })
    );
    let wide: &[Bar] = &[
        mem32(0, 0xfea0_0000, 1 << 20),
        mem64(1, 0xfeb0_0000, 1 << 20),
    ];
    assert_eq!(
        build(&[(f, wide)], straddling),
        Ok(()),
        "a 64-bit BAR may sit above 4 GiB"
    );
    for e in [
        VirtualBusError::TooManyFunctions { count: 33 },
        VirtualBusError::WindowTooSmall {
            function: g,
            index: 0,
        },
    ] {
        assert!(!alloc::format!("{e}").is_empty());
    }
}
