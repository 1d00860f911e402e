//! `scenario=quarantine-dma`: real DMA from every edu device while it sits in quarantine.
//!
//! Scratch mode: whatever IOVA a device uses, its reads come from and its writes go to its
//! own scratch page — never a watched frame, never another device's scratch page — and after
//! a trip through a guest and back the page reads as zeros. A function in an alias group
//! (behind a PCIe-to-PCI bridge) DMAs with the group's shared requester ID: its DMA lands in
//! the group leader's scratch page instead, and its own page stays untouched. Basic / none: DMA reaches no
//! memory, the fault names the device and the address, and Lazaret keeps running.
//!
//! Every check reads what the hardware did: the pattern a read-direction DMA fetched is new
//! each time (a DMA that silently did nothing cannot pass on old bytes), and one IOVA of each
//! device is the physical address of a watched frame, so an identity or bypass mapping (QEMU
//! 10.0's amd-iommu with `pt=on`) lands there and fails the check.
use alloc::vec::Vec;

use lazaret_types::{PhysAddr, PhysMem, PAGE_SIZE};

use super::checks::{Checks, Dma, Outcome, YesNo};
use super::edu::{self, EduDevice};
use super::groups;
use super::memory::{fresh_pattern, read_page, Watched};
use crate::cmdline::QuarantineMode;
use crate::hypervisor::Hypervisor;
use crate::mm::direct_map::DIRECT_MAP;
use crate::passthrough::iommu::Inspect;
use crate::passthrough::{self, drain_faults};

/// IOVAs every device uses besides a watched frame's own address: page 0, a low page, and
/// the last page below the edu's 28-bit mask.
const FIXED_IOVAS: [u64; 3] = [0, 0x7000, 0x0fff_f000];

/// Bytes per DMA: QEMU 7.2's edu refuses a transfer that reaches the last byte of its 4 KiB
/// buffer, so a full page cannot move in one DMA (10.0 accepts it).
pub const DMA_LEN: usize = 2048;

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
    if let Some(lock) = hv.passthrough.as_ref() {
        groups::check_quarantined_together(&hv.pci, lock, checks);
    }
    match hv.options.quarantine {
        QuarantineMode::Scratch => scratch(hv, &devices, checks),
        QuarantineMode::Basic | QuarantineMode::None => blocked(hv, &devices, checks),
    }
    if let Some(lock) = hv.passthrough.as_ref() {
        checks.invalidation_waits_completed(lock);
    }
}

fn scratch<V: Inspect>(hv: &mut Hypervisor<V>, devices: &[EduDevice], checks: &mut Checks) {
    // Frame 0's physical address is also an IOVA; the others are plain sentinels.
    let watched = Watched::new(hv, 8, true);
    let Some(own) = watched.address(0) else {
        checks.check(
            "watched-frames",
            false,
            format_args!("no free frame below 256 MiB to watch"),
        );
        return;
    };
    let Some(lock) = hv.passthrough.as_ref() else {
        return;
    };
    let iovas = [FIXED_IOVAS[0], FIXED_IOVAS[1], FIXED_IOVAS[2], own.0];
    let scratch: Vec<Option<PhysAddr>> = {
        let g = lock.lock();
        devices
            .iter()
            .map(|d| g.state().scratch_page(d.sbdf))
            .collect()
    };
    let mut dmas = 0;
    for d in devices {
        // The ID its DMA carries (from the topology) and whose scratch page that reaches.
        let (rid, lands_in) = groups::landing(&hv.pci, d.sbdf).unwrap_or((d.sbdf, d.sbdf));
        let Some(page) = lock.lock().state().scratch_page(lands_in) else {
            checks.check(
                "scratch-page",
                false,
                format_args!("{} has no scratch page", lands_in),
            );
            continue;
        };
        let walks_ok = {
            let g = lock.lock();
            iovas.iter().all(|iova| {
                [false, true]
                    .iter()
                    .all(|w| g.state().translate(rid, *iova, *w) == Ok(page))
            })
        };
        let whose = if lands_in == d.sbdf {
            alloc::format!("its scratch page {page}")
        } else {
            alloc::format!("its group leader {lands_in}'s scratch page {page}")
        };
        checks.check(
            "scratch-walk",
            walks_ok,
            format_args!(
                "{} (DMA as {}): every IOVA {} to {whose} (reference walker)",
                d.sbdf,
                rid.bdf,
                if walks_ok { "walks" } else { "does NOT walk" }
            ),
        );
        // Pages of other devices (an alias group shares one page: that one is its own).
        let others = || -> Vec<Vec<u8>> {
            scratch
                .iter()
                .flatten()
                .filter(|p| **p != page)
                .map(|p| read_page(*p))
                .collect()
        };
        for (k, iova) in iovas.iter().enumerate() {
            let out_iova = iovas[(k + 1) % iovas.len()];
            // The device reads its scratch page (holding a new pattern) at one IOVA, the page
            // is wiped, and the device writes what it read back at another IOVA.
            let others_before = others();
            let expected = fresh_pattern();
            DIRECT_MAP.write_bytes(page, &expected);
            let read = d.edu.dma_from_ram(*iova, 0, DMA_LEN, edu::deadline());
            DIRECT_MAP.zero(page, PAGE_SIZE);
            let write = d.edu.dma_to_ram(out_iova, 0, DMA_LEN, edu::deadline());
            dmas += 2;
            let now = read_page(page);
            let landed =
                now[..DMA_LEN] == expected[..DMA_LEN] && now[DMA_LEN..].iter().all(|b| *b == 0);
            let others_clean = others() == others_before;
            let intact = watched.intact();
            checks.check(
                "scratch-dma",
                read.is_ok() && write.is_ok() && landed && others_clean && intact,
                format_args!(
                    "{} read at {iova:#x} and wrote at {out_iova:#x}: the data {} {whose}; other scratch pages untouched {}; watched frames (one at physical address {own}, also used as an IOVA) untouched {}; read: {}; write: {}",
                    d.sbdf,
                    if landed { "landed in" } else { "did NOT land in" },
                    YesNo(others_clean),
                    YesNo(intact),
                    Dma(&read),
                    Dma(&write),
                ),
            );
        }
    }
    crate::console::figure("quarantine-dma-transfers", dmas, "dma");
    requarantine_reads_zero(hv, &devices[0], checks);
    watched.release(hv);
}

