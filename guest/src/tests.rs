//! The guest's logic against fakes: `lazaret_pci`'s configuration space behind a port-I/O
//! decoder written here from the spec, `lazaret_edu`'s `SimEdu` DMAing into simulated RAM
//! through an IOMMU that maps only guest RAM, and page tables read back by a walker with
//! its own bit definitions. Interrupts: the fake holds its own model of edu's MSI capability
//! (PCI 3.0 §6.8.1), of the x2APIC MSRs (SDM Vol. 3A §11.12) and of Lazaret's delivery, and
//! runs what guest/bin's handler stub does when it delivers.
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt::Write as _;

use lazaret_edu::sim::{Completion, SimEdu};
use lazaret_guest_abi::layout::*;
use lazaret_guest_abi::{BootInfo, GuestExit};
use lazaret_pci::virt::VirtualBus;
use lazaret_pci::{ConfigSpace, FakeConfigSpace, FakeFunction};
use lazaret_types::sim::{RegAccess, SimMemory};
use lazaret_types::{Bdf, Mmio, PhysAddr, PhysMem, Sbdf};

use crate::{run, Console, Env, HandlerRecord, Platform, DMA_LEN};

mod irq;
mod rogue_irq;

const MEMORY: u64 = DEFAULT_MEMORY_SIZE;
const IMAGE_END: u64 = IMAGE_BASE_GPA + 0x9800;
const BAR: u64 = MMIO_WINDOW_GPA + 0x10_0000;
const IOMMU_HPA: u64 = 0xfed9_0000;
const OTHER_HPA: u64 = 0x0123_4000;

struct Fake<'a> {
    cfg: FakeConfigSpace,
    address: Cell<u32>,
    ram: &'a SimMemory,
    edu: &'a SimEdu<'a>,
    edu_reads: &'a Cell<u64>,
    /// MSI enables and edu interrupt raises, in the order the guest made them.
    events: &'a RefCell<Vec<Event>>,
    lines: RefCell<Vec<String>>,
    tsc: Cell<u64>,
    tsc_step: u64,
    bars: RefCell<Vec<u64>>,
    forbidden: RefCell<Vec<u64>>,
    invlpgs: RefCell<Vec<u64>>,
    triple_faults: Cell<u32>,
    /// Where the MSI capability of every function sits (FakeFunction puts the first one at
    /// 0x40), and the registers the guest wrote there, by function.
    msi_at: u16,
    msi: RefCell<HashMap<Sbdf, [u32; 6]>>,
    msi_writes: RefCell<Vec<(u16, u32)>>,
    apic_base: Cell<u64>,
    svr: Cell<u64>,
    msr_writes: RefCell<Vec<(u32, u64)>>,
    eois: Cell<u32>,
    /// The BAR the handlers acknowledge edu at, once installed.
    handlers: Cell<Option<u64>>,
    record: Cell<HandlerRecord>,
    halts: Cell<u32>,
    /// `sti; nop; cli` windows opened.
    windows: Cell<u32>,
    /// TSC ticks one HLT sleeps.
    halt_ticks: u64,
    /// HLTs that end with nothing delivered before delivery starts (Lazaret resuming the guest).
    quiet_halts: Cell<u32>,
    /// Whether edu's 100 ms DMA timer fires while the CPU sleeps.
    timer_in_hlt: bool,
    delivery: Delivery,
    stamps: RefCell<Vec<(u64, u8)>>,
    stamp_result: u64,
    /// Lazaret's own virtual bus in front of `cfg` (and the real function it virtualises):
    /// then the ports go through it, and so does the MSI the fake delivers.
    vbus: Option<(RefCell<VirtualBus>, Sbdf)>,
}

/// What the guest did to its device's interrupts, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    /// MSI Enable written as 1 with this Message Address and Data.
    MsiOn { address: u64, data: u16 },
    /// A write to edu's IRQ_RAISE (0x60).
    Raise,
}

/// What the fake Lazaret does with edu's MSI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Delivery {
    /// Injects the vector of the guest's MSI data.
    Msi,
    /// Never injects anything.
    Lost,
    /// Injects this vector instead.
    Misrouted(u8),
    /// Injects the guest's vector twice per MSI.
    Twice,
}

