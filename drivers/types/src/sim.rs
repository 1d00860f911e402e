//! Simulated hardware for host tests: sparse physical memory, a frame allocator with failure
//! injection, and a register block that records every access.
//!
//! Only `alloc` is used, never `std`: dev-dependency features unify with the freestanding
//! binaries' dependencies in workspace-wide builds, and a `std` here would give them a second
//! panic handler.
extern crate alloc;

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};

use crate::{FrameAllocator, Mmio, PhysAddr, PhysMem, PAGE_SIZE};

const PAGE: usize = PAGE_SIZE as usize;

/// Sparse simulated RAM: untouched memory reads as zero.
#[derive(Default)]
pub struct SimMemory {
    frames: RefCell<BTreeMap<u64, Box<[u8; PAGE]>>>,
}

impl SimMemory {
    pub fn new() -> SimMemory {
        SimMemory::default()
    }

    fn with_byte_range<R>(
        &self,
        addr: PhysAddr,
        len: usize,
        mut f: impl FnMut(&mut [u8], usize) -> R,
    ) {
        let mut frames = self.frames.borrow_mut();
        let mut done = 0;
        while done < len {
            let a = addr.0 + done as u64;
            let frame = a / PAGE_SIZE;
            let off = (a % PAGE_SIZE) as usize;
            let n = (PAGE - off).min(len - done);
            let page = frames.entry(frame).or_insert_with(|| Box::new([0; PAGE]));
            f(&mut page[off..off + n], done);
            done += n;
        }
    }
}

impl PhysMem for SimMemory {
    fn read_u64(&self, addr: PhysAddr) -> u64 {
        let mut b = [0u8; 8];
        self.read_bytes(addr, &mut b);
        u64::from_le_bytes(b)
    }

    fn write_u64(&self, addr: PhysAddr, value: u64) {
        self.write_bytes(addr, &value.to_le_bytes());
    }

    fn compare_exchange_u128(
        &self,
        addr: PhysAddr,
        current: u128,
        new: u128,
    ) -> Result<u128, u128> {
        assert_eq!(addr.0 % 16, 0, "cmpxchg16b needs a 16-byte aligned address");
        let found = self.read_u128(addr);
        if found == current {
            self.write_bytes(addr, &new.to_le_bytes());
            Ok(found)
        } else {
            Err(found)
        }
    }

    fn zero(&self, addr: PhysAddr, len: u64) {
        self.with_byte_range(addr, len as usize, |chunk, _| chunk.fill(0));
    }

    fn read_bytes(&self, addr: PhysAddr, buf: &mut [u8]) {
        let len = buf.len();
        self.with_byte_range(addr, len, |chunk, done| {
            buf[done..done + chunk.len()].copy_from_slice(chunk)
        });
    }

    fn write_bytes(&self, addr: PhysAddr, data: &[u8]) {
        self.with_byte_range(addr, data.len(), |chunk, done| {
            let n = chunk.len();
            chunk.copy_from_slice(&data[done..done + n])
        });
    }
}

/// Hands out frames from a fixed physical window, counts them, and can be told to fail.
///
/// Freed frames are reused last-freed first (a use-after-free then hits a frame that has a
/// new owner, which the tests' walkers see). Freeing never allocates: the free stack and
/// the in-use bits grow only when a frame is handed out for the first time, so they always
/// have room for every frame that can come back (deassign and destroy are checked to make
/// no heap allocation, with this allocator underneath).
pub struct SimFrameAllocator<'m> {
    memory: &'m SimMemory,
    start: u64,
    next: u64,
    end: u64,
    free: Vec<u64>,
    /// One bit per frame of `[start, next)`: set while handed out.
    in_use_bits: Vec<u64>,
    in_use: usize,
    allocations: usize,
    fail_at: Option<usize>,
}

impl<'m> SimFrameAllocator<'m> {
    /// Frames come from `[start, start + frames * 4 KiB)`.
    pub fn new(memory: &'m SimMemory, start: PhysAddr, frames: u64) -> Self {
        SimFrameAllocator {
            memory,
            start: start.0,
            next: start.0,
            end: start.0 + frames * PAGE_SIZE,
            free: Vec::new(),
            in_use_bits: Vec::new(),
            in_use: 0,
            allocations: 0,
            fail_at: None,
        }
    }

    /// The `n`-th allocation from now on (0 = the next one) returns `None`, once.
    pub fn fail_allocation(&mut self, n: usize) {
        self.fail_at = Some(self.allocations + n);
    }

    /// Successful and failed allocation attempts so far.
    pub fn allocation_attempts(&self) -> usize {
        self.allocations
    }

