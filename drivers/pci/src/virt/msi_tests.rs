//! The MSI capability as a guest OS drives it through the ports, and as Lazaret programs the
//! real one. Offsets and bits here come from PCI Local Bus Spec 3.0 §6.8.1, and the list is
//! walked by hand, not by the crate's walker the bus itself uses.
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::cell::RefCell;

use lazaret_types::Sbdf;
use proptest::prelude::*;

use super::fixture::{config_address, GuestView};
use super::{GuestMsi, VirtualBus, VirtualBusError};
use crate::fake::{FakeConfigSpace, FakeFunction};
use crate::{cap_id, ConfigSpace};

/// Real functions: 64-bit MSI (edu-like); PCIe, MSI-X, then 32-bit MSI with masking; MSI-X
/// only; no capabilities. Each real MSI holds values of its own, enabled, with several
/// vectors, so anything the guest sees of them shows.
const WIDE: Sbdf = at_const(2);
const NARROW: Sbdf = at_const(3);
const MSIX_ONLY: Sbdf = at_const(4);
const PLAIN: Sbdf = at_const(5);
const UNASSIGNED: Sbdf = at_const(6);
const WIDE_MSI: u16 = 0x40;
const NARROW_MSI: u16 = 0x5c;
const NARROW_MSIX: u16 = 0x50;

const fn at_const(device: u8) -> Sbdf {
    Sbdf::new(
        0,
        lazaret_types::Bdf::from_requester_id((device as u16) << 3),
    )
}

fn machine() -> FakeConfigSpace {
    let mut cfg = FakeConfigSpace::new();
    let endpoint = || FakeFunction::endpoint(0x1234, 0x11e8, 0x00_ff_00);
    // 64-bit (bit 7), Multiple Message Enable 001, enabled.
    cfg.insert(
        WIDE,
        endpoint().capability(cap_id::MSI, 0x0091, &[0xfee0_1000, 0x1, 0xbeef_0041]),
    );
    // Per-vector masking (bit 8), Multiple Message Capable 011, enabled; Mask, Pending set.
    cfg.insert(
        NARROW,
        endpoint()
            .pcie(0, false)
            .capability(cap_id::MSIX, 0x8003, &[0x2000, 0x3000])
            .capability(
                cap_id::MSI,
                0x0107,
                &[0xfee0_f000, 0xdead_0077, u32::MAX, 1],
            ),
    );
    cfg.insert(
        MSIX_ONLY,
        endpoint().capability(cap_id::MSIX, 0x8000, &[0x2000, 0x3000]),
    );
    cfg.insert(PLAIN, endpoint());
    cfg.insert(
        UNASSIGNED,
        endpoint().capability(cap_id::MSI, 0x0080, &[0, 0, 0]),
    );
    cfg
}

/// A device whose every register takes whatever is written (so a write that reached it would
/// show), logging each write. Command goes to the fake, which models its bits.
struct Device<'a> {
    fake: &'a FakeConfigSpace,
    written: RefCell<BTreeMap<(Sbdf, u16), u32>>,
    log: RefCell<Vec<(Sbdf, u16, u32)>>,
}

impl<'a> Device<'a> {
    fn new(fake: &'a FakeConfigSpace) -> Device<'a> {
        Device {
            fake,
            written: RefCell::new(BTreeMap::new()),
            log: RefCell::new(Vec::new()),
        }
    }

    fn dwords(&self, f: Sbdf, from: u16, count: u16) -> Vec<u32> {
        (0..count).map(|n| self.read32(f, from + 4 * n)).collect()
    }
}

impl ConfigSpace for Device<'_> {
    fn read32(&self, addr: Sbdf, offset: u16) -> u32 {
        let offset = offset & !3;
        match self.written.borrow().get(&(addr, offset)) {
            Some(&v) => v,
            None => self.fake.read32(addr, offset),
        }
    }