/// MSI Message Control bits as bits of the capability's first dword (PCI 3.0 §6.8.1.3).
const MSI_ENABLE: u32 = 1 << 16;
const MSI_MME: u32 = 0b111 << 20;
const MSI_64: u32 = 1 << 23;
const MSI_MASKING: u32 = 1 << 24;
/// IA32_APIC_BASE EN (11) and EXTD (10); SVR APIC software enable (8).
const APIC_EN: u64 = 1 << 11;
const APIC_EXTD: u64 = 1 << 10;
const APIC_SW_ENABLE: u64 = 1 << 8;

/// edu's registers, with a watchdog: an unbounded poll panics instead of hanging the test.
struct Watched<'a>(&'a SimEdu<'a>, &'a Cell<u64>, &'a RefCell<Vec<Event>>);

impl Watched<'_> {
    fn tick(&self) {
        self.1.set(self.1.get() + 1);
        assert!(self.1.get() < 100_000, "edu polled without bound");
    }
}

impl Mmio for Watched<'_> {
    fn read32(&self, offset: usize) -> u32 {
        self.tick();
        self.0.read32(offset)
    }
    fn write32(&self, offset: usize, value: u32) {
        if offset == lazaret_edu::regs::IRQ_RAISE {
            self.2.borrow_mut().push(Event::Raise);
        }
        self.0.write32(offset, value)
    }
    fn read64(&self, offset: usize) -> u64 {
        self.tick();
        self.0.read64(offset)
    }
    fn write64(&self, offset: usize, value: u64) {
        self.0.write64(offset, value)
    }
}

impl<'a> Platform for Fake<'a> {
    type Bar = Watched<'a>;

    /// CONFIG_ADDRESS (PCI Local Bus 3.0 §3.2.2.3.2): bit 31 enable, 23:16 bus, 15:11
    /// device, 10:8 function, 7:2 register.
    fn outl(&self, port: u16, value: u32) {
        if let Some((bus, _)) = &self.vbus {
            assert!(port == 0xcf8 || port == 0xcfc, "outl to port {port:#x}");
            return bus.borrow_mut().port_write(&self.cfg, port, 4, value);
        }
        match port {
            0xcf8 => self.address.set(value),
            0xcfc => {
                if let Some((at, offset)) = self.selected() {
                    match self.msi_register(at, offset) {
                        Some(rel) => self.write_msi(at, rel, value),
                        None => self.cfg.write32(at, offset, value),
                    }
                }
            }
            _ => panic!("outl to port {port:#x}"),
        }
    }

    fn inl(&self, port: u16) -> u32 {
        if let Some((bus, _)) = &self.vbus {
            assert!(port == 0xcf8 || port == 0xcfc, "inl from port {port:#x}");
            return bus.borrow().port_read(&self.cfg, port, 4);
        }
        match port {
            0xcf8 => self.address.get(),
            0xcfc => self.selected().map_or(u32::MAX, |(at, offset)| {
                let real = self.cfg.read32(at, offset);
                match self.msi_register(at, offset) {
                    Some(0) => {
                        let mine = MSI_ENABLE | MSI_MME;
                        (real & !mine) | (self.msi_of(at)[0] & mine)
                    }
                    Some(rel) => self.msi_of(at)[usize::from(rel / 4)],
                    None => real,
                }
            }),
            _ => panic!("inl from port {port:#x}"),
        }
    }

    fn console_write(&self, bytes: &[u8]) -> u64 {
        assert!(bytes.len() <= 256);
        let text = std::str::from_utf8(bytes).expect("each call is UTF-8");
        self.lines.borrow_mut().push(text.to_string());
        0
    }

    fn rdtsc(&self) -> u64 {
        let t = self.tsc.get();
        self.tsc.set(t + self.tsc_step);
        t
    }

    fn bar(&self, gpa: u64) -> Self::Bar {
        self.bars.borrow_mut().push(gpa);
        Watched(self.edu, self.edu_reads, self.events)
    }

    fn forbidden_read32(&self, gpa: u64) -> u32 {
        self.forbidden.borrow_mut().push(gpa);
        0xdead_beef
    }

    fn read_ram(&self, gpa: u64, buf: &mut [u8]) {
        assert!(
            gpa + buf.len() as u64 <= MEMORY,
            "read outside RAM at {gpa:#x}"
        );
        self.ram.read_bytes(PhysAddr(gpa), buf);
    }

    fn write_ram(&self, gpa: u64, data: &[u8]) {
        assert!(gpa >= IMAGE_BASE_GPA || (PAGE_TABLES_GPA..STACK_BOTTOM_GPA).contains(&gpa));
        assert!(
            gpa + data.len() as u64 <= MEMORY,
            "write outside RAM at {gpa:#x}"
        );
        self.ram.write_bytes(PhysAddr(gpa), data);
    }

