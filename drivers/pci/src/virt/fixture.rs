//! The test machine: a fake configuration space holding assigned and unassigned functions,
//! the virtual bus built for it the way the kernel will, and a guest's view of that bus
//! through its ports.
use alloc::vec::Vec;
use core::cell::RefCell;

use lazaret_types::{Bdf, Sbdf};

use super::VirtualBus;
use crate::fake::{FakeConfigSpace, FakeFunction};
use crate::{enumerate, Bar, ConfigSpace, PciFunction};

pub const WINDOW: (u64, u64) = (0xc000_0000, 0x1000_0000);
pub const EDU: (u16, u16) = (0x1234, 0x11e8);

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

pub fn view(cfg: &FakeConfigSpace) -> GuestView<'_, FakeConfigSpace> {
    GuestView {
        bus: RefCell::new(bus_for(cfg)),
        cfg,
    }
}

/// Every dword of every real function that a guest must not change: all of an unassigned
/// function, and the BARs, ROM and MSI capability (edu's, at 0x40) of an assigned one.
pub fn protected(cfg: &FakeConfigSpace) -> Vec<(Sbdf, u16, Option<u32>)> {
    let everyone = [
        at(0, 0, 0),
        at(0, 2, 0),
        at(0, 3, 0),
        at(0, 4, 0),
        at(0, 4, 1),
        at(0, 0x1c, 0),
        at(1, 0, 0),
    ];
    let mut dwords = Vec::new();
    for f in everyone {
        let guarded: Vec<u16> = if assigned().contains(&f) {
            (0x10..=0x30)
                .chain(0x40..0x50)
                .filter(|o| o % 4 == 0)
                .collect()
        } else {
            (0..0x100).step_by(4).collect()
        };
        dwords.extend(guarded.into_iter().map(|o| (f, o, cfg.peek(f, o))));
    }
    dwords
}