    fn write32(&self, addr: Sbdf, offset: u16, value: u32) {
        let offset = offset & !3;
        self.log.borrow_mut().push((addr, offset, value));
        if offset == 0x04 {
            self.fake.write32(addr, offset, value);
        } else if self.fake.peek(addr, 0).is_some() {
            self.written.borrow_mut().insert((addr, offset), value);
        }
    }
}

fn bus() -> VirtualBus {
    let none: &[crate::Bar] = &[];
    VirtualBus::new(
        &[
            (WIDE, none),
            (NARROW, none),
            (MSIX_ONLY, none),
            (PLAIN, none),
        ],
        (0xc000_0000, 0x1000_0000),
    )
    .unwrap()
}

fn guest<'a>(device: &'a Device<'a>) -> GuestView<'a, Device<'a>> {
    GuestView {
        bus: RefCell::new(bus()),
        cfg: device,
    }
}

fn read(g: &GuestView<'_, Device<'_>>, dev: u8, offset: u16, width: u8) -> u32 {
    g.write(0xcf8, 4, config_address(0, dev, 0, offset as u8));
    g.read(0xcfc + (offset & 3), width)
}

fn write(g: &GuestView<'_, Device<'_>>, dev: u8, offset: u16, width: u8, value: u32) {
    g.write(0xcf8, 4, config_address(0, dev, 0, offset as u8));
    g.write(0xcfc + (offset & 3), width, value);
}

/// The capability list as an OS walks it (§6.7): Status bit 4, pointer at 0x34, ID then Next
/// in each header, two low pointer bits masked; bounded at 48 entries.
fn os_walk(g: &GuestView<'_, Device<'_>>, dev: u8) -> Vec<(u8, u16)> {
    let mut found = Vec::new();
    if read(g, dev, 0x06, 2) & (1 << 4) == 0 {
        return found;
    }
    let mut next = read(g, dev, 0x34, 1) as u16 & 0xfc;
    while next != 0 && found.len() < 48 {
        found.push((read(g, dev, next, 1) as u8, next));
        next = read(g, dev, next + 1, 1) as u16 & 0xfc;
    }
    found
}

fn msi_of(g: &GuestView<'_, Device<'_>>, dev: u8) -> Option<u16> {
    os_walk(g, dev)
        .into_iter()
        .find(|&(id, _)| id == 0x05)
        .map(|(_, o)| o)
}

fn changes(g: &GuestView<'_, Device<'_>>) -> Vec<Sbdf> {
    g.bus.borrow_mut().take_msi_changes().collect()
}

#[test]
fn an_os_enable_sequence_through_the_ports_yields_the_guests_request() {
    let cfg = machine();
    let device = Device::new(&cfg);
    let g = guest(&device);
    let real_before = device.dwords(WIDE, WIDE_MSI, 4);
    let cap = msi_of(&g, 0).unwrap();
    assert_eq!(cap, WIDE_MSI);
    // Control: 64-bit capable, one vector (MMC 0, MME 0), disabled whatever the device holds.
    assert_eq!(read(&g, 0, cap + 2, 2), 0x0080);
    for relative in [4, 8, 0xc] {
        assert_eq!(read(&g, 0, cap + relative, 4), 0, "+{relative:#x}");
    }
    assert_eq!(
        g.bus.borrow().msi_request(WIDE).map(|m| m.enabled),
        Some(false)
    );

    // As Linux does it: address, upper address, data (a word), then MSI Enable (a word).
    write(&g, 0, cap + 4, 4, 0xfee0_3000);
    write(&g, 0, cap + 8, 4, 0);
    write(&g, 0, cap + 0xc, 2, 0x4031);
    let control = read(&g, 0, cap + 2, 2);
    write(&g, 0, cap + 2, 2, control | 1);
    assert_eq!(changes(&g), vec![WIDE]);
    assert_eq!(changes(&g), vec![], "each change reported once");
    assert_eq!(
        g.bus.borrow().msi_request(WIDE),
        Some(GuestMsi {
            enabled: true,
            masked: false,
            address: 0xfee0_3000,
            data: 0x4031,
            vector: 0x31,
            destination: 0x03,
            valid: true,
        })
    );
    assert!(g.bus.borrow().msi_request(WIDE).unwrap().deliverable());
    // The guest reads back what it wrote; MME stays 0 (one vector) whatever it asks for.
    write(&g, 0, cap + 2, 2, 0x0071);
    assert_eq!(read(&g, 0, cap, 4), 0x0081_0005);
    assert_eq!(read(&g, 0, cap + 4, 4), 0xfee0_3000);
    assert_eq!(read(&g, 0, cap + 0xc, 4), 0x4031);
    assert_eq!(changes(&g), vec![], "writing what is there changes nothing");
    assert_eq!(device.dwords(WIDE, WIDE_MSI, 4), real_before);
    assert!(device.log.borrow().is_empty(), "{:?}", device.log.borrow());

    write(&g, 0, cap + 2, 1, 0);
    assert_eq!(changes(&g), vec![WIDE]);
    assert!(!g.bus.borrow().msi_request(WIDE).unwrap().enabled);
    assert_eq!(g.bus.borrow().msi_request(UNASSIGNED), None);
}

