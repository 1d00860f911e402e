//! A simulated configuration space for host tests: tests place functions, bridges and the
//! size masks of their BARs, and the fake answers reads and writes the way hardware does
//! (absent functions read all ones, read-only bits ignore writes, a BAR written with all ones
//! reads back its size mask).
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};

use lazaret_types::Sbdf;

use crate::regs;
use crate::ConfigSpace;

const DWORDS: usize = 1024;
/// Command bits a typical function implements: I/O, memory, bus master, parity, SERR#,
/// INTx disable.
const COMMAND_WRITABLE: u32 = 0x0547;
/// Where capabilities start: right after the 64-byte header.
const FIRST_CAPABILITY: u8 = 0x40;

/// One function's 4 KiB of configuration space and which of its bits are writable.
#[derive(Clone)]
pub struct FakeFunction {
    values: Box<[u32; DWORDS]>,
    writable: Box<[u32; DWORDS]>,
    next_capability: u8,
    last_capability: Option<u8>,
}

/// One recorded configuration write, with the Command register as it was just before it, so
/// tests can check what was decoding while a BAR held all ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FakeWrite {
    pub at: Sbdf,
    pub offset: u16,
    pub value: u32,
    pub command_before: u16,
}

impl FakeFunction {
    /// A type 0 function; `class` is base class (23:16), sub-class (15:8), prog-if (7:0).
    pub fn endpoint(vendor: u16, device: u16, class: u32) -> FakeFunction {
        let mut f = FakeFunction {
            values: Box::new([0; DWORDS]),
            writable: Box::new([0; DWORDS]),
            next_capability: FIRST_CAPABILITY,
            last_capability: None,
        };
        f.put(regs::ID, u32::from(vendor) | (u32::from(device) << 16));
        f.put(regs::CLASS_REVISION, (class & 0x00ff_ffff) << 8);
        f.writable[usize::from(regs::COMMAND / 4)] = COMMAND_WRITABLE;
        f
    }

    /// A type 1 PCI-to-PCI bridge (class 0604) with the bus numbers firmware programmed.
    pub fn bridge(
        vendor: u16,
        device: u16,
        primary: u8,
        secondary: u8,
        subordinate: u8,
    ) -> FakeFunction {
        let mut f = FakeFunction::endpoint(vendor, device, 0x06_04_00).header_type(1);
        f.put(
            regs::BRIDGE_BUS_NUMBERS,
            u32::from(primary) | (u32::from(secondary) << 8) | (u32::from(subordinate) << 16),
        );
        f
    }

    /// Replaces the header layout (bits 6:0 of Header Type), keeping the multi-function bit.
    pub fn header_type(mut self, layout: u8) -> FakeFunction {
        let dword = self.get(regs::HEADER_DWORD);
        let keep = dword & !(u32::from(regs::HEADER_LAYOUT_MASK) << 16);
        self.put(regs::HEADER_DWORD, keep | (u32::from(layout & 0x7f) << 16));
        self
    }

    pub fn multi_function(mut self) -> FakeFunction {
        let dword = self.get(regs::HEADER_DWORD);
        self.put(
            regs::HEADER_DWORD,
            dword | (u32::from(regs::HEADER_MULTI_FUNCTION) << 16),
        );
        self
    }

    pub fn revision(mut self, revision: u8) -> FakeFunction {
        let dword = self.get(regs::CLASS_REVISION);
        self.put(regs::CLASS_REVISION, (dword & !0xff) | u32::from(revision));
        self
    }

    /// Initial Command register value (as firmware left it); Status is kept.
    pub fn command(mut self, command: u16) -> FakeFunction {
        let status = self.get(regs::COMMAND) & 0xffff_0000;
        self.put(regs::COMMAND, status | u32::from(command));
        self
    }

    /// A 32-bit memory BAR; `size` must be a power of two of at least 16 bytes.
    pub fn bar_mem32(self, index: u8, base: u32, size: u32, prefetchable: bool) -> FakeFunction {
        let flags = if prefetchable {
            regs::BAR_MEM_PREFETCHABLE
        } else {
            0
        };
        self.bar(
            index,
            base | flags,
            !(size - 1) & regs::BAR_MEM_ADDRESS_MASK,
        )
    }

    /// A 64-bit memory BAR in slots `index` and `index + 1`.
    pub fn bar_mem64(self, index: u8, base: u64, size: u64, prefetchable: bool) -> FakeFunction {
        let flags = regs::BAR_MEM_TYPE_64
            | if prefetchable {
                regs::BAR_MEM_PREFETCHABLE
            } else {
                0
            };
        let mask = !(size - 1);
        self.bar(
            index,
            (base as u32) | flags,
            (mask as u32) & regs::BAR_MEM_ADDRESS_MASK,
        )
        .bar(index + 1, (base >> 32) as u32, (mask >> 32) as u32)
    }