    fn cr3(&self) -> u64 {
        PAGE_TABLES_GPA
    }

    fn invlpg(&self, va: u64) {
        self.invlpgs.borrow_mut().push(va);
    }

    fn triple_fault(&self) {
        self.triple_faults.set(self.triple_faults.get() + 1);
    }

    fn rdmsr(&self, msr: u32) -> u64 {
        match msr {
            0x1b => self.apic_base.get(),
            0x80f => self.svr.get(),
            _ => panic!("rdmsr {msr:#x}: #GP"),
        }
    }

    fn wrmsr(&self, msr: u32, value: u64) {
        self.msr_writes.borrow_mut().push((msr, value));
        match msr {
            0x1b => {
                // SDM Vol. 3A §11.12.5: EXTD without EN is invalid, and so is disabled → x2APIC.
                let from = self.apic_base.get() & (APIC_EN | APIC_EXTD);
                let to = value & (APIC_EN | APIC_EXTD);
                assert!(to != APIC_EXTD, "EXTD without EN: #GP");
                assert!(
                    !(from == 0 && to != APIC_EN && to != 0),
                    "disabled -> x2APIC: #GP"
                );
                self.apic_base.set(value);
            }
            0x808 => assert_eq!(value, 0, "TPR"),
            0x80f => self.svr.set(value),
            0x80b => {
                assert_eq!(value, 0, "EOI takes 0");
                self.eois.set(self.eois.get() + 1);
            }
            _ => panic!("wrmsr {msr:#x}: #GP"),
        }
    }

    fn install_interrupt_handlers(&self, edu_bar: u64) {
        self.handlers.set(Some(edu_bar));
    }

    fn wait_for_interrupt(&self) {
        self.halts.set(self.halts.get() + 1);
        self.tsc.set(self.tsc.get() + self.halt_ticks);
        if self.quiet_halts.get() > 0 {
            self.quiet_halts.set(self.quiet_halts.get() - 1);
            return;
        }
        if self.timer_in_hlt && self.edu.dma_pending() {
            self.edu.fire_timer();
        }
        self.deliver_pending();
    }

    fn interrupt_window(&self) {
        self.windows.set(self.windows.get() + 1);
        self.tsc.set(self.tsc.get() + self.halt_ticks);
        self.deliver_pending();
    }

    fn handler_record(&self) -> HandlerRecord {
        self.record.get()
    }

    fn interrupt_stamp(&self, tsc: u64, vector: u8) -> u64 {
        self.stamps.borrow_mut().push((tsc, vector));
        self.stamp_result
    }
}

