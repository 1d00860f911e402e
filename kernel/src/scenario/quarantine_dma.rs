//! `scenario=quarantine-dma`: real DMA from every edu device while it sits in quarantine.
//!
//! Scratch mode: whatever IOVA a device uses, its reads come from and its writes go to its
//! own scratch page — never a sentinel page, never another device's scratch page — and after
//! a trip through a guest and back the page reads as zeros. Basic / none: DMA faults, the
//! fault names the device and the address, and Lazaret keeps running.
use alloc::vec;
use alloc::vec::Vec;

use lazaret_types::{FrameAllocator, PhysAddr, PhysMem, PAGE_SIZE};

use super::checks::Checks;
use super::edu::{self, EduDevice};
use crate::cmdline::QuarantineMode;
use crate::hypervisor::Hypervisor;
use crate::mm::direct_map::DIRECT_MAP;
use crate::passthrough::iommu::Inspect;
use crate::passthrough::{self, drain_faults};

/// IOVAs the devices use: page 0, a low page, the last page below the edu's 28-bit mask, and
/// one in the middle.
pub const IOVAS: [u64; 4] = [0, 0x7000, 0x0fff_f000, 0x0123_4000];

const PAGE: usize = PAGE_SIZE as usize;
/// Bytes per DMA: QEMU 7.2's edu refuses a transfer that reaches the last byte of its 4 KiB
/// buffer, so a full page cannot move in one DMA.
pub const DMA_LEN: usize = 2048;

pub fn pattern(seed: u8) -> Vec<u8> {
    (0..PAGE)
        .map(|i| seed.wrapping_mul(37) ^ (i as u8).wrapping_add((i >> 8) as u8))
        .collect()
}

fn read_page(addr: PhysAddr) -> Vec<u8> {
    let mut buf = vec![0u8; PAGE];
    DIRECT_MAP.read_bytes(addr, &mut buf);
    buf
}

/// Frames filled with a known byte: DMA that escaped its page would change them.
struct Sentinels(Vec<PhysAddr>);

impl Sentinels {
    fn new<V: Inspect>(hv: &mut Hypervisor<V>, count: usize) -> Sentinels {
        let frames: Vec<PhysAddr> = (0..count).filter_map(|_| hv.frames.alloc_frame()).collect();
        for f in &frames {
            DIRECT_MAP.write_bytes(*f, &[0x5a; PAGE]);
        }
        Sentinels(frames)
    }

    fn intact(&self) -> bool {
        self.0
            .iter()
            .all(|f| read_page(*f).iter().all(|b| *b == 0x5a))
    }

    fn release<V: Inspect>(self, hv: &mut Hypervisor<V>) {
        self.0.into_iter().for_each(|f| hv.frames.free_frame(f));
    }
}

pub fn run<V: Inspect>(hv: &mut Hypervisor<V>, checks: &mut Checks) {
    let devices = edu::find(hv);
    if !checks.check(
        "edu-devices",
        !devices.is_empty(),
        format_args!("{} edu device(s) probed", devices.len()),
    ) {
        return;
    }
    if hv.passthrough.is_none() {
        checks.check(
            "iommu",
            false,
            format_args!("no IOMMU: nothing quarantines these devices"),
        );
        return;
    }
    match hv.options.quarantine {
        QuarantineMode::Scratch => scratch(hv, &devices, checks),
        QuarantineMode::Basic | QuarantineMode::None => faulting(hv, &devices, checks),
    }
}