    /// An I/O BAR; only the low 16 address bits are implemented, as on x86.
    pub fn bar_io(self, index: u8, port: u32, size: u32) -> FakeFunction {
        self.bar(index, port | regs::BAR_IO, !(size - 1) & 0xfffc)
    }

    fn bar(mut self, index: u8, value: u32, writable: u32) -> FakeFunction {
        let offset = regs::BAR0 + 4 * u16::from(index);
        self.put(offset, value);
        self.writable[usize::from(offset / 4)] = writable;
        self
    }

    /// Appends a capability: `id`, its register-specific upper half of the first dword, and
    /// the dwords after it. Chains it behind the previous one and sets Status.CapList.
    pub fn capability(mut self, id: u8, header_high: u16, body: &[u32]) -> FakeFunction {
        let at = self.next_capability;
        let header = u32::from(id) | (u32::from(header_high) << 16);
        self.put(u16::from(at), header);
        for (i, dword) in body.iter().enumerate() {
            self.put(u16::from(at) + 4 + 4 * i as u16, *dword);
        }
        match self.last_capability {
            Some(previous) => self.link(previous, at),
            None => {
                self.put(regs::CAPABILITY_POINTER, u32::from(at));
                let command = self.get(regs::COMMAND);
                self.put(regs::COMMAND, command | regs::STATUS_CAPABILITIES_LIST);
            }
        }
        self.last_capability = Some(at);
        self.next_capability = at + 4 + 4 * body.len() as u8;
        self
    }

    /// A PCI Express capability with Device/Port Type `port_type` (PCIe Base §7.5.3.2) and
    /// Function Level Reset support in Device Capabilities bit 28.
    pub fn pcie(self, port_type: u8, flr: bool) -> FakeFunction {
        let capabilities = 2 | (u16::from(port_type & 0xf) << 4);
        let devcap = if flr { regs::PCIE_DEVCAP_FLR } else { 0 };
        self.capability(regs::CAP_ID_PCI_EXPRESS, capabilities, &[devcap, 0, 0])
    }

    /// Points the Next field of the capability at `at` to `next`: for malformed lists.
    pub fn capability_next(mut self, at: u8, next: u8) -> FakeFunction {
        self.link(at, next);
        self
    }

    fn link(&mut self, at: u8, next: u8) {
        let dword = self.get(u16::from(at));
        self.put(u16::from(at), (dword & !0xff00) | (u32::from(next) << 8));
    }

    /// Overwrites a read-only dword: for malformed headers.
    pub fn raw(mut self, offset: u16, value: u32) -> FakeFunction {
        self.put(offset, value);
        self
    }

    fn get(&self, offset: u16) -> u32 {
        self.values
            .get(usize::from(offset / 4))
            .copied()
            .unwrap_or(u32::MAX)
    }

    fn put(&mut self, offset: u16, value: u32) {
        if let Some(slot) = self.values.get_mut(usize::from(offset / 4)) {
            *slot = value;
        }
    }

    fn write(&mut self, offset: u16, value: u32) {
        let index = usize::from(offset / 4);
        if let (Some(slot), Some(mask)) = (self.values.get_mut(index), self.writable.get(index)) {
            *slot = (*slot & !mask) | (value & mask);
        }
    }
}

/// The whole simulated configuration space of one machine (all segments).
#[derive(Default)]
pub struct FakeConfigSpace {
    functions: RefCell<BTreeMap<Sbdf, FakeFunction>>,
    writes: RefCell<Vec<FakeWrite>>,
    reads: Cell<usize>,
}

impl FakeConfigSpace {
    pub fn new() -> FakeConfigSpace {
        FakeConfigSpace::default()
    }

    pub fn insert(&mut self, at: Sbdf, function: FakeFunction) {
        self.functions.get_mut().insert(at, function);
    }

    /// The dword at `offset`, without recording a read; `None` for an absent function.
    pub fn peek(&self, at: Sbdf, offset: u16) -> Option<u32> {
        self.functions.borrow().get(&at).map(|f| f.get(offset))
    }

    /// Every write so far, oldest first.
    pub fn writes(&self) -> Vec<FakeWrite> {
        self.writes.borrow().clone()
    }

    /// Configuration reads so far: the enumerator's work bound is checked with this.
    pub fn read_count(&self) -> usize {
        self.reads.get()
    }
}

impl ConfigSpace for FakeConfigSpace {
    fn read32(&self, addr: Sbdf, offset: u16) -> u32 {
        self.reads.set(self.reads.get() + 1);
        self.peek(addr, offset & !3).unwrap_or(u32::MAX)
    }

    fn write32(&self, addr: Sbdf, offset: u16, value: u32) {
        let mut functions = self.functions.borrow_mut();
        let Some(function) = functions.get_mut(&addr) else {
            return;
        };
        self.writes.borrow_mut().push(FakeWrite {
            at: addr,
            offset: offset & !3,
            value,
            command_before: function.get(regs::COMMAND) as u16,
        });
        function.write(offset & !3, value);
    }
}