impl Fake<'_> {
    /// Lazaret's delivery of whatever edu has raised, when the guest can take it.
    fn deliver_pending(&self) {
        let raised = self.edu.registers().get(lazaret_edu::regs::IRQ_STATUS) != 0;
        let Some((enabled, address, data)) = self.guest_msi() else {
            return;
        };
        let apic_on = self.apic_base.get() & (APIC_EN | APIC_EXTD) == APIC_EN | APIC_EXTD
            && self.svr.get() & APIC_SW_ENABLE != 0;
        if !(raised && enabled && address >> 20 == 0xfee && apic_on) {
            return;
        }
        let Some(bar) = self.handlers.get() else {
            panic!("interrupt with no IDT: the guest would triple-fault");
        };
        let vector = data as u8;
        match self.delivery {
            Delivery::Msi => self.handler(vector, bar),
            Delivery::Lost => {}
            Delivery::Misrouted(v) => self.handler(v, bar),
            Delivery::Twice => {
                self.handler(vector, bar);
                self.handler(vector, bar);
            }
        }
    }

    fn selected(&self) -> Option<(Sbdf, u16)> {
        let a = self.address.get();
        if a & (1 << 31) == 0 {
            return None;
        }
        let bdf = Bdf::new(
            (a >> 16) as u8,
            ((a >> 11) & 0x1f) as u8,
            ((a >> 8) & 7) as u8,
        )?;
        Some((Sbdf::new(0, bdf), (a & 0xfc) as u16))
    }

    fn text(&self) -> String {
        self.lines.borrow().concat()
    }

    /// The MSI capability's length in bytes from its real Message Control (§6.8.1).
    fn msi_len(&self, at: Sbdf) -> Option<u16> {
        let first = self.cfg.peek(at, self.msi_at)?;
        (first & 0xff == 5).then(|| {
            12 + 4 * u16::from(first & MSI_64 != 0) + 8 * u16::from(first & MSI_MASKING != 0)
        })
    }

    fn msi_register(&self, at: Sbdf, offset: u16) -> Option<u16> {
        let len = self.msi_len(at)?;
        (self.msi_at..self.msi_at + len)
            .contains(&offset)
            .then(|| offset - self.msi_at)
    }

    /// The guest-writable MSI registers, starting as the function's own values.
    fn msi_of(&self, at: Sbdf) -> [u32; 6] {
        *self.msi.borrow_mut().entry(at).or_insert_with(|| {
            std::array::from_fn(|i| self.cfg.peek(at, self.msi_at + 4 * i as u16).unwrap_or(0))
        })
    }

    fn write_msi(&self, at: Sbdf, rel: u16, value: u32) {
        self.msi_writes.borrow_mut().push((rel, value));
        // Message Address bits 1:0 are reserved and read 0 (§6.8.1.4).
        let value = if rel == 4 { value & !3 } else { value };
        let mut regs = self.msi_of(at);
        regs[usize::from(rel / 4)] = value;
        self.msi.borrow_mut().insert(at, regs);
        if rel == 0 && value & MSI_ENABLE != 0 {
            if let Some((_, address, data)) = self.guest_msi() {
                self.events
                    .borrow_mut()
                    .push(Event::MsiOn { address, data });
            }
        }
    }

    /// (enabled, address, data) of the guest's MSI on the one edu-like function with MSI.
    fn guest_msi(&self) -> Option<(bool, u64, u16)> {
        if let Some((bus, real)) = &self.vbus {
            let r = bus.borrow().msi_request(*real)?;
            return Some((r.enabled && !r.masked, r.address, r.data));
        }
        let msi = self.msi.borrow();
        let (at, regs) = msi.iter().next()?;
        let wide = self.cfg.peek(*at, self.msi_at)? & MSI_64 != 0;
        let (address, data) = if wide {
            (u64::from(regs[1]) | (u64::from(regs[2]) << 32), regs[3])
        } else {
            (u64::from(regs[1]), regs[2])
        };
        Some((regs[0] & MSI_ENABLE != 0, address, data as u16))
    }

    /// What guest/bin's stubs do: the DMA-done one reads the TSC first, counts, acks edu's
    /// interrupt status and EOIs; the other one counts and EOIs.
    fn handler(&self, vector: u8, bar: u64) {
        let mut r = self.record.get();
        if vector == lazaret_guest_abi::interrupts::DMA_DONE_VECTOR {
            r.last_tsc = self.rdtsc();
            r.dma_done += 1;
            let mapped = self.bars.borrow().first().copied();
            assert_eq!(Some(bar), mapped, "the handler acks edu at its BAR");
            let status = self.edu.read32(lazaret_edu::regs::IRQ_STATUS);
            self.edu.write32(lazaret_edu::regs::IRQ_ACK, status);
        } else {
            r.unexpected += 1;
        }
        self.record.set(r);
        self.wrmsr(0x80b, 0);
    }
}

/// edu as QEMU builds it: BAR0 and a 64-bit MSI capability without masking (`msi_init(pdev,
/// 0, 1, true, false)` in hw/misc/edu.c).
/// Its message registers and Multiple Message Enable start as someone else left them, so a
/// register the guest forgets to write shows.
fn edu_function() -> FakeFunction {
    edu_without_msi().capability(0x05, 0x0080 | (0b010 << 4), &[0x1234_5678, 1, 0x41])
}

fn edu_without_msi() -> FakeFunction {
    FakeFunction::endpoint(0x1234, 0x11e8, 0x00_ff_00).bar_mem32(0, BAR as u32, 1 << 20, false)
}

fn at(device: u8, function: u8) -> Sbdf {
    Sbdf::new(0, Bdf::new(0, device, function).unwrap())
}

/// The IOMMU of the guest's device: IOVA = gpa, guest RAM only.
fn guest_iommu(iova: u64, _write: bool) -> Option<PhysAddr> {
    (iova < MEMORY).then_some(PhysAddr(iova))
}