/// After a trip through a guest, the device's reads in quarantine return zeros: the scratch
/// page is wiped on re-entry. Before the trip the device's buffer and the page hold new
/// patterns (a skipped wipe or a read that did nothing shows); after the device's read, the
/// host puts a new pattern in the page, so the device's write must replace its first
/// `DMA_LEN` bytes with zeros (a write that went elsewhere shows too).
fn requarantine_reads_zero<V: Inspect>(hv: &mut Hypervisor<V>, d: &EduDevice, checks: &mut Checks) {
    let Some(lock) = hv.passthrough.as_ref() else {
        return;
    };
    let lands_in = groups::landing(&hv.pci, d.sbdf).map_or(d.sbdf, |(_, leader)| leader);
    let Some(page) = lock.lock().state().scratch_page(lands_in) else {
        return;
    };
    DIRECT_MAP.write_bytes(page, &fresh_pattern());
    let primed = d.edu.dma_from_ram(0x1000, 0, DMA_LEN, edu::deadline());
    DIRECT_MAP.write_bytes(page, &fresh_pattern());
    let mut g = lock.lock();
    let mut timed_out = false;
    let outcome =
        passthrough::create_domain(&mut g, &mut hv.frames, "requarantine", 4).and_then(|dom| {
            timed_out |= passthrough::assign(&mut g, &mut hv.frames, dom, d.sbdf)?
                .timed_out
                .is_some();
            timed_out |= passthrough::deassign(&mut g, dom, d.sbdf)?
                .timed_out
                .is_some();
            passthrough::destroy_domain(&mut g, &mut hv.frames, dom)?;
            Ok(())
        });
    let page_now = g.state().scratch_page(lands_in);
    drop(g);
    let wiped = page_now.is_some_and(|p| read_page(p).iter().all(|b| *b == 0));
    let read = d.edu.dma_from_ram(0x2000, 0, DMA_LEN, edu::deadline());
    let marker = fresh_pattern();
    if let Some(p) = page_now {
        DIRECT_MAP.write_bytes(p, &marker);
    }
    let write = d.edu.dma_to_ram(0x3000, 0, DMA_LEN, edu::deadline());
    let zeros_landed = page_now.is_some_and(|p| {
        let now = read_page(p);
        now[..DMA_LEN].iter().all(|b| *b == 0) && now[DMA_LEN..] == marker[DMA_LEN..]
    });
    checks.check(
        "requarantine-zero",
        primed.is_ok()
            && outcome.is_ok()
            && !timed_out
            && wiped
            && read.is_ok()
            && write.is_ok()
            && zeros_landed,
        format_args!(
            "{}: back from a guest, its scratch page is wiped {} and its reads in quarantine {} zeros (round trip through a guest: {}; invalidation waits {}; read: {}; write: {})",
            d.sbdf,
            YesNo(wiped),
            if zeros_landed { "return" } else { "do NOT return" },
            Outcome(&outcome),
            if timed_out { "TIMED OUT" } else { "completed" },
            Dma(&read),
            Dma(&write),
        ),
    );
}

/// Basic and none: every DMA is blocked. Each device writes at one watched frame's own
/// physical address and reads from another's (holding a new pattern): the written frame must
/// be unchanged, and the fault must name the device, the direction and the address.
fn blocked<V: Inspect>(hv: &mut Hypervisor<V>, devices: &[EduDevice], checks: &mut Checks) {
    let mut watched = Watched::new(hv, 2 * devices.len() + 4, true);
    if watched.len() < 2 * devices.len() {
        checks.check(
            "watched-frames",
            false,
            format_args!("too few free frames below 256 MiB to watch"),
        );
        watched.release(hv);
        return;
    }
    let Some(lock) = hv.passthrough.as_ref() else {
        return;
    };
    {
        // Faults left over from boot are not this scenario's.
        let mut g = lock.lock();
        drain_faults(&mut g, edu::now_ms(), &mut |_| false);
    }
    for (n, d) in devices.iter().enumerate() {
        for (write, frame) in [(true, 2 * n), (false, 2 * n + 1)] {
            let Some(iova) = watched.address(frame).map(|f| f.0) else {
                continue;
            };
            let dma = if write {
                d.edu.dma_to_ram(iova, 0, DMA_LEN, edu::deadline())
            } else {
                watched.refresh(frame);
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
            let own_frame = watched.frame_intact(frame);
            let intact = watched.intact();
            checks.check(
                "dma-blocked",
                dma.is_ok() && own_frame && intact,
                format_args!(
                    "{} {what} at IOVA {iova:#x}: the frame at physical address {iova:#x} unchanged {}; all watched frames unchanged {}; {}",
                    d.sbdf,
                    YesNo(own_frame),
                    YesNo(intact),
                    Dma(&dma),
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
    watched.release(hv);
}
