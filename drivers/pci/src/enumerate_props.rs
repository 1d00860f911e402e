//! Property test: for any tree of bridges and endpoints that firmware numbered depth first,
//! enumeration finds exactly the functions placed, in depth-first order, with their parents
//! and BAR sizes, and leaves every header register as it found it.
use alloc::vec::Vec;

use lazaret_types::{Bdf, Sbdf};
use proptest::prelude::*;

use crate::fake::{FakeConfigSpace, FakeFunction};
use crate::{enumerate, BarKind};

#[derive(Clone, Debug)]
enum Node {
    /// BARs as (kind, log2 size).
    Endpoint(Vec<(BarKind, u32)>),
    /// Devices on the secondary bus: device number and its functions (1–3 of them).
    Bridge(Vec<(u8, Vec<Node>)>),
}

/// Function numbers used for a device's functions: sparse, to exercise the gaps.
const FUNCTION_NUMBERS: [u8; 3] = [0, 2, 5];

fn bar_strategy() -> impl Strategy<Value = (BarKind, u32)> {
    prop_oneof![
        (Just(BarKind::Mem32), 4u32..17),
        (Just(BarKind::Mem64), 4u32..36),
        (Just(BarKind::Io), 2u32..8),
    ]
}

fn node_strategy() -> impl Strategy<Value = Node> {
    let leaf = prop::collection::vec(bar_strategy(), 0..4).prop_map(Node::Endpoint);
    leaf.prop_recursive(3, 16, 3, |inner| {
        prop::collection::btree_map(0u8..32, prop::collection::vec(inner, 1..=3), 0..4)
            .prop_map(|devices| Node::Bridge(devices.into_iter().collect()))
    })
}

/// What enumeration must report for one function.
#[derive(Debug, PartialEq)]
struct Expected {
    sbdf: Sbdf,
    parent: Option<Sbdf>,
    bars: Vec<(u8, BarKind, u64, u64)>,
}

struct Builder {
    cfg: FakeConfigSpace,
    expected: Vec<Expected>,
    next_bus: u8,
    /// Allocation cursors: 32-bit memory below 4 GiB (even 256 full buses of 64 KiB BARs
    /// fit), 64-bit memory above, I/O.
    next_mem32: u64,
    next_mem64: u64,
    next_io: u64,
    command: u16,
}

impl Builder {
    /// Places `devices` on `bus` in scan order, numbering buses depth first as firmware does.
    fn place_bus(&mut self, bus: u8, parent: Option<Sbdf>, devices: &[(u8, Vec<Node>)]) {
        for (device, functions) in devices {
            for (node, function) in functions.iter().zip(FUNCTION_NUMBERS) {
                let sbdf = Sbdf::new(0, Bdf::new(bus, *device, function).unwrap());
                let multi = functions.len() > 1 && function == 0;
                self.place(sbdf, parent, node, multi);
            }
        }
    }

    fn place(&mut self, sbdf: Sbdf, parent: Option<Sbdf>, node: &Node, multi: bool) {
        self.command = self.command.wrapping_add(3) & 0x7;
        match node {
            Node::Endpoint(bars) => {
                let mut f = FakeFunction::endpoint(0x1234, 0x0001, 0x00ff00).command(self.command);
                let mut expected_bars = Vec::new();
                let mut slot = 0u8;
                for &(kind, log2) in bars {
                    let size = 1u64 << log2;
                    let cursor = match kind {
                        BarKind::Mem32 => &mut self.next_mem32,
                        BarKind::Mem64 => &mut self.next_mem64,
                        BarKind::Io => &mut self.next_io,
                    };
                    let base = cursor.next_multiple_of(size);
                    *cursor = base + size;
                    f = match kind {
                        BarKind::Mem32 => f.bar_mem32(slot, base as u32, size as u32, false),
                        BarKind::Mem64 => f.bar_mem64(slot, base, size, true),
                        BarKind::Io => f.bar_io(slot, base as u32, size as u32),
                    };
                    expected_bars.push((slot, kind, base, size));
                    slot += if kind == BarKind::Mem64 { 2 } else { 1 };
                }
                if multi {
                    f = f.multi_function();
                }
                self.cfg.insert(sbdf, f);
                self.expected.push(Expected {
                    sbdf,
                    parent,
                    bars: expected_bars,
                });
            }
            // Past bus 255 the builder places a plain endpoint instead (rare at these sizes).
            Node::Bridge(_) if self.next_bus == u8::MAX => {
                self.place(sbdf, parent, &Node::Endpoint(Vec::new()), multi)
            }
            Node::Bridge(devices) => {
                let secondary = self.next_bus;
                self.next_bus += 1;
                self.expected.push(Expected {
                    sbdf,
                    parent,
                    bars: Vec::new(),
                });
                self.place_bus(secondary, Some(sbdf), devices);
                let subordinate = self.next_bus - 1;
                let mut f =
                    FakeFunction::bridge(0x1b36, 0x000c, sbdf.bdf.bus(), secondary, subordinate)
                        .command(self.command);
                if multi {
                    f = f.multi_function();
                }
                self.cfg.insert(sbdf, f);
            }
        }
    }
}

fn header_snapshot(cfg: &FakeConfigSpace, functions: &[Expected]) -> Vec<Option<u32>> {
    functions
        .iter()
        .flat_map(|e| (0..16).map(move |i| cfg.peek(e.sbdf, i * 4)))
        .collect()
}

proptest! {
    #[test]
    fn enumeration_finds_exactly_the_tree_that_was_built(
        root in prop::collection::btree_map(0u8..32, prop::collection::vec(node_strategy(), 1..=3), 1..4),
        seed_command in 0u16..8,
    ) {
        let devices: Vec<_> = root.into_iter().collect();
        let mut b = Builder {
            cfg: FakeConfigSpace::new(),
            expected: Vec::new(),
            next_bus: 1,
            next_mem32: 0x8000_0000,
            next_mem64: 0x10_0000_0000,
            next_io: 0x1000,
            command: seed_command,
        };
        b.place_bus(0, None, &devices);
        let before = header_snapshot(&b.cfg, &b.expected);

        let found = enumerate(&b.cfg, 0, &[0]);

        prop_assert!(found.issues.is_empty(), "{:?}", found.issues);
        let got: Vec<_> = found
            .functions
            .iter()
            .map(|f| Expected {
                sbdf: f.sbdf,
                parent: f.parent_bridge,
                bars: f.bars.iter().map(|b| (b.index, b.kind, b.base, b.size)).collect(),
            })
            .collect();
        prop_assert_eq!(&got, &b.expected);
        prop_assert_eq!(before, header_snapshot(&b.cfg, &b.expected));
        for write in b.cfg.writes() {
            if write.value == u32::MAX {
                prop_assert_eq!(write.command_before & 0b11, 0, "decoding during sizing");
            }
        }
    }
}
