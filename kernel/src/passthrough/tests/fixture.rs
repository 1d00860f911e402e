//! The simulated machine every test runs on: one VT-d unit (`SimVtd`, 4-level tables) with
//! INCLUDE_PCI_ALL on segment 0, its simulated RAM, a frame allocator over a large window,
//! and the device lock around the core's state.
use crate::passthrough::DeviceKind;
use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

use lazaret_types::poll::StepClock;
use lazaret_types::sim::{SimFrameAllocator, SimMemory};
use lazaret_types::{Bdf, FrameAllocator, Mmio, PhysAddr, PhysMem, Sbdf, PAGE_SIZE};
use lazaret_vtd::regs::RTADDR;
use lazaret_vtd::sim_device::{SimRef, SimVtd};
use lazaret_vtd::ContextEntry;

use crate::cmdline::QuarantineMode;
use crate::domain::DomainId;
use crate::iommu::vtd::{UnitConfig, VtdIommu};
use crate::passthrough::iommu::ReservedRange;
use crate::passthrough::{self, DeviceLock, DevicesGuard};

pub type Unit<'a> = VtdIommu<'a, SimMemory, Regs<'a>, StepClock>;

/// The simulated unit's registers. What the simulator does in reaction to an access —
/// consume the queue, update its caches, log the access — is the hardware, not the code
/// under test, so it is left out of heap-allocation counts; everything the core and the
/// driver do is counted.
pub struct Regs<'a>(pub SimRef<'a>);

impl Mmio for Regs<'_> {
    fn read32(&self, o: usize) -> u32 {
        crate::mm::heap::counting::uncounted(|| self.0.read32(o))
    }
    fn write32(&self, o: usize, v: u32) {
        crate::mm::heap::counting::uncounted(|| self.0.write32(o, v))
    }
    fn read64(&self, o: usize) -> u64 {
        crate::mm::heap::counting::uncounted(|| self.0.read64(o))
    }
    fn write64(&self, o: usize, v: u64) {
        crate::mm::heap::counting::uncounted(|| self.0.write64(o, v))
    }
}
pub type Lock<'a> = DeviceLock<Unit<'a>>;
pub type Guard<'g, 'a> = DevicesGuard<'g, Unit<'a>>;

/// Where the allocator's window starts, and how many frames it holds (plenty: tests that
/// need exhaustion inject it).
const WINDOW: PhysAddr = PhysAddr(0x100_0000);
const WINDOW_FRAMES: u64 = 1 << 16;

pub fn new_alloc(sim: &SimVtd) -> SimFrameAllocator<'_> {
    SimFrameAllocator::new(&sim.mem, WINDOW, WINDOW_FRAMES)
}

/// Brings the unit up (root table, queued invalidation, translation on) under the lock.
pub fn new_lock<'a>(
    sim: &'a SimVtd,
    alloc: &mut SimFrameAllocator<'a>,
    mode: QuarantineMode,
) -> Lock<'a> {
    let iommu = VtdIommu::new(
        &*sim.mem,
        &lazaret_vtd::Coherent,
        StepClock::default(),
        vec![unit_config(sim)],
        BTreeMap::new(),
        alloc,
    )
    .unwrap();
    DeviceLock::new(iommu, mode)
}

/// The simulated unit as the kernel finds it: INCLUDE_PCI_ALL on segment 0.
pub fn unit_config(sim: &SimVtd) -> UnitConfig<Regs<'_>> {
    UnitConfig {
        regs: Regs(sim.mmio()),
        segment: 0,
        register_base: PhysAddr(0xfed9_0000),
        window_bytes: 0x1000,
        include_all: true,
    }
}

pub fn bdf(bus: u8, dev: u8, func: u8) -> Bdf {
    Bdf::new(bus, dev, func).unwrap()
}

pub fn sbdf(bus: u8, dev: u8, func: u8) -> Sbdf {
    Sbdf::new(0, bdf(bus, dev, func))
}

/// An RMRR far above every guest's memory (4 GiB), two pages.
pub const HIGH_RMRR: ReservedRange = ReservedRange::read_write(0x1_0000_0000, 0x1_0000_1fff);
/// An RMRR at guest-physical page 8: inside a guest of more than 8 pages.
pub const LOW_RMRR: ReservedRange = ReservedRange::read_write(0x8000, 0x8fff);

/// A device as the tests register it.
#[derive(Clone, Debug)]
pub struct Dev {
    pub sbdf: Sbdf,
    pub rids: Vec<Bdf>,
    pub reserved: Vec<ReservedRange>,
}

/// The cast: index → device.
/// 0: 00:01.0 plain PCIe endpoint; 1: 00:03.0 with the high RMRR; 2: 00:04.0 with phantom
/// function 00:04.1; 3 and 4: conventional PCI 02:03.0 / 02:04.0 behind PCIe-to-PCI bridge
/// 01:00.0, both aliased to (01:00.0, 02:00.0); 5: 00:05.0 with the low RMRR.
pub fn cast(i: usize) -> Dev {
    let bridge = [bdf(1, 0, 0), bdf(2, 0, 0)];
    let (sbdf, rids, reserved) = match i {
        0 => (sbdf(0, 1, 0), vec![bdf(0, 1, 0)], vec![]),
        1 => (sbdf(0, 3, 0), vec![bdf(0, 3, 0)], vec![HIGH_RMRR]),
        2 => (sbdf(0, 4, 0), vec![bdf(0, 4, 0), bdf(0, 4, 1)], vec![]),
        3 => (
            sbdf(2, 3, 0),
            vec![bdf(2, 3, 0), bridge[0], bridge[1]],
            vec![],
        ),
        4 => (
            sbdf(2, 4, 0),
            vec![bdf(2, 4, 0), bridge[0], bridge[1]],
            vec![],
        ),
        _ => (sbdf(0, 5, 0), vec![bdf(0, 5, 0)], vec![LOW_RMRR]),
    };
    Dev {
        sbdf,
        rids,
        reserved,
    }
}

