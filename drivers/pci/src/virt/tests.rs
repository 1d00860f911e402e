//! The virtual bus seen the way a guest OS sees it: through ports 0xCF8/0xCFC.
use alloc::vec::Vec;

use lazaret_types::{Bdf, Sbdf};

use super::fixture::{
    assigned, at, bus_for, config_address, machine, protected, real_functions, view, GuestView, EDU,
};
use super::{VirtualBus, VirtualBusError};
use crate::fake::{FakeConfigSpace, FakeFunction};
use crate::{enumerate, BarKind, HeaderKind};

#[test]
fn an_os_scan_finds_exactly_the_assigned_functions_with_their_real_bar_sizes() {
    let cfg = machine();
    let bars_before = protected(&cfg);
    let reals = real_functions(&cfg);
    let guest = view(&cfg);
    let host_writes = cfg.writes().len();
    let found = enumerate(&guest, 0, &[0]);
    assert!(found.issues.is_empty(), "{:?}", found.issues);
    let where_found: Vec<_> = found.functions.iter().map(|f| f.sbdf).collect();
    assert_eq!(where_found, vec![at(0, 0, 0), at(0, 1, 0), at(0, 2, 0)]);

    let mappings = guest.bus.borrow().mappings().to_vec();
    for (seen, real) in found.functions.iter().zip(&reals) {
        assert_eq!(
            (seen.vendor_id, seen.device_id),
            (real.vendor_id, real.device_id)
        );
        assert_eq!(seen.class, real.class);
        assert_eq!(seen.header, HeaderKind::Endpoint);
        assert_eq!(
            seen.capabilities, real.capabilities,
            "capability list passed through"
        );
        let memory: Vec<_> = real.bars.iter().filter(|b| b.kind != BarKind::Io).collect();
        assert_eq!(seen.bars.len(), memory.len(), "I/O BARs are not offered");
        for (v, r) in seen.bars.iter().zip(memory) {
            assert_eq!(
                (v.index, v.kind, v.prefetchable, v.size),
                (r.index, r.kind, r.prefetchable, r.size)
            );
            let mapping = mappings
                .iter()
                .find(|m| m.function == real.sbdf && m.index == r.index);
            assert_eq!(
                mapping.map(|m| (m.gpa, m.host_phys)),
                Some((v.base, r.base))
            );
        }
    }
    assert_eq!(
        bars_before,
        protected(&cfg),
        "no real BAR, no unassigned function written"
    );
    let guest_writes = &cfg.writes()[host_writes..];
    assert!(
        !guest_writes.is_empty(),
        "the scan paused decoding around sizing"
    );
    for w in guest_writes {
        assert!(assigned().contains(&w.at) && w.offset == 0x04, "{w:?}");
    }
}

fn select(guest: &GuestView<'_, FakeConfigSpace>, device: u8, offset: u8) {
    guest.write(0xcf8, 4, config_address(0, device, 0, offset));
}

fn guest_read(guest: &GuestView<'_, FakeConfigSpace>, device: u8, offset: u8) -> u32 {
    select(guest, device, offset);
    guest.read(0xcfc, 4)
}

fn guest_write(guest: &GuestView<'_, FakeConfigSpace>, device: u8, offset: u8, value: u32) {
    select(guest, device, offset);
    guest.write(0xcfc, 4, value);
}

#[test]
fn bar_sizing_answers_with_the_real_size_and_a_guest_cannot_move_a_bar() {
    let cfg = machine();
    let guest = view(&cfg);
    let bars_before = protected(&cfg);
    let gpa = |f: Sbdf, i: u8| {
        let bus = guest.bus.borrow();
        bus.mappings()
            .iter()
            .find(|m| m.function == f && m.index == i)
            .unwrap()
            .gpa
    };
    // Virtual 00:00.0: edu's 1 MiB 32-bit BAR0.
    let edu = gpa(at(0, 2, 0), 0);
    assert_eq!(guest_read(&guest, 0, 0x10), edu as u32);
    guest_write(&guest, 0, 0x10, u32::MAX);
    assert_eq!(guest_read(&guest, 0, 0x10), 0xfff0_0000);
    guest_write(&guest, 0, 0x10, edu as u32);
    assert_eq!(guest_read(&guest, 0, 0x10), edu as u32);
    guest_write(&guest, 0, 0x10, 0xd000_0000);
    assert_eq!(guest_read(&guest, 0, 0x10), edu as u32, "a move is refused");

    // Virtual 00:01.0: 8 MiB 64-bit prefetchable pair in slots 0/1 (type bits 0b1100).
    let wide = gpa(at(0, 4, 1), 0);
    assert_eq!(guest_read(&guest, 1, 0x10), wide as u32 | 0b1100);
    assert_eq!(guest_read(&guest, 1, 0x14), (wide >> 32) as u32);
    guest_write(&guest, 1, 0x10, u32::MAX);
    guest_write(&guest, 1, 0x14, u32::MAX);
    assert_eq!(guest_read(&guest, 1, 0x10), 0xff80_0000 | 0b1100);
    assert_eq!(guest_read(&guest, 1, 0x14), u32::MAX);
    // Two word writes of all ones size as one dword does.
    select(&guest, 1, 0x10);
    guest.write(0xcfc, 4, wide as u32);
    guest.write(0xcfc, 2, 0xffff);
    guest.write(0xcfe, 2, 0xffff);
    assert_eq!(guest.read(0xcfc, 4), 0xff80_0000 | 0b1100);
    // The I/O BAR in slot 2 and the ROM read as unimplemented, sized or not.
    for offset in [0x18, 0x30] {
        assert_eq!(guest_read(&guest, 1, offset), 0);
        guest_write(&guest, 1, offset, u32::MAX);
        assert_eq!(guest_read(&guest, 1, offset), 0, "offset {offset:#x}");
    }
    // Slot 3: 16 KiB 32-bit.
    guest_write(&guest, 1, 0x1c, u32::MAX);
    assert_eq!(guest_read(&guest, 1, 0x1c), 0xffff_c000);
    assert_eq!(
        bars_before,
        protected(&cfg),
        "no real BAR, no unassigned function written"
    );
}