/// RAM as Lazaret leaves it: BootInfo, command line, and page tables with PML4[0] → PDPT,
/// PDPT[0] → a PD of 2 MiB pages for RAM, PDPT[3] → a PD mapping the MMIO window.
fn boot_ram(cmdline: &str) -> SimMemory {
    let ram = SimMemory::new();
    let info = BootInfo::new(MEMORY, cmdline.len() as u64);
    ram.write_bytes(PhysAddr(BOOT_INFO_GPA), &info.encode());
    ram.write_bytes(PhysAddr(CMDLINE_GPA), cmdline.as_bytes());
    let (pml4, pdpt, pd_ram, pd_mmio) = (0x10000, 0x11000, 0x12000, 0x13000);
    ram.write_u64(PhysAddr(pml4), pdpt | 3);
    ram.write_u64(PhysAddr(pdpt), pd_ram | 3);
    ram.write_u64(PhysAddr(pdpt + 3 * 8), pd_mmio | 3);
    for i in 0..MEMORY >> 21 {
        ram.write_u64(PhysAddr(pd_ram + i * 8), (i << 21) | 0x83);
    }
    for i in 0..MMIO_WINDOW_SIZE >> 21 {
        ram.write_u64(
            PhysAddr(pd_mmio + i * 8),
            (MMIO_WINDOW_GPA + (i << 21)) | 0x9b,
        );
    }
    ram
}

fn fake<'a>(
    ram: &'a SimMemory,
    edu: &'a SimEdu<'a>,
    functions: Vec<(Sbdf, FakeFunction)>,
) -> Fake<'a> {
    let mut cfg = FakeConfigSpace::new();
    for (a, f) in functions {
        cfg.insert(a, f);
    }
    Fake {
        cfg,
        address: Cell::new(0),
        ram,
        edu,
        edu_reads: Box::leak(Box::new(Cell::new(0))),
        events: Box::leak(Box::new(RefCell::new(Vec::new()))),
        lines: RefCell::new(Vec::new()),
        tsc: Cell::new(0x1234_5678),
        tsc_step: 1_000,
        bars: RefCell::new(Vec::new()),
        forbidden: RefCell::new(Vec::new()),
        invlpgs: RefCell::new(Vec::new()),
        triple_faults: Cell::new(0),
        msi_at: 0x40,
        msi: RefCell::new(HashMap::new()),
        msi_writes: RefCell::new(Vec::new()),
        // Reset: xAPIC mode, globally enabled, BSP; SVR 0xFF (software-disabled).
        apic_base: Cell::new(0xfee0_0000 | APIC_EN | (1 << 8)),
        svr: Cell::new(0xff),
        msr_writes: RefCell::new(Vec::new()),
        eois: Cell::new(0),
        handlers: Cell::new(None),
        record: Cell::new(HandlerRecord::default()),
        halts: Cell::new(0),
        windows: Cell::new(0),
        halt_ticks: 1_000_000,
        quiet_halts: Cell::new(0),
        timer_in_hlt: true,
        delivery: Delivery::Msi,
        stamps: RefCell::new(Vec::new()),
        stamp_result: 0,
        vbus: None,
    }
}

fn env() -> Env {
    Env {
        boot_info_gpa: BOOT_INFO_GPA,
        image_end: IMAGE_END,
    }
}

fn ram_bytes(ram: &SimMemory, gpa: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    ram.read_bytes(PhysAddr(gpa), &mut v);
    v
}

#[test]
fn good_round_trips_a_fresh_pattern_through_its_own_ram() {
    let mut seen = Vec::new();
    for tsc in [0x1111_0000u64, 0x2222_0000] {
        let ram = boot_ram("variant=good");
        let edu = SimEdu::new(&ram, guest_iommu);
        // Firmware left memory decoding on: sizing must turn it off first.
        let f = fake(&ram, &edu, vec![(at(0, 0), edu_function().command(0x0002))]);
        f.tsc.set(tsc);
        assert_eq!(run(&f, env()), GuestExit::Pass, "{}", f.text());
        assert!(f.text().contains("PASS: DMA round trip"), "{}", f.text());
        assert_eq!(*f.bars.borrow(), vec![BAR]);
        let (src, dst) = (
            IMAGE_END.next_multiple_of(0x1000),
            IMAGE_END.next_multiple_of(0x1000) + 0x1000,
        );
        let sent = ram_bytes(&ram, src, DMA_LEN);
        assert_eq!(
            ram_bytes(&ram, dst, DMA_LEN),
            sent,
            "destination holds what was sent"
        );
        assert_eq!(
            &edu.buffer()[..DMA_LEN],
            &sent[..],
            "it went through the device"
        );
        assert!(
            sent.iter().any(|b| *b != sent[0]),
            "a pattern, not a constant"
        );
        assert!(edu.blocked_accesses().is_empty());
        // Memory decoding and bus mastering on; BAR0 sized with decoding off.
        let command = f.cfg.peek(at(0, 0), 4).unwrap() as u16;
        assert_eq!(command & 0b110, 0b110);
        let sizing = f
            .cfg
            .writes()
            .into_iter()
            .find(|w| w.offset == 0x10 && w.value == u32::MAX);
        assert_eq!(
            sizing.map(|w| w.command_before & 0b10),
            Some(0),
            "decoding off while sizing"
        );
        assert_eq!(f.cfg.peek(at(0, 0), 0x10), Some(BAR as u32), "BAR restored");
        seen.push(sent);
    }
    assert_ne!(seen[0], seen[1], "the pattern is fresh per run");
}