    pub fn is_allocated(&self, frame: PhysAddr) -> bool {
        self.bit(frame)
            .is_some_and(|(word, mask)| self.in_use_bits[word] & mask != 0)
    }

    /// The word and mask of a page-aligned frame this allocator has handed out at least once.
    fn bit(&self, frame: PhysAddr) -> Option<(usize, u64)> {
        if frame.0 < self.start || frame.0 >= self.next || !frame.0.is_multiple_of(PAGE_SIZE) {
            return None;
        }
        let i = ((frame.0 - self.start) / PAGE_SIZE) as usize;
        Some((i / 64, 1 << (i % 64)))
    }

    /// A never-used frame from the window, with room reserved to take it back later.
    fn bump(&mut self) -> Option<u64> {
        if self.next >= self.end {
            return None;
        }
        let handed_out = ((self.next - self.start) / PAGE_SIZE) as usize + 1;
        self.free
            .reserve(handed_out.saturating_sub(self.free.len()));
        self.in_use_bits.resize(handed_out.div_ceil(64), 0);
        self.next += PAGE_SIZE;
        Some(self.next - PAGE_SIZE)
    }
}

impl FrameAllocator for SimFrameAllocator<'_> {
    fn alloc_frame(&mut self) -> Option<PhysAddr> {
        let attempt = self.allocations;
        self.allocations += 1;
        if self.fail_at == Some(attempt) {
            self.fail_at = None;
            return None;
        }
        let frame = match self.free.pop() {
            Some(f) => f,
            None => self.bump()?,
        };
        self.memory.zero(PhysAddr(frame), PAGE_SIZE);
        let (word, mask) = self.bit(PhysAddr(frame))?;
        self.in_use_bits[word] |= mask;
        self.in_use += 1;
        Some(PhysAddr(frame))
    }

    /// Panics on a double free or a foreign frame: in a test that is the bug to report.
    fn free_frame(&mut self, frame: PhysAddr) {
        let held = self
            .bit(frame)
            .filter(|(w, m)| self.in_use_bits[*w] & m != 0);
        let Some((word, mask)) = held else {
            panic!("double free or foreign frame {frame}");
        };
        self.in_use_bits[word] &= !mask;
        self.in_use -= 1;
        debug_assert!(
            self.free.len() < self.free.capacity(),
            "room reserved at bump"
        );
        self.free.push(frame.0);
    }

    fn frames_in_use(&self) -> usize {
        self.in_use
    }
}

/// One recorded register access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegAccess {
    Read32(usize),
    Write32(usize, u32),
    Read64(usize),
    Write64(usize, u64),
}

type WriteHook = Box<dyn FnMut(&mut BTreeMap<usize, u64>, usize, u64)>;

/// A register block backed by a map, with an optional hook that models the device's reaction
/// to a write (a command register that sets a status bit, a doorbell that consumes a queue).
pub struct SimRegisters {
    values: RefCell<BTreeMap<usize, u64>>,
    log: RefCell<Vec<RegAccess>>,
    hook: RefCell<Option<WriteHook>>,
    writes: Cell<usize>,
}

/// Accesses the log holds before it grows: room reserved up front, so the simulator's own
/// bookkeeping does not show up when a test counts the heap allocations of the code it drives.
const LOG_RESERVE: usize = 1 << 16;

impl Default for SimRegisters {
    fn default() -> Self {
        SimRegisters {
            values: RefCell::default(),
            log: RefCell::new(Vec::with_capacity(LOG_RESERVE)),
            hook: RefCell::default(),
            writes: Cell::default(),
        }
    }
}

impl SimRegisters {
    pub fn new() -> SimRegisters {
        SimRegisters::default()
    }

    /// Presets a register without recording an access (the device's reset value).
    pub fn set(&self, offset: usize, value: u64) {
        self.values.borrow_mut().insert(offset, value);
    }

    /// Current value without recording an access.
    pub fn get(&self, offset: usize) -> u64 {
        self.values.borrow().get(&offset).copied().unwrap_or(0)
    }

    /// Called after every write with the register map, the offset and the written value.
    pub fn on_write(&self, hook: impl FnMut(&mut BTreeMap<usize, u64>, usize, u64) + 'static) {
        *self.hook.borrow_mut() = Some(Box::new(hook));
    }

    pub fn accesses(&self) -> Vec<RegAccess> {
        self.log.borrow().clone()
    }

    /// Writes since creation: the "MMIO writes per owner switch" figure counts these.
    pub fn write_count(&self) -> usize {
        self.writes.get()
    }

