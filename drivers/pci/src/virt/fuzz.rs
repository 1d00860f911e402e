//! Random guest access sequences against the port interface: whatever the guest sends, the
//! bus does not panic, writes only the Command register of functions it holds, never sets a
//! bit Lazaret has withheld, and never changes a real BAR or an unassigned function.
use alloc::vec::Vec;
use core::cell::RefCell;

use lazaret_types::Sbdf;
use proptest::prelude::*;

use super::fixture::{assigned, bus_for, config_address, machine, protected, GuestView};
use crate::fake::FakeConfigSpace;
use crate::{enumerate, BarKind, ConfigSpace};

/// Every write that reaches the machine, wherever it goes (the fake itself records only
/// writes to functions that exist), with the Command register as it was before.
struct Recorder<'a> {
    machine: &'a FakeConfigSpace,
    writes: RefCell<Vec<(Sbdf, u16, u32, u32)>>,
}

impl ConfigSpace for Recorder<'_> {
    fn read32(&self, addr: Sbdf, offset: u16) -> u32 {
        self.machine.read32(addr, offset)
    }

    fn write32(&self, addr: Sbdf, offset: u16, value: u32) {
        let before = self.machine.peek(addr, 0x04).unwrap_or(0);
        self.writes.borrow_mut().push((addr, offset, value, before));
        self.machine.write32(addr, offset, value);
    }
}

#[derive(Clone, Debug)]
enum Op {
    Address(u32),
    Read(u16, u8),
    Write(u16, u8, u32),
    /// Lazaret changes its mind: function, bus master (else memory space), allowed.
    Allow(usize, bool, bool),
}

/// Registers a guest would aim at: Command, the BARs and ROM, edu's MSI capability, anything.
fn register() -> impl Strategy<Value = u8> {
    prop_oneof![
        2 => Just(0x04u8),
        2 => (0u8..9).prop_map(|n| 0x10 + 4 * n),
        1 => (0u8..4).prop_map(|n| 0x40 + 4 * n),
        1 => any::<u8>(),
    ]
}

/// Mostly the three virtual devices and their neighbours, sometimes anything at all.
fn address() -> impl Strategy<Value = u32> {
    let bus = prop_oneof![6 => Just(0u8), 1 => Just(1u8)];
    let device = prop_oneof![6 => 0u8..3, 1 => 3u8..5, 1 => Just(31u8)];
    let function = prop_oneof![6 => Just(0u8), 1 => 1u8..8];
    prop_oneof![
        6 => (bus, device, function, register())
            .prop_map(|(b, d, f, o)| config_address(b, d, f, o)),
        1 => any::<u32>(),
    ]
}

fn value() -> impl Strategy<Value = u32> {
    prop_oneof![Just(u32::MAX), 0u32..0x800, any::<u32>()]
}

fn op() -> impl Strategy<Value = Op> {
    let port = 0xcf6u16..0xd02;
    let width = prop_oneof![4 => Just(1u8), 4 => Just(2u8), 4 => Just(4u8), 1 => 0u8..9];
    prop_oneof![
        3 => address().prop_map(Op::Address),
        3 => (port.clone(), width.clone()).prop_map(|(p, w)| Op::Read(p, w)),
        4 => (port, width, value()).prop_map(|(p, w, v)| Op::Write(p, w, v)),
        1 => (0usize..3, any::<bool>(), any::<bool>()).prop_map(|(n, b, a)| Op::Allow(n, b, a)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn no_guest_access_sequence_escapes(ops in prop::collection::vec(op(), 0..300)) {
        let cfg = machine();
        let mut bus = bus_for(&cfg);
        let before = protected(&cfg);
        let recorder = Recorder { machine: &cfg, writes: RefCell::new(Vec::new()) };
        let functions = assigned();
        let mut allowed = [(true, true); 3];
        for op in ops {
            let seen = recorder.writes.borrow().len();
            match op {
                Op::Address(a) => bus.port_write(&recorder, 0xcf8, 4, a),
                Op::Read(port, width) => {
                    let v = bus.port_read(&recorder, port, width);
                    if width == 1 || width == 2 {
                        prop_assert!(v >> (8 * width) == 0, "{v:#x} wider than {width}");
                    }
                }
                Op::Write(port, width, v) => bus.port_write(&recorder, port, width, v),
                Op::Allow(n, bus_master, allow) => {
                    let f = functions[n];
                    if bus_master {
                        bus.set_bus_master_allowed(f, allow).unwrap();
                        allowed[n].0 = allow;
                    } else {
                        bus.set_memory_space_allowed(f, allow).unwrap();
                        allowed[n].1 = allow;
                    }
                }
            }
            for &(at, offset, value, before) in &recorder.writes.borrow()[seen..] {
                let n = functions.iter().position(|&f| f == at);
                prop_assert!(n.is_some(), "write to {at} it does not own");
                let (bus_master, memory) = allowed[n.unwrap_or(0)];
                prop_assert_eq!(offset, 0x04, "only Command is written");
                prop_assert_eq!(value >> 16, 0, "Status (RW1C) written as zero");
                prop_assert!(bus_master || value & 0b100 == 0, "bus master withheld");
                prop_assert!(memory || value & 0b010 == 0, "memory space withheld");
                prop_assert!(value & 1 == 0 || before & 1 == 1, "I/O space set by the guest");
            }
        }
        prop_assert_eq!(before, protected(&cfg));

        // Whatever came before, an OS scan still finds exactly its devices and their sizes.
        let guest = GuestView { bus: RefCell::new(bus), cfg: &cfg };
        let found = enumerate(&guest, 0, &[0]);
        let sizes: Vec<Vec<u64>> = found.functions.iter()
            .map(|f| f.bars.iter().map(|b| b.size).collect())
            .collect();
        prop_assert_eq!(sizes, vec![vec![1 << 20], vec![8 << 20, 16 << 10], vec![16 << 10]]);
        prop_assert!(found.functions.iter().all(|f| f.bars.iter().all(|b| b.kind != BarKind::Io)));
    }
}