#[test]
fn good_fails_when_the_data_does_not_come_back() {
    let ram = boot_ram("");
    let dst = IMAGE_END.next_multiple_of(0x1000) + 0x1000;
    // An IOMMU that drops the device's writes to the destination page.
    let edu = SimEdu::new(&ram, move |iova, write| {
        (!(write && iova >> 12 == dst >> 12)).then_some(PhysAddr(iova))
    });
    let f = fake(&ram, &edu, vec![(at(0, 0), edu_function())]);
    assert_eq!(run(&f, env()), GuestExit::CheckFailed);
    assert!(
        f.text().contains("2048 of 2048 bytes differ"),
        "{}",
        f.text()
    );
}

#[test]
fn a_device_that_never_completes_times_out_boundedly() {
    let ram = boot_ram("variant=good");
    let edu = SimEdu::new(&ram, guest_iommu);
    edu.set_completion(Completion::Never);
    let mut f = fake(&ram, &edu, vec![(at(0, 0), edu_function())]);
    f.tsc_step = 10_000_000;
    f.timer_in_hlt = false;
    assert_eq!(run(&f, env()), GuestExit::CheckFailed);
    assert!(
        f.text().contains("FAIL: DMA RAM->edu: no interrupt"),
        "{}",
        f.text()
    );
    assert!(f.text().contains("polling instead"), "{}", f.text());
    assert!(f.text().contains("FAIL: DMA RAM->edu from"), "{}", f.text());
    assert!(f.text().contains("did not finish"), "{}", f.text());
    // One interrupt wait and one poll, each bounded by DMA_TIMEOUT_TICKS (200 clock reads).
    let polls = f.tsc.get() / 10_000_000;
    assert!(
        polls <= 450,
        "bounded by the TSC deadline: {polls} clock reads"
    );
}

#[test]
fn no_edu_on_the_bus_is_reported_and_the_scan_is_bounded() {
    let ram = boot_ram("");
    let edu = SimEdu::new(&ram, guest_iommu);
    let other = FakeFunction::endpoint(0x8086, 0x10d3, 0x02_00_00);
    let f = fake(&ram, &edu, vec![(at(0, 0), other)]);
    assert_eq!(run(&f, env()), GuestExit::NoDevice);
    assert!(f.text().contains("no edu device on bus 0"), "{}", f.text());
    assert!(
        f.cfg.read_count() <= 32 + 2,
        "one ID read per absent slot: {}",
        f.cfg.read_count()
    );
    assert!(f.bars.borrow().is_empty());
}

#[test]
fn finds_edu_behind_other_functions_and_multi_function_devices() {
    let ram = boot_ram("");
    let edu = SimEdu::new(&ram, guest_iommu);
    let nic = FakeFunction::endpoint(0x8086, 0x10d3, 0x02_00_00);
    let mf = FakeFunction::endpoint(0x8086, 0x2922, 0x01_06_01).multi_function();
    // Header Type bit 7 means something in function 0 only (PCI 3.0 §6.2.1).
    let sibling = FakeFunction::endpoint(0x8086, 0x2930, 0x0c_05_00);
    let functions = vec![
        (at(0, 0), nic),
        (at(2, 0), mf),
        (at(2, 1), sibling),
        (at(2, 3), edu_function()),
    ];
    let f = fake(&ram, &edu, functions);
    assert_eq!(run(&f, env()), GuestExit::Pass, "{}", f.text());
    assert!(
        f.text()
            .contains("edu at 00:02.3, BAR0 0xc0100000 (1024 KiB)"),
        "{}",
        f.text()
    );
}