#[test]
fn a_32_bit_capability_with_masking_is_laid_out_as_the_device_has_it() {
    let cfg = machine();
    let device = Device::new(&cfg);
    let g = guest(&device);
    let cap = msi_of(&g, 1).unwrap();
    assert_eq!(cap, NARROW_MSI);
    assert_eq!(
        read(&g, 1, cap + 2, 2),
        0x0100,
        "masking, 32-bit, one vector, off"
    );
    write(&g, 1, cap + 4, 4, 0xfee0_1003);
    write(&g, 1, cap + 8, 4, 0xffff_0052);
    write(&g, 1, cap + 0xc, 4, u32::MAX);
    write(&g, 1, cap + 0x10, 4, u32::MAX);
    write(&g, 1, cap + 2, 1, 1);
    assert_eq!(read(&g, 1, cap + 4, 4), 0xfee0_1000, "bits 1:0 reserved");
    assert_eq!(read(&g, 1, cap + 8, 4), 0x0052, "no extended message data");
    assert_eq!(read(&g, 1, cap + 0xc, 4), 1, "one mask bit");
    assert_eq!(
        read(&g, 1, cap + 0x10, 4),
        0,
        "the device's pending bits unseen"
    );
    let request = g.bus.borrow().msi_request(NARROW).unwrap();
    assert_eq!(
        (request.address, request.vector, request.destination),
        (0xfee0_1000, 0x52, 0x01)
    );
    assert!(request.enabled && request.masked && !request.deliverable());
    write(&g, 1, cap + 0xc, 1, 0);
    assert!(g.bus.borrow().msi_request(NARROW).unwrap().deliverable());
    assert_eq!(changes(&g), vec![NARROW]);
    assert!(device.log.borrow().is_empty());
}

#[test]
fn an_address_outside_the_apic_window_is_recorded_invalid() {
    let cfg = machine();
    let device = Device::new(&cfg);
    let g = guest(&device);
    for (low, high) in [(0xfed0_0000u32, 0u32), (0xfee0_0000, 1), (0x1000, 0)] {
        write(&g, 0, WIDE_MSI + 4, 4, low);
        write(&g, 0, WIDE_MSI + 8, 4, high);
        write(&g, 0, WIDE_MSI + 2, 2, 1);
        let request = g.bus.borrow().msi_request(WIDE).unwrap();
        assert_eq!(request.address, (u64::from(high) << 32) | u64::from(low));
        assert!(request.enabled && !request.valid && !request.deliverable());
    }
}