#[test]
fn header_type_reads_single_function_and_other_functions_are_absent() {
    let cfg = machine();
    let guest = view(&cfg);
    assert_eq!(
        cfg.peek(at(0, 4, 1), 0x0c).map(|d| d >> 16 & 0x80),
        Some(0x80)
    );
    assert_eq!(guest_read(&guest, 1, 0x0c) >> 16 & 0xff, 0);
    guest.write(0xcf8, 4, config_address(0, 1, 1, 0));
    assert_eq!(guest.read(0xcfc, 4), u32::MAX, "function 1 is absent");
}

fn command(cfg: &FakeConfigSpace, f: Sbdf) -> u32 {
    cfg.peek(f, 0x04).unwrap() & 0xffff
}

#[test]
fn command_writes_are_filtered_and_lazarets_bus_master_decision_wins() {
    let mut cfg = machine();
    // Status: Received Master Abort pending (RW1C): no guest write may clear it.
    cfg.insert(
        at(0, 2, 0),
        FakeFunction::endpoint(EDU.0, EDU.1, 0x00_ff_00)
            .bar_mem32(0, 0xfea0_0000, 1 << 20, false)
            .raw(0x04, 0x2000_0000),
    );
    let guest = view(&cfg);
    let host_writes = cfg.writes().len();
    let edu = at(0, 2, 0);
    guest_write(&guest, 0, 0x04, 0xffff_0407);
    assert_eq!(
        command(&cfg, edu),
        0x0406,
        "memory, bus master, INTx disable; never I/O"
    );
    assert_eq!(cfg.peek(edu, 0x04).unwrap() >> 16, 0x2000, "status kept");

    guest
        .bus
        .borrow_mut()
        .set_bus_master_allowed(edu, false)
        .unwrap();
    guest_write(&guest, 0, 0x04, 0x0006);
    assert_eq!(command(&cfg, edu), 0x0002, "bus master forced off");
    crate::set_bus_master(&cfg, edu, false).unwrap();
    guest_write(&guest, 0, 0x04, 0x0406);
    assert_eq!(command(&cfg, edu), 0x0402, "stays off");
    guest
        .bus
        .borrow_mut()
        .set_memory_space_allowed(edu, false)
        .unwrap();
    guest_write(&guest, 0, 0x04, 0x0006);
    assert_eq!(command(&cfg, edu), 0x0000);
    guest
        .bus
        .borrow_mut()
        .set_bus_master_allowed(edu, true)
        .unwrap();
    guest_write(&guest, 0, 0x04, 0x0007);
    assert_eq!(
        command(&cfg, edu),
        0x0004,
        "bus master back once Lazaret allows it"
    );

    // I/O Space that firmware left on stays on (it is not the guest's), whatever it writes.
    let nic = at(0, 4, 1);
    assert_eq!(command(&cfg, nic), 0x0001);
    guest_write(&guest, 1, 0x04, 0x0000);
    assert_eq!(command(&cfg, nic), 0x0001);

    assert_eq!(
        guest
            .bus
            .borrow_mut()
            .set_bus_master_allowed(at(0, 3, 0), false),
        Err(VirtualBusError::NotAssigned(at(0, 3, 0)))
    );
    let writes = &cfg.writes()[host_writes..];
    assert!(
        writes
            .iter()
            .all(|w| w.offset == 0x04 && w.value >> 16 == 0),
        "{writes:?}"
    );
}

