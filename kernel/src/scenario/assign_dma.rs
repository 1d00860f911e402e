//! `scenario=assign-dma`: a guest made of host frames (no vCPU yet) gets an edu device. Its
//! DMA lands in the guest's memory at the right offset; deassign returns the device to its
//! scratch page; deassign and destroy allocate nothing.
use alloc::vec;

use lazaret_types::{FrameAllocator, PhysMem, PAGE_SIZE};

use super::checks::Checks;
use super::edu;
use super::quarantine_dma::{pattern, DMA_LEN};
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
            checks.check("create-domain", false, format_args!("{e}"));
            return;
        }
    };
    checks.check(
        "create-domain",
        true,
        format_args!("guest-1 = {dom:?} with {GUEST_PAGES} pages of host memory"),
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
    let expected = pattern(0x42);
    DIRECT_MAP.write_bytes(source, &expected);
    let target_page = target.align_down();
    DIRECT_MAP.zero(target_page, PAGE_SIZE);

    let assigned = passthrough::assign(&mut g, &mut hv.frames, dom, d.sbdf);
    checks.check(
        "assign",
        assigned.is_ok(),
        format_args!("{} -> {dom:?}: {:?}", d.sbdf, assigned),
    );
    if let Ok(r) = &assigned {
        r.cost.report("assign");
    }
    let walks = g.state().translate(d.sbdf, TARGET_GPA, true);
    checks.check(
        "assign-walk",
        walks == Ok(target),
        format_args!("gpa {TARGET_GPA:#x} walks to {walks:?}, expected {target}"),
    );
    let scratch = g.state().scratch_page(d.sbdf);
    drop(g);

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
        buf.iter().all(|b| *b == 0)
    });
    checks.check(
        "assign-dma",
        read.is_ok() && write.is_ok() && landed && rest_untouched && scratch_clean,
        format_args!(
            "{}: read gpa {SOURCE_GPA:#x}, wrote {TARGET_LEN:#x} bytes at gpa {TARGET_GPA:#x}: landed {landed}, rest of page untouched {rest_untouched}, scratch page untouched {scratch_clean} ({:?}/{:?})",
            d.sbdf,
            read.err(),
            write.err()
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
    checks.check(
        "deassign",
        deassigned.is_ok() && during_deassign == 0,
        format_args!(
            "{} back to DomIO: {:?}, {during_deassign} frame(s) allocated",
            d.sbdf, deassigned
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
        format_args!("{}: after deassign the same DMA lands in its scratch page {in_scratch}, guest memory untouched {guest_untouched}", d.sbdf),
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
            "{dom:?} destroyed: {destroyed:?}; {during_destroy} frame(s) allocated; frames in use {frames_before} before, {frames_after} after"
        ),
    );
}