#[test]
fn a_bar_outside_the_mmio_window_is_refused() {
    let ram = boot_ram("");
    let edu = SimEdu::new(&ram, guest_iommu);
    let wrong = FakeFunction::endpoint(0x1234, 0x11e8, 0).bar_mem32(0, 0xfe00_0000, 1 << 20, false);
    let f = fake(&ram, &edu, vec![(at(0, 0), wrong)]);
    assert_eq!(run(&f, env()), GuestExit::NoDevice);
    assert!(f.text().contains("outside the MMIO window"), "{}", f.text());
    assert!(f.bars.borrow().is_empty(), "never touched");
    let command = f.cfg.peek(at(0, 0), 4).unwrap() as u16;
    assert_eq!(command & 0b110, 0, "left disabled");
}

#[test]
fn rogue_dma_tries_outside_its_ram_and_another_guest() {
    let ram = boot_ram(&format!("variant=rogue-dma other={OTHER_HPA:#x}"));
    let edu = SimEdu::new(&ram, guest_iommu);
    let f = fake(&ram, &edu, vec![(at(0, 0), edu_function())]);
    assert_eq!(run(&f, env()), GuestExit::RogueDmaTried, "{}", f.text());
    let blocked: Vec<u64> = edu
        .blocked_accesses()
        .iter()
        .filter(|b| b.write)
        .map(|b| b.iova)
        .collect();
    assert!(
        blocked.contains(&MEMORY),
        "DMA just past its RAM: {blocked:x?}"
    );
    assert!(
        blocked.contains(&OTHER_HPA),
        "DMA to the other guest: {blocked:x?}"
    );
    assert!(f.text().contains("another guest's memory"), "{}", f.text());
}

#[test]
fn dma_storm_keeps_faulting_until_it_is_stopped_and_says_so_if_not() {
    let ram = boot_ram("variant=dma-storm");
    let edu = SimEdu::new(&ram, guest_iommu);
    let f = fake(&ram, &edu, vec![(at(0, 0), edu_function())]);
    assert_eq!(run(&f, env()), GuestExit::RogueDmaTried, "{}", f.text());
    let storm = edu
        .blocked_accesses()
        .iter()
        .filter(|b| b.write && b.iova == MEMORY)
        .count();
    assert_eq!(
        storm,
        crate::variants::STORM_DMAS as usize,
        "every DMA just past its RAM"
    );
    assert_eq!(
        f.text().matches("storm DMA").count(),
        crate::variants::STORM_DMAS as usize
    );
    assert!(f.text().contains("still running"), "{}", f.text());
}

#[test]
fn rogue_dma_without_other_says_what_it_skipped() {
    let ram = boot_ram("variant=rogue-dma");
    let edu = SimEdu::new(&ram, guest_iommu);
    let f = fake(&ram, &edu, vec![(at(0, 0), edu_function())]);
    assert_eq!(run(&f, env()), GuestExit::RogueDmaTried);
    assert!(f.text().contains("no other= given"), "{}", f.text());
    assert_eq!(edu.blocked_accesses().len(), 1);
}

/// Walks 4-level tables (SDM vol. 3A §4.5): P = bit 0, PS = bit 7, PCD = bit 4.
fn walk(ram: &SimMemory, va: u64) -> Option<(u64, u64)> {
    let mut table = PAGE_TABLES_GPA;
    for (level, shift) in [(4, 39), (3, 30), (2, 21)] {
        let e = ram.read_u64(PhysAddr(table + ((va >> shift) & 511) * 8));
        if e & 1 == 0 {
            return None;
        }
        if level == 2 {
            assert_ne!(e & 0x80, 0, "2 MiB leaf");
            return Some(((e & 0x000f_ffff_ffe0_0000) | (va & 0x1f_ffff), e));
        }
        table = e & 0x000f_ffff_ffff_f000;
    }
    None
}