#[test]
fn msix_is_hidden_from_the_capability_list() {
    let cfg = machine();
    let device = Device::new(&cfg);
    let g = guest(&device);
    assert_eq!(os_walk(&g, 1), vec![(0x10, 0x40), (0x05, NARROW_MSI)]);
    for relative in [0, 4, 8] {
        assert_eq!(read(&g, 1, NARROW_MSIX + relative, 4), 0);
    }
    // An OS that goes looking at the offset anyway enables nothing.
    let dropped = g.bus.borrow().dropped_writes();
    write(&g, 1, NARROW_MSIX + 2, 2, 0xc000);
    assert_eq!(g.bus.borrow().dropped_writes(), dropped + 1);
    // Only MSI-X: no list at all, Capabilities List clear, pointer 0.
    assert_eq!(os_walk(&g, 2), vec![]);
    assert_eq!(read(&g, 2, 0x06, 2) & (1 << 4), 0);
    assert_eq!(read(&g, 2, 0x34, 1), 0);
    assert!(cfg.peek(MSIX_ONLY, 0x04).unwrap() & (1 << 20) != 0);
    assert!(device.log.borrow().is_empty());
}

#[test]
fn a_device_without_msi_offers_none_and_cannot_be_programmed() {
    let cfg = machine();
    let device = Device::new(&cfg);
    let g = guest(&device);
    assert_eq!(os_walk(&g, 3), vec![]);
    assert_eq!(msi_of(&g, 2), None);
    let bus = g.bus.borrow();
    assert_eq!(bus.msi_request(PLAIN).map(|m| m.enabled), Some(false));
    for f in [PLAIN, MSIX_ONLY] {
        assert_eq!(
            bus.program_host_msi(&device, f, 0xfee0_0000, 0, true),
            Err(VirtualBusError::NoMsi(f))
        );
    }
    assert_eq!(
        bus.program_host_msi(&device, UNASSIGNED, 0xfee0_0000, 0, true),
        Err(VirtualBusError::NotAssigned(UNASSIGNED))
    );
    assert!(device.log.borrow().is_empty());
}

#[test]
fn program_host_msi_writes_exactly_the_real_capability() {
    let cfg = machine();
    let device = Device::new(&cfg);
    let g = guest(&device);
    write(&g, 0, WIDE_MSI + 4, 4, 0xfee0_3000);
    let guest_view: Vec<u32> = (0..4).map(|n| read(&g, 0, WIDE_MSI + 4 * n, 4)).collect();
    let bus = g.bus.borrow();

    // 64-bit: disable (MME cleared too), address, upper, data, enable.
    bus.program_host_msi(&device, WIDE, 0xfee0_0010, 0x0005, true)
        .unwrap();
    let header = cfg.peek(WIDE, WIDE_MSI).unwrap() & 0xff8f_ffff & !(1 << 16);
    assert_eq!(
        *device.log.borrow(),
        vec![
            (WIDE, WIDE_MSI, header),
            (WIDE, WIDE_MSI + 4, 0xfee0_0010),
            (WIDE, WIDE_MSI + 8, 0),
            (WIDE, WIDE_MSI + 0xc, 0x0005),
            (WIDE, WIDE_MSI, header | 1 << 16),
        ]
    );
    device.log.borrow_mut().clear();

    // 32-bit with masking: data at +8, vector 0 unmasked at +0xc, disabled when asked.
    bus.program_host_msi(&device, NARROW, 0xfee0_0000, 0x0201, false)
        .unwrap();
    let header = cfg.peek(NARROW, NARROW_MSI).unwrap() & 0xff8f_ffff & !(1 << 16);
    assert_eq!(
        *device.log.borrow(),
        vec![
            (NARROW, NARROW_MSI, header),
            (NARROW, NARROW_MSI + 4, 0xfee0_0000),
            (NARROW, NARROW_MSI + 8, 0x0201),
            (NARROW, NARROW_MSI + 0xc, 0xffff_fffe),
        ]
    );
    device.log.borrow_mut().clear();

    let unfit = |address, data| VirtualBusError::MsiMessageUnfit {
        function: NARROW,
        address,
        data,
    };
    for (address, data) in [
        (0x1_fee0_0000, 0),
        (0xfee0_0002, 0),
        (0xfee0_0000, 0x1_0000),
    ] {
        assert_eq!(
            bus.program_host_msi(&device, NARROW, address, data, true),
            Err(unfit(address, data))
        );
    }
    assert!(
        device.log.borrow().is_empty(),
        "a refused message writes nothing"
    );
    drop(bus);
    // The guest still sees its own registers, not the host's message.
    let after: Vec<u32> = (0..4).map(|n| read(&g, 0, WIDE_MSI + 4 * n, 4)).collect();
    assert_eq!(after, guest_view);
    assert_eq!(changes(&g), vec![WIDE], "the guest's write, not the host's");
}