#[test]
fn narrow_accesses_move_the_right_bytes() {
    let cfg = machine();
    let guest = view(&cfg);
    select(&guest, 0, 0x00);
    assert_eq!(guest.read(0xcfc, 2), 0x1234);
    assert_eq!(guest.read(0xcfe, 2), 0x11e8);
    assert_eq!(guest.read(0xcfd, 1), 0x12);
    assert_eq!(guest.read(0xcff, 1), 0x11);
    assert_eq!(guest.read(0xcfd, 2), 0xe812, "a word inside the dword");
    assert_eq!(
        guest.read(0xcff, 2),
        0xffff,
        "a word that crosses the dword"
    );
    assert_eq!(guest.read(0xcfd, 4), u32::MAX);
    assert_eq!(guest.read(0xcfc, 3), u32::MAX, "no 3-byte access");
    // Offsets inside the dword come from the port, not from CONFIG_ADDRESS bits 1:0.
    guest.write(0xcf8, 4, config_address(0, 0, 0, 0x08) | 0b11);
    assert_eq!(guest.read(0xcf8, 4), config_address(0, 0, 0, 0x08));
    assert_eq!(guest.read(0xcff, 1), 0x00, "base class");
    assert_eq!(guest.read(0xcfe, 1), 0xff, "sub-class");

    // Command's upper byte holds INTx disable; Status bytes are dropped.
    let edu = at(0, 2, 0);
    select(&guest, 0, 0x04);
    guest.write(0xcfd, 1, 0x04);
    assert_eq!(command(&cfg, edu), 0x0402);
    guest.write(0xcfc, 1, 0x06);
    assert_eq!(command(&cfg, edu), 0x0406);
    let (dropped, writes) = (guest.bus.borrow().dropped_writes(), cfg.writes().len());
    guest.write(0xcfe, 2, 0xffff);
    assert_eq!(guest.bus.borrow().dropped_writes(), dropped + 1);
    assert_eq!(cfg.writes().len(), writes);
}

#[test]
fn what_is_no_configuration_access_reads_all_ones_and_writes_nothing() {
    let cfg = machine();
    let guest = view(&cfg);
    let host_writes = cfg.writes().len();
    let cases = [
        config_address(0, 0, 0, 0) & !(1 << 31),
        config_address(0, 3, 0, 0),
        config_address(0, 31, 0, 0),
        config_address(1, 0, 0, 0),
        config_address(0, 0, 2, 0),
        config_address(0, 0, 0, 0) | 1 << 24,
    ];
    for (n, address) in cases.into_iter().enumerate() {
        guest.write(0xcf8, 4, address);
        assert_eq!(guest.read(0xcfc, 4), u32::MAX, "case {n}");
        assert_eq!(guest.read(0xcfe, 2), 0xffff, "case {n}");
        assert_eq!(guest.read(0xcff, 1), 0xff, "case {n}");
        guest.write(0xcfc, 4, 0x0000_0006);
        assert_eq!(guest.bus.borrow().dropped_writes(), n as u64 + 1);
    }
    // Narrow accesses at 0xCF8–0xCFB are chipset registers (0xCF9: reset), not CONFIG_ADDRESS.
    guest.write(0xcf8, 4, config_address(0, 0, 0, 0));
    guest.write(0xcf8, 1, 0);
    guest.write(0xcf9, 1, 0x06);
    guest.write(0xcfa, 2, 0);
    assert_eq!(guest.read(0xcf8, 4), config_address(0, 0, 0, 0));
    assert_eq!(guest.read(0xcf9, 1), 0xff);
    assert_eq!(guest.read(0xcf8, 2), 0xffff);
    assert_eq!(guest.read(0xcfc, 2), 0x1234, "still selected");
    assert_eq!(guest.bus.borrow().dropped_writes(), cases.len() as u64 + 3);
    assert_eq!(cfg.writes().len(), host_writes);
    assert!(VirtualBus::handles_port(0xcf8) && VirtualBus::handles_port(0xcff));
    assert!(!VirtualBus::handles_port(0xcf7) && !VirtualBus::handles_port(0xd00));
}

#[test]
fn virtual_and_real_addresses_translate_both_ways() {
    let cfg = machine();
    let bus = bus_for(&cfg);
    let v = |d| Bdf::new(0, d, 0).unwrap();
    assert_eq!(bus.virtual_bdf(at(1, 0, 0)), Some(v(2)));
    assert_eq!(bus.virtual_bdf(at(0, 3, 0)), None);
    assert_eq!(bus.real_function(v(1)), Some(at(0, 4, 1)));
    assert_eq!(bus.real_function(v(3)), None);
    assert_eq!(bus.real_function(Bdf::new(0, 0, 1).unwrap()), None);
}

#[test]
fn a_bus_answers_from_the_segment_of_its_functions() {
    let on = |segment| Sbdf::new(segment, Bdf::new(0, 3, 0).expect("valid"));
    let window = (0xC000_0000, 0x100_0000);
    let bus = VirtualBus::new(&[(on(2), &[][..])], window).expect("one function");
    assert_eq!(bus.segment(), 2);
    assert_eq!(
        VirtualBus::new(&[(on(0), &[][..])], window)
            .expect("one function")
            .segment(),
        0
    );
}