    fn write(&self, offset: usize, value: u64) {
        self.writes.set(self.writes.get() + 1);
        let mut values = self.values.borrow_mut();
        values.insert(offset, value);
        if let Some(hook) = self.hook.borrow_mut().as_mut() {
            hook(&mut values, offset, value);
        }
    }
}

impl Mmio for SimRegisters {
    fn read32(&self, offset: usize) -> u32 {
        self.log.borrow_mut().push(RegAccess::Read32(offset));
        // A 32-bit register may be the upper half of a 64-bit one stored at offset - 4.
        match self.values.borrow().get(&offset) {
            Some(v) => *v as u32,
            None => self
                .values
                .borrow()
                .get(&(offset.wrapping_sub(4)))
                .map_or(0, |v| (v >> 32) as u32),
        }
    }

    fn write32(&self, offset: usize, value: u32) {
        self.log
            .borrow_mut()
            .push(RegAccess::Write32(offset, value));
        self.write(offset, value as u64);
    }

    fn read64(&self, offset: usize) -> u64 {
        self.log.borrow_mut().push(RegAccess::Read64(offset));
        self.get(offset)
    }

    fn write64(&self, offset: usize, value: u64) {
        self.log
            .borrow_mut()
            .push(RegAccess::Write64(offset, value));
        self.write(offset, value);
    }
}

/// One interrupt a simulated IOMMU let through, as the local APIC receives it. Both vendors'
/// simulated units report deliveries in this shape; how they decide is each sim's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimInterrupt {
    pub vector: u8,
    /// The APIC ID (xAPIC: 8 bits, x2APIC: 32 bits).
    pub destination: u32,
    /// The remapping-table entry it went through; `None` when it passed untranslated.
    pub index: Option<u16>,
}

/// Memory in which `guarded` byte addresses change only by 16-byte compare-exchange, counted:
/// proves that a live table entry (IRTE, DTE, context entry) is never written piecemeal. A
/// plain store into the range panics.
pub struct ExchangeOnly<'a> {
    mem: &'a SimMemory,
    guarded: core::ops::Range<u64>,
    exchanges: Cell<usize>,
}

impl<'a> ExchangeOnly<'a> {
    /// Guards the page at `page`.
    pub fn page(mem: &'a SimMemory, page: PhysAddr) -> Self {
        ExchangeOnly::range(mem, page.0..page.0 + PAGE_SIZE)
    }

    /// Guards all of memory.
    pub fn everywhere(mem: &'a SimMemory) -> Self {
        ExchangeOnly::range(mem, 0..u64::MAX)
    }

    fn range(mem: &'a SimMemory, guarded: core::ops::Range<u64>) -> Self {
        ExchangeOnly {
            mem,
            guarded,
            exchanges: Cell::new(0),
        }
    }

    /// Compare-exchanges so far.
    pub fn exchanges(&self) -> usize {
        self.exchanges.get()
    }

    fn refuse_plain_store(&self, addr: PhysAddr, len: u64) {
        let end = addr.0.saturating_add(len);
        assert!(
            end <= self.guarded.start || addr.0 >= self.guarded.end,
            "plain {len}-byte store at {addr} into exchange-only memory"
        );
    }
}

