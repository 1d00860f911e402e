//! The virtual bus seen the way a guest OS sees it: through ports 0xCF8/0xCFC, over a fake
//! machine holding assigned and unassigned functions.
use alloc::vec::Vec;
use core::cell::RefCell;

use lazaret_types::{Bdf, Sbdf};

use super::{BarMapping, VirtualBus, VirtualBusError};
use crate::fake::{FakeConfigSpace, FakeFunction};
use crate::{enumerate, Bar, BarKind, ConfigSpace, HeaderKind, PciFunction};

pub const WINDOW: (u64, u64) = (0xc000_0000, 0x1000_0000);
const EDU: (u16, u16) = (0x1234, 0x11e8);

pub fn at(bus: u8, device: u8, function: u8) -> Sbdf {
    Sbdf::new(0, Bdf::new(bus, device, function).unwrap())
}

/// CONFIG_ADDRESS for `bdf`/`offset`, encoded here from §3.2.2.3.2, not by the code under test.
pub fn config_address(bus: u8, device: u8, function: u8, offset: u8) -> u32 {
    (1 << 31)
        | (u32::from(bus) << 16)
        | (u32::from(device) << 11)
        | (u32::from(function) << 8)
        | u32::from(offset & 0xfc)
}

/// Real 00:02.0 and 00:03.0 are edus (the first assigned), 00:04.0/.1 one multi-function
/// device (.1 assigned: 64-bit prefetchable BAR, an I/O BAR, a ROM), 00:1c.0 a bridge to bus 1
/// where 01:00.0 sits (assigned).
pub fn machine() -> FakeConfigSpace {
    let mut cfg = FakeConfigSpace::new();
    cfg.insert(
        at(0, 0, 0),
        FakeFunction::endpoint(0x8086, 0x29c0, 0x06_00_00),
    );
    let edu = |base| {
        FakeFunction::endpoint(EDU.0, EDU.1, 0x00_ff_00)
            .command(0x0002)
            .bar_mem32(0, base, 1 << 20, false)
            .capability(crate::cap_id::MSI, 0x0080, &[0, 0, 0])
    };
    cfg.insert(at(0, 2, 0), edu(0xfea0_0000));
    cfg.insert(at(0, 3, 0), edu(0xfeb0_0000));
    cfg.insert(
        at(0, 4, 0),
        FakeFunction::endpoint(0x8086, 0x10d3, 0x02_00_00)
            .multi_function()
            .bar_mem32(0, 0xfec0_0000, 128 << 10, false),
    );
    cfg.insert(
        at(0, 4, 1),
        FakeFunction::endpoint(0x8086, 0x10d4, 0x02_00_00)
            .multi_function()
            .command(0x0001)
            .bar_mem64(0, 0x8_0000_0000, 8 << 20, true)
            .bar_io(2, 0xc000, 32)
            .bar_mem32(3, 0xfed0_0000, 16 << 10, false)
            .raw(0x30, 0xfe00_0001)
            .pcie(0, true),
    );
    cfg.insert(
        at(0, 0x1c, 0),
        FakeFunction::bridge(0x8086, 0x2948, 0, 1, 1),
    );
    cfg.insert(
        at(1, 0, 0),
        FakeFunction::endpoint(0x1b36, 0x0010, 0x01_08_02).bar_mem64(
            0,
            0xfe80_0000,
            16 << 10,
            false,
        ),
    );
    cfg
}

pub fn assigned() -> [Sbdf; 3] {
    [at(0, 2, 0), at(0, 4, 1), at(1, 0, 0)]
}

/// The real functions as the kernel's enumeration found them.
pub fn real_functions(cfg: &FakeConfigSpace) -> Vec<PciFunction> {
    let found = enumerate(cfg, 0, &[0]);
    assigned()
        .iter()
        .map(|&s| found.get(s).cloned().unwrap())
        .collect()
}

pub fn bus_for(cfg: &FakeConfigSpace) -> VirtualBus {
    let functions = real_functions(cfg);
    let list: Vec<(Sbdf, &[Bar])> = functions.iter().map(|f| (f.sbdf, &f.bars[..])).collect();
    VirtualBus::new(&list, WINDOW).unwrap()
}

/// A guest's view: configuration space through the virtual bus's ports, so the crate's own
/// enumerator can scan it the way an OS would.
pub struct GuestView<'a, C: ConfigSpace> {
    pub bus: RefCell<VirtualBus>,
    pub cfg: &'a C,
}

impl<C: ConfigSpace> GuestView<'_, C> {
    fn select(&self, addr: Sbdf, offset: u16) {
        let b = addr.bdf;
        let address = config_address(b.bus(), b.device(), b.function(), offset as u8);
        self.bus
            .borrow_mut()
            .port_write(self.cfg, 0xcf8, 4, address);
    }

    pub fn read(&self, port: u16, width: u8) -> u32 {
        self.bus.borrow().port_read(self.cfg, port, width)
    }

    pub fn write(&self, port: u16, width: u8, value: u32) {
        self.bus
            .borrow_mut()
            .port_write(self.cfg, port, width, value)
    }
}

impl<C: ConfigSpace> ConfigSpace for GuestView<'_, C> {
    fn read32(&self, addr: Sbdf, offset: u16) -> u32 {
        if addr.segment != 0 || offset > 0xff {
            return u32::MAX;
        }
        self.select(addr, offset);
        self.read(0xcfc, 4)
    }

    fn write32(&self, addr: Sbdf, offset: u16, value: u32) {
        if addr.segment == 0 && offset <= 0xff {
            self.select(addr, offset);
            self.write(0xcfc, 4, value);
        }
    }
}

fn view(cfg: &FakeConfigSpace) -> GuestView<'_, FakeConfigSpace> {
    GuestView {
        bus: RefCell::new(bus_for(cfg)),
        cfg,
    }
}

/// BARs and ROM of every real function, to check that no guest write reached them.
pub fn real_bars(cfg: &FakeConfigSpace) -> Vec<Option<u32>> {
    let everyone = [
        at(0, 0, 0),
        at(0, 2, 0),
        at(0, 3, 0),
        at(0, 4, 0),
        at(0, 4, 1),
        at(0, 0x1c, 0),
        at(1, 0, 0),
    ];
    everyone
        .iter()
        .flat_map(|&f| (0x10..=0x30).step_by(4).map(move |o| (f, o)))
        .map(|(f, o)| cfg.peek(f, o))
        .collect()
}

#[test]
fn an_os_scan_finds_exactly_the_assigned_functions_with_their_real_bar_sizes() {
    let cfg = machine();
    let bars_before = real_bars(&cfg);
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
    assert_eq!(bars_before, real_bars(&cfg), "no real BAR was written");
    let guest_writes = &cfg.writes()[host_writes..];
    assert!(
        !guest_writes.is_empty(),
        "the scan paused decoding around sizing"
    );
    for w in guest_writes {
        assert!(assigned().contains(&w.at) && w.offset == 0x04, "{w:?}");
    }
}

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
    check_placement(bus.mappings());
}

/// Natural alignment, inside the window, no two overlapping.
pub fn check_placement(mappings: &[BarMapping]) {
    let (base, size) = WINDOW;
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
    let bars_before = real_bars(&cfg);
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
    assert_eq!(bars_before, real_bars(&cfg), "no real BAR was written");
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