pub const CAST: usize = 6;

pub fn add(
    g: &mut Guard<'_, '_>,
    alloc: &mut SimFrameAllocator<'_>,
    d: &Dev,
) -> Result<passthrough::QuarantineInfo, passthrough::PassthroughError> {
    passthrough::add_device(
        g,
        alloc,
        d.sbdf,
        DeviceKind::PcieEndpoint,
        d.rids.clone(),
        d.reserved.clone(),
    )
}

/// Where a write DMA from `rid` to `iova` lands, as the reference walker says.
pub fn reach(g: &Guard<'_, '_>, rid: Bdf, iova: u64) -> Result<PhysAddr, alloc::string::String> {
    g.state().translate(sbdf_of(rid), iova, true)
}

/// IOVAs every check samples: the first pages, a guest page beyond small guests, the low
/// RMRR, the high RMRR, and the last page below 2^48.
pub const SAMPLES: [u64; 8] = [
    0,
    0x1000,
    0x3123,
    0x8000,
    0xf000,
    HIGH_RMRR.start,
    HIGH_RMRR.start + 0x1abc,
    (1 << 48) - PAGE_SIZE,
];

/// Everything a refused request must leave alone: every device's owner, where each of its
/// requester IDs' sample DMA lands, and the frames in use.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub owners: Vec<(Sbdf, DomainId)>,
    pub reach: Vec<(Bdf, u64, Result<PhysAddr, alloc::string::String>)>,
    pub frames_in_use: usize,
}

pub fn snapshot(g: &Guard<'_, '_>, alloc: &SimFrameAllocator<'_>) -> Snapshot {
    let s = g.state();
    let owners = s.devices.values().map(|d| (d.sbdf, d.owner)).collect();
    let reach = s
        .devices
        .values()
        .flat_map(|d| d.requester_ids.iter().copied())
        .flat_map(|rid| SAMPLES.iter().map(move |&iova| (rid, iova)))
        .map(|(rid, iova)| (rid, iova, self::reach(g, rid, iova)))
        .collect();
    Snapshot {
        owners,
        reach,
        frames_in_use: alloc.frames_in_use(),
    }
}

/// The context entry the unit holds for `rid`, decoded from simulated RAM through the root
/// table the hardware was given (RTADDR, §10.4.6; root entry §9.1, context entry §9.3).
pub fn context_entry(sim: &SimVtd, rid: Bdf) -> ContextEntry {
    let root = sim.regs.get(RTADDR) & !0xfff;
    let root_entry = sim.mem.read_u64(PhysAddr(root + u64::from(rid.bus()) * 16));
    assert_eq!(
        root_entry & 1,
        1,
        "root entry of bus {:#x} present",
        rid.bus()
    );
    let table = root_entry & !0xfff;
    ContextEntry::decode(
        sim.mem
            .read_u128(PhysAddr(table + u64::from(rid.devfn()) * 16)),
    )
}

/// Makes `rid`'s context entry one the core never wrote: sets a reserved bit of its high
/// quadword (VT-d §9.3, bits 127:88 are reserved) that no decoded entry reproduces, so the
/// core's atomic exchange finds an unexpected value and the switch fails.
pub fn corrupt_context_entry(sim: &SimVtd, rid: Bdf) {
    let root = sim.regs.get(RTADDR) & !0xfff;
    let table = sim.mem.read_u64(PhysAddr(root + u64::from(rid.bus()) * 16)) & !0xfff;
    let high = PhysAddr(table + u64::from(rid.devfn()) * 16 + 8);
    sim.mem.write_u64(high, sim.mem.read_u64(high) | 1 << 63);
}

/// Whether the 4 KiB page at `page` holds only zeros.
pub fn page_is_zero(mem: &SimMemory, page: PhysAddr) -> bool {
    let mut buf = [0u8; PAGE_SIZE as usize];
    mem.read_bytes(page, &mut buf);
    buf.iter().all(|b| *b == 0)
}

pub fn sbdf_of(rid: Bdf) -> Sbdf {
    Sbdf::new(0, rid)
}

/// The page [`reach`] lands in.
pub fn reach_page(
    g: &Guard<'_, '_>,
    rid: Bdf,
    iova: u64,
) -> Result<PhysAddr, alloc::string::String> {
    reach(g, rid, iova).map(|a| PhysAddr(a.0 & !(PAGE_SIZE - 1)))
}

/// A unit that supports only 3-level tables (SAGAW bit 1, MGAW 39) and/or sets caching mode
/// (CAP.CM, bit 7), from the simulator's default capabilities (§10.4.2).
pub fn sim_with(three_levels: bool, caching_mode: bool) -> SimVtd {
    use lazaret_vtd::sim_device::{DEFAULT_CAP, DEFAULT_ECAP};
    let sagaw_mgaw = (0x1f << 8) | (0x3f << 16);
    let mut cap = DEFAULT_CAP;
    if three_levels {
        cap = (cap & !sagaw_mgaw) | (0b0010 << 8) | (38 << 16);
    }
    if caching_mode {
        cap |= 1 << 7;
    }
    SimVtd::with_caps(cap, DEFAULT_ECAP)
}