impl PhysMem for ExchangeOnly<'_> {
    fn read_u64(&self, addr: PhysAddr) -> u64 {
        self.mem.read_u64(addr)
    }
    fn write_u64(&self, addr: PhysAddr, value: u64) {
        self.refuse_plain_store(addr, 8);
        self.mem.write_u64(addr, value)
    }
    fn compare_exchange_u128(&self, a: PhysAddr, c: u128, n: u128) -> Result<u128, u128> {
        self.exchanges.set(self.exchanges.get() + 1);
        self.mem.compare_exchange_u128(a, c, n)
    }
    fn zero(&self, addr: PhysAddr, len: u64) {
        self.mem.zero(addr, len)
    }
    fn read_bytes(&self, addr: PhysAddr, buf: &mut [u8]) {
        self.mem.read_bytes(addr, buf)
    }
    fn write_bytes(&self, addr: PhysAddr, data: &[u8]) {
        self.refuse_plain_store(addr, data.len() as u64);
        self.mem.write_bytes(addr, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchange_only_memory_counts_exchanges_and_allows_stores_outside() {
        let mem = SimMemory::new();
        let guarded = ExchangeOnly::page(&mem, PhysAddr(0x2000));
        guarded.write_u64(PhysAddr(0x1ff8), 1);
        guarded.write_bytes(PhysAddr(0x3000), &[2]);
        assert_eq!(guarded.compare_exchange_u128(PhysAddr(0x2010), 0, 3), Ok(0));
        assert_eq!(
            (guarded.exchanges(), guarded.read_u64(PhysAddr(0x2010))),
            (1, 3)
        );
    }

    #[test]
    #[should_panic(expected = "exchange-only")]
    fn exchange_only_memory_refuses_a_plain_store_inside() {
        let mem = SimMemory::new();
        ExchangeOnly::page(&mem, PhysAddr(0x2000)).write_u64(PhysAddr(0x2ff8), 1);
    }

    #[test]
    #[should_panic(expected = "exchange-only")]
    fn exchange_only_memory_refuses_a_byte_store_straddling_the_range() {
        let mem = SimMemory::new();
        ExchangeOnly::page(&mem, PhysAddr(0x2000)).write_bytes(PhysAddr(0x1fff), &[1, 2]);
    }

    #[test]
    fn memory_reads_back_across_page_boundaries() {
        let m = SimMemory::new();
        m.write_bytes(PhysAddr(0x1ffc), &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            m.read_u64(PhysAddr(0x1ffc)),
            u64::from_le_bytes([1, 2, 3, 4, 5, 6, 7, 8])
        );
        assert_eq!(m.read_u64(PhysAddr(0x8000)), 0);
    }

    #[test]
    fn cmpxchg_only_replaces_the_expected_value() {
        let m = SimMemory::new();
        assert_eq!(m.compare_exchange_u128(PhysAddr(0x10), 0, 7), Ok(0));
        assert_eq!(m.compare_exchange_u128(PhysAddr(0x10), 0, 9), Err(7));
        assert_eq!(m.read_u128(PhysAddr(0x10)), 7);
    }

    #[test]
    fn allocator_counts_zeroes_and_fails_on_request() {
        let m = SimMemory::new();
        m.write_u64(PhysAddr(0x10_0000), 0xdead);
        let mut a = SimFrameAllocator::new(&m, PhysAddr(0x10_0000), 2);
        a.fail_allocation(1);
        let f = a.alloc_frame().expect("first frame");
        assert_eq!(m.read_u64(f), 0, "frames come zeroed");
        assert_eq!(a.alloc_frame(), None, "injected failure");
        assert!(a.alloc_frame().is_some());
        assert_eq!(a.alloc_frame(), None, "window exhausted");
        assert_eq!(a.frames_in_use(), 2);
        a.free_frame(f);
        assert_eq!(a.frames_in_use(), 1);
    }

    #[test]
    fn freed_frames_come_back_last_freed_first_and_zeroed() {
        let m = SimMemory::new();
        let mut a = SimFrameAllocator::new(&m, PhysAddr(0x10_0000), 100);
        let f: Vec<PhysAddr> = (0..70).map(|_| a.alloc_frame().expect("frame")).collect();
        m.write_u64(f[3], 0xdead);
        a.free_frame(f[3]);
        a.free_frame(f[65]);
        assert!(!a.is_allocated(f[3]) && a.is_allocated(f[4]));
        assert_eq!(a.frames_in_use(), 68);
        assert_eq!(a.alloc_frame(), Some(f[65]));
        assert_eq!(a.alloc_frame(), Some(f[3]));
        assert_eq!(m.read_u64(f[3]), 0, "zeroed again");
        assert_eq!(a.alloc_frame(), Some(PhysAddr(0x10_0000 + 70 * PAGE_SIZE)));
    }

    #[test]
    #[should_panic(expected = "double free")]
    fn a_double_free_panics() {
        let m = SimMemory::new();
        let mut a = SimFrameAllocator::new(&m, PhysAddr(0x10_0000), 4);
        let f = a.alloc_frame().expect("frame");
        a.free_frame(f);
        a.free_frame(f);
    }

    #[test]
    #[should_panic(expected = "foreign frame")]
    fn a_foreign_frame_panics() {
        let m = SimMemory::new();
        let mut a = SimFrameAllocator::new(&m, PhysAddr(0x10_0000), 4);
        a.alloc_frame().expect("frame");
        a.free_frame(PhysAddr(0x10_1000)); // in the window, never handed out
    }

    #[test]
    fn registers_record_and_react() {
        let r = SimRegisters::new();
        r.on_write(|regs, off, v| {
            if off == 0x18 {
                regs.insert(0x1c, v);
            }
        });
        r.write32(0x18, 5);
        assert_eq!(r.read32(0x1c), 5);
        assert_eq!(r.write_count(), 1);
        assert_eq!(
            r.accesses(),
            vec![RegAccess::Write32(0x18, 5), RegAccess::Read32(0x1c)]
        );
    }
}