#[test]
fn rogue_mmio_reads_a_foreign_window_page_then_maps_and_reads_the_iommu() {
    for iommu in [IOMMU_HPA, 0x1_2345_0000] {
        let ram = boot_ram(&format!("variant=rogue-mmio iommu={iommu:#x}"));
        let edu = SimEdu::new(&ram, guest_iommu);
        let f = fake(&ram, &edu, vec![(at(0, 0), edu_function())]);
        assert_eq!(walk(&ram, iommu), None, "not mapped before");
        assert_eq!(run(&f, env()), GuestExit::RogueMmioSurvived);
        let reads = f.forbidden.borrow().clone();
        assert_eq!(reads.len(), 2, "{reads:x?}");
        let foreign = reads[0];
        assert!((MMIO_WINDOW_GPA..MMIO_WINDOW_GPA + MMIO_WINDOW_SIZE).contains(&foreign));
        assert!(
            !(BAR..BAR + (1 << 20)).contains(&foreign),
            "not its own BAR"
        );
        assert_eq!(reads[1], iommu);
        let (pa, entry) = walk(&ram, iommu).expect("mapped for the read");
        assert_eq!(pa, iommu, "identity");
        assert_ne!(entry & 0x10, 0, "uncached");
        assert_eq!(*f.invlpgs.borrow(), vec![iommu]);
        assert!(f.text().contains("FAIL: survived reading"), "{}", f.text());
    }
}

#[test]
fn rogue_mmio_picks_a_window_page_past_a_bar_at_the_window_start() {
    let ram = boot_ram("variant=rogue-mmio");
    let edu = SimEdu::new(&ram, guest_iommu);
    let first = FakeFunction::endpoint(0x1234, 0x11e8, 0).bar_mem32(
        0,
        MMIO_WINDOW_GPA as u32,
        1 << 20,
        false,
    );
    let f = fake(&ram, &edu, vec![(at(0, 0), first)]);
    assert_eq!(run(&f, env()), GuestExit::RogueMmioSurvived);
    assert_eq!(*f.forbidden.borrow(), vec![MMIO_WINDOW_GPA + (1 << 20)]);
    assert!(f.text().contains("no iommu= given"), "{}", f.text());
}

#[test]
fn crash_triple_faults_and_reports_surviving() {
    let ram = boot_ram("variant=crash");
    let edu = SimEdu::new(&ram, guest_iommu);
    let f = fake(&ram, &edu, vec![]);
    assert_eq!(run(&f, env()), GuestExit::CrashSurvived);
    assert_eq!(f.triple_faults.get(), 1);
    assert!(f.text().contains("FAIL: survived a triple fault"));
}

#[test]
fn bad_boot_info_and_command_lines_are_reported() {
    for (cmdline, says) in [
        ("variant=evil", "bad value \"evil\""),
        ("speed=11", "unknown command line key"),
        ("\u{ff}", ""),
    ] {
        let ram = boot_ram(cmdline);
        let edu = SimEdu::new(&ram, guest_iommu);
        let f = fake(&ram, &edu, vec![(at(0, 0), edu_function())]);
        assert_eq!(run(&f, env()), GuestExit::BadBoot, "{cmdline}");
        assert!(f.text().contains(says), "{}", f.text());
        assert!(f.bars.borrow().is_empty());
    }
    let ram = boot_ram("");
    ram.write_bytes(PhysAddr(CMDLINE_GPA), &[0xff]);
    let edu = SimEdu::new(&ram, guest_iommu);
    let f = fake(&ram, &edu, vec![]);
    let bad_len = BootInfo {
        cmdline_len: 1,
        ..BootInfo::new(MEMORY, 1)
    };
    ram.write_bytes(PhysAddr(BOOT_INFO_GPA), &bad_len.encode());
    assert_eq!(run(&f, env()), GuestExit::BadBoot);
    assert!(f.text().contains("not UTF-8"), "{}", f.text());
    ram.write_bytes(PhysAddr(BOOT_INFO_GPA), b"garbage!");
    assert_eq!(run(&f, env()), GuestExit::BadBoot);
    assert!(f.text().contains("magic"), "{}", f.text());
    let moved = Env {
        boot_info_gpa: 0,
        ..env()
    };
    assert_eq!(run(&f, moved), GuestExit::BadBoot);
}

#[test]
fn console_sends_one_call_per_line_and_splits_long_ones_on_char_boundaries() {
    let ram = boot_ram("");
    let edu = SimEdu::new(&ram, guest_iommu);
    let f = fake(&ram, &edu, vec![]);
    {
        let mut con = Console::new(&f);
        let _ = writeln!(con, "short");
        let _ = write!(con, "{}", "é".repeat(200));
        con.flush();
        let _ = write!(con, "{}", "x".repeat(300));
    }
    let lines = f.lines.borrow();
    assert_eq!(lines[0], "short\n");
    assert!(lines[1..].iter().all(|l| l.len() <= 256));
    assert_eq!(lines[1..].concat(), "é".repeat(200) + &"x".repeat(300));
}