fn scratch<V: Inspect>(hv: &mut Hypervisor<V>, devices: &[EduDevice], checks: &mut Checks) {
    let sentinels = Sentinels::new(hv, 8);
    let Some(lock) = hv.passthrough.as_ref() else {
        return;
    };
    let scratch: Vec<Option<PhysAddr>> = {
        let g = lock.lock();
        devices
            .iter()
            .map(|d| g.state().scratch_page(d.sbdf))
            .collect()
    };
    let mut dmas = 0;
    for (i, d) in devices.iter().enumerate() {
        let Some(page) = scratch[i] else {
            checks.check(
                "scratch-page",
                false,
                format_args!("{} has no scratch page", d.sbdf),
            );
            continue;
        };
        let walks_ok = {
            let g = lock.lock();
            IOVAS.iter().all(|iova| {
                [false, true]
                    .iter()
                    .all(|w| g.state().translate(d.sbdf, *iova, *w) == Ok(page))
            })
        };
        checks.check(
            "scratch-walk",
            walks_ok,
            format_args!(
                "{}: every IOVA walks to its scratch page {page} (reference walker)",
                d.sbdf
            ),
        );
        let expected = pattern(i as u8 + 1);
        for (k, iova) in IOVAS.iter().enumerate() {
            let out_iova = IOVAS[(k + 1) % IOVAS.len()];
            // The device reads its scratch page (holding the pattern) at one IOVA, the page is
            // wiped, and the device writes what it read back at another IOVA.
            let others = |scratch: &[Option<PhysAddr>]| -> Vec<Vec<u8>> {
                scratch
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .filter_map(|(_, p)| p.map(read_page))
                    .collect()
            };
            let others_before = others(&scratch);
            DIRECT_MAP.write_bytes(page, &expected);
            let read = d.edu.dma_from_ram(*iova, 0, DMA_LEN, edu::deadline());
            DIRECT_MAP.zero(page, PAGE_SIZE);
            let write = d.edu.dma_to_ram(out_iova, 0, DMA_LEN, edu::deadline());
            dmas += 2;
            let now = read_page(page);
            let landed =
                now[..DMA_LEN] == expected[..DMA_LEN] && now[DMA_LEN..].iter().all(|b| *b == 0);
            let others_clean = others(&scratch) == others_before;
            checks.check(
                "scratch-dma",
                read.is_ok() && write.is_ok() && landed && others_clean && sentinels.intact(),
                format_args!(
                    "{} read at {iova:#x}, wrote at {out_iova:#x}: {} (dma {:?}/{:?}, other scratch pages untouched {others_clean}, sentinels intact {})",
                    d.sbdf,
                    if landed { "landed in its own scratch page" } else { "did NOT land in its scratch page" },
                    read.err(),
                    write.err(),
                    sentinels.intact()
                ),
            );
        }
    }
    crate::console::figure("quarantine-dma-transfers", dmas, "dma");
    requarantine_reads_zero(hv, &devices[0], checks);
    sentinels.release(hv);
}

/// After a trip through a guest, the device's reads in quarantine return zeros.
fn requarantine_reads_zero<V: Inspect>(hv: &mut Hypervisor<V>, d: &EduDevice, checks: &mut Checks) {
    let Some(lock) = hv.passthrough.as_ref() else {
        return;
    };
    let mut g = lock.lock();
    let outcome =
        passthrough::create_domain(&mut g, &mut hv.frames, "requarantine", 4).and_then(|dom| {
            passthrough::assign(&mut g, &mut hv.frames, dom, d.sbdf)?;
            passthrough::deassign(&mut g, dom, d.sbdf)?;
            passthrough::destroy_domain(&mut g, &mut hv.frames, dom)?;
            Ok(())
        });
    let page = g.state().scratch_page(d.sbdf);
    drop(g);
    let Some(page) = page else { return };
    let read = d.edu.dma_from_ram(0x2000, 0, DMA_LEN, edu::deadline());
    let write = d.edu.dma_to_ram(0x3000, 0, DMA_LEN, edu::deadline());
    let zero = read_page(page).iter().all(|b| *b == 0);
    checks.check(
        "requarantine-zero",
        outcome.is_ok() && read.is_ok() && write.is_ok() && zero,
        format_args!(
            "{}: back from a guest, reads in quarantine return zeros ({outcome:?})",
            d.sbdf
        ),
    );
}

fn faulting<V: Inspect>(hv: &mut Hypervisor<V>, devices: &[EduDevice], checks: &mut Checks) {
    let sentinels = Sentinels::new(hv, 8);
    let Some(lock) = hv.passthrough.as_ref() else {
        return;
    };
    {
        // Faults left over from boot are not this scenario's.
        let mut g = lock.lock();
        drain_faults(&mut g, edu::now_ms(), &mut |_| false);
    }
    for d in devices {
        for (write, iova) in [(true, 0x0123_4000u64), (false, 0x7000)] {
            let dma = if write {
                d.edu.dma_to_ram(iova, 0, DMA_LEN, edu::deadline())
            } else {
                d.edu.dma_from_ram(iova, 0, DMA_LEN, edu::deadline())
            };
            let report = {
                let mut g = lock.lock();
                drain_faults(&mut g, edu::now_ms(), &mut |_| false)
            };
            let found = report
                .recorded
                .iter()
                .any(|f| f.requester == d.sbdf.bdf && f.address == iova && f.write == write);
            let what = if write { "write" } else { "read" };
            checks.check(
                "dma-blocked",
                dma.is_ok() && sentinels.intact(),
                format_args!(
                    "{} {what} at {iova:#x}: reached no memory (dma {:?}, sentinels intact {})",
                    d.sbdf,
                    dma.err(),
                    sentinels.intact()
                ),
            );
            checks.check(
                "dma-fault",
                found,
                format_args!(
                    "{} {what} at {iova:#x}: {} ({} fault(s) drained)",
                    d.sbdf,
                    if found {
                        "fault recorded with the right device, direction and address"
                    } else {
                        "no matching fault recorded"
                    },
                    report.faults
                ),
            );
        }
    }
    sentinels.release(hv);
}