/// Guest accesses aimed at the capability registers of every function.
fn access() -> impl Strategy<Value = (u8, u16, u8, u32, bool)> {
    let dev = 0u8..5;
    let offset = prop_oneof![3 => (0x10u16..0x1c).prop_map(|n| 4 * n), 1 => 0u16..0x100];
    let width = prop_oneof![Just(1u8), Just(2u8), Just(4u8)];
    let value = prop_oneof![Just(u32::MAX), Just(1u32), any::<u32>()];
    (dev, offset, width, value, any::<bool>())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn no_guest_access_sequence_changes_a_real_msi_register(
        accesses in prop::collection::vec(access(), 0..200)
    ) {
        let cfg = machine();
        let device = Device::new(&cfg);
        let g = guest(&device);
        let real = |d: &Device<'_>| {
            [WIDE, NARROW, MSIX_ONLY, PLAIN].map(|f| d.dwords(f, 0x40, 0x30))
        };
        let before = real(&device);
        for (dev, offset, width, value, is_write) in accesses {
            let offset = offset & !(u16::from(width) - 1);
            if is_write {
                write(&g, dev, offset, width, value);
            } else {
                read(&g, dev, offset, width);
            }
            let request = g.bus.borrow().msi_request(WIDE).unwrap();
            prop_assert!(request.valid == (request.address >> 20 == 0xfee));
        }
        prop_assert!(device.log.borrow().iter().all(|&(_, o, _)| o == 0x04));
        prop_assert_eq!(before, real(&device));
    }
}

#[test]
fn a_second_msi_capability_and_a_looping_list_still_show_one_msi() {
    let mut cfg = FakeConfigSpace::new();
    // MSI-X at 0x40, MSI at 0x4c, a second MSI at 0x58 whose Next loops back to 0x40.
    cfg.insert(
        WIDE,
        FakeFunction::endpoint(0x1234, 0x11e8, 0x00_ff_00)
            .capability(cap_id::MSIX, 0, &[0x2000, 0x3000])
            .capability(cap_id::MSI, 0x0080, &[0xfee0_1000, 0, 0x41])
            .capability(cap_id::MSI, 0x0000, &[0xfee0_2000, 0x42])
            .capability_next(0x58, 0x40),
    );
    let device = Device::new(&cfg);
    let g = guest(&device);
    assert_eq!(os_walk(&g, 0), vec![(0x05, 0x4c)]);
    assert_eq!(read(&g, 0, 0x4c, 4), 0x0080_0005, "Next ends the list");
    for relative in [0, 4, 8] {
        assert_eq!(read(&g, 0, 0x58 + relative, 4), 0, "second MSI hidden");
    }
    write(&g, 0, 0x58 + 2, 2, 1);
    assert_eq!(
        g.bus.borrow().msi_request(WIDE).map(|m| m.enabled),
        Some(false)
    );
    assert!(device.log.borrow().is_empty());
}
