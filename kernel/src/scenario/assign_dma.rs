//! `scenario=assign-dma`: a guest made of host frames (no vCPU yet) gets an edu device. Its
//! DMA lands in the guest's memory at the right offset; deassign returns the device to its
//! scratch page; deassign and destroy allocate nothing; no invalidation wait times out.
use alloc::vec;

use lazaret_types::{FrameAllocator, PhysMem, PAGE_SIZE};

use super::checks::{Checks, Dma, Outcome, YesNo};
use super::edu;
use super::memory::fresh_pattern;
use super::quarantine_dma::DMA_LEN;
use crate::console::figure;
use crate::hypervisor::Hypervisor;
use crate::mm::direct_map::DIRECT_MAP;
use crate::passthrough;
use crate::passthrough::iommu::Inspect;

const PAGE: usize = PAGE_SIZE as usize;
const GUEST_PAGES: usize = 16;
/// The guest-physical page the device reads from, and where (page + offset) it writes to.
const SOURCE_GPA: u64 = 0x3000;
const TARGET_GPA: u64 = 0x5800;
const TARGET_LEN: usize = 0x400;

pub fn run<V: Inspect>(hv: &mut Hypervisor<V>, checks: &mut Checks) {
    let devices = edu::find(hv);
    let Some(d) = devices.first() else {
        checks.check("edu-devices", false, format_args!("no edu device"));
        return;
    };
    let Some(lock) = hv.passthrough.as_ref() else {
        checks.check(
            "iommu",
            false,
            format_args!("no IOMMU: devices cannot be assigned"),
        );
        return;
    };
    let frames_before = hv.frames.frames_in_use();
    let mut g = lock.lock();
    let dom = match passthrough::create_domain(&mut g, &mut hv.frames, "guest-1", GUEST_PAGES) {
        Ok(dom) => dom,
        Err(e) => {
            checks.check(
                "create-domain",
                false,
                format_args!("guest-1 could not be created: {e}"),
            );
            return;
        }
    };
    checks.check(
        "create-domain",
        true,
        format_args!("guest-1 created with {GUEST_PAGES} pages of host memory"),
    );
    let host = |gpa: u64| {
        g.state()
            .domains()
            .get(dom)
            .and_then(|d| d.memory.host_address(gpa))
    };
    let (Some(source), Some(target)) = (host(SOURCE_GPA), host(TARGET_GPA)) else {
        checks.check("guest-memory", false, format_args!("guest pages missing"));
        return;
    };
    let expected = fresh_pattern();
    DIRECT_MAP.write_bytes(source, &expected);
    let target_page = target.align_down();
    DIRECT_MAP.zero(target_page, PAGE_SIZE);

    let assigned = passthrough::assign(&mut g, &mut hv.frames, dom, d.sbdf);
    let timed_out = assigned.as_ref().is_ok_and(|c| c.timed_out.is_some());
    checks.check(
        "assign",
        assigned.is_ok() && !timed_out,
        format_args!(
            "{} given to guest-1: {}; invalidation wait {}",
            d.sbdf,
            Outcome(&assigned),
            if timed_out { "TIMED OUT" } else { "completed" }
        ),
    );
    if let Ok(r) = &assigned {
        r.cost.report("assign");
    }
    let walks = g.state().translate(d.sbdf, TARGET_GPA, true);
    checks.check(
        "assign-walk",
        walks == Ok(target),
        format_args!(
            "guest-physical {TARGET_GPA:#x} walks to {}, expected guest-1's frame {target} (reference walker)",
            match &walks {
                Ok(p) => alloc::format!("{p}"),
                Err(e) => alloc::format!("nothing ({e})"),
            }
        ),
    );
    let scratch = g.state().scratch_page(d.sbdf);
    drop(g);
    // The (now unused) scratch page gets a new pattern: a DMA that still went there shows.
    let scratch_marker = fresh_pattern();
    if let Some(s) = scratch {
        DIRECT_MAP.write_bytes(s, &scratch_marker);
    }

    let read = d.edu.dma_from_ram(SOURCE_GPA, 0, DMA_LEN, edu::deadline());
    let write = d.edu.dma_to_ram(TARGET_GPA, 0, TARGET_LEN, edu::deadline());
    let mut page = vec![0u8; PAGE];
    DIRECT_MAP.read_bytes(target_page, &mut page);
    let offset = (TARGET_GPA % PAGE_SIZE) as usize;
    let landed = page[offset..offset + TARGET_LEN] == expected[..TARGET_LEN];
    let rest_untouched = page[..offset]
        .iter()
        .chain(&page[offset + TARGET_LEN..])
        .all(|b| *b == 0);
    let scratch_clean = scratch.is_none_or(|s| {
        let mut buf = vec![0u8; PAGE];
        DIRECT_MAP.read_bytes(s, &mut buf);
        buf == scratch_marker
    });
    checks.check(
        "assign-dma",
        read.is_ok() && write.is_ok() && landed && rest_untouched && scratch_clean,
        format_args!(
            "{}: read guest-physical {SOURCE_GPA:#x}, wrote {TARGET_LEN:#x} bytes at guest-physical {TARGET_GPA:#x}: the data {} in guest-1's memory; rest of the page untouched {}; scratch page untouched {}; read: {}; write: {}",
            d.sbdf,
            if landed { "landed" } else { "did NOT land" },
            YesNo(rest_untouched),
            YesNo(scratch_clean),
            Dma(&read),
            Dma(&write),
        ),
    );

    let mut g = lock.lock();
    let allocations = hv.frames.allocations();
    let deassigned = passthrough::deassign(&mut g, dom, d.sbdf);
    let during_deassign = hv.frames.allocations() - allocations;
    figure(
        "frames-allocated-during-deassign",
        during_deassign,
        "frames",
    );
    let timed_out = deassigned.as_ref().is_ok_and(|c| c.timed_out.is_some());
    checks.check(
        "deassign",
        deassigned.is_ok() && !timed_out && during_deassign == 0,
        format_args!(
            "{} back to DomIO: {}; invalidation wait {}; {during_deassign} frame(s) allocated",
            d.sbdf,
            Outcome(&deassigned),
            if timed_out { "TIMED OUT" } else { "completed" }
        ),
    );
    if let Ok(r) = &deassigned {
        r.cost.report("deassign");
    }
    drop(g);
    DIRECT_MAP.zero(target_page, PAGE_SIZE);
    let write = d.edu.dma_to_ram(TARGET_GPA, 0, TARGET_LEN, edu::deadline());
    DIRECT_MAP.read_bytes(target_page, &mut page);
    let guest_untouched = page.iter().all(|b| *b == 0);
    let in_scratch = scratch.is_some_and(|s| {
        let mut buf = vec![0u8; PAGE];
        DIRECT_MAP.read_bytes(s, &mut buf);
        buf[offset..offset + TARGET_LEN] == expected[..TARGET_LEN]
    });
    checks.check(
        "deassign-dma",
        write.is_ok() && guest_untouched && in_scratch,
        format_args!(
            "{}: after deassign the same DMA {} its scratch page; guest memory untouched {}; {}",
            d.sbdf,
            if in_scratch {
                "lands in"
            } else {
                "does NOT land in"
            },
            YesNo(guest_untouched),
            Dma(&write)
        ),
    );

    let mut g = lock.lock();
    let allocations = hv.frames.allocations();
    let destroyed = passthrough::destroy_domain(&mut g, &mut hv.frames, dom);
    let during_destroy = hv.frames.allocations() - allocations;
    drop(g);
    let frames_after = hv.frames.frames_in_use();
    figure("frames-allocated-during-destroy", during_destroy, "frames");
    checks.check(
        "destroy",
        destroyed.is_ok() && during_destroy == 0 && frames_after == frames_before,
        format_args!(
            "guest-1 destroyed: {}; {during_destroy} frame(s) allocated; frames in use {frames_before} before, {frames_after} after",
            Outcome(&destroyed)
        ),
    );
    checks.invalidation_waits_completed(lock);
}
