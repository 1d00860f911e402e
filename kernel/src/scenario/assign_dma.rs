//! `scenario=assign-dma`: a guest made of host frames (no vCPU yet) gets an edu device — with
//! its alias group, when it sits behind a PCIe-to-PCI bridge. Each moved function's DMA lands
//! in the guest's memory at the right offset; deassign returns the group to quarantine, where
//! each function's DMA lands in its (the group leader's) scratch page; deassign and destroy
//! allocate nothing; no invalidation wait times out.
use alloc::vec::Vec;
use core::fmt;

use lazaret_types::{FrameAllocator, PhysAddr, PhysMem, Sbdf, PAGE_SIZE};

use super::checks::{Checks, Dma, Outcome, YesNo};
use super::edu::{self, EduDevice};
use super::groups;
use super::memory::{fresh_pattern, read_page};
use super::quarantine_dma::DMA_LEN;
use crate::console::figure;
use crate::hypervisor::Hypervisor;
use crate::mm::direct_map::DIRECT_MAP;
use crate::passthrough;
use crate::passthrough::iommu::Inspect;

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
    let target_page = target.align_down();

    let t0 = crate::arch::tsc::now();
    let assigned = passthrough::assign(&mut g, &mut hv.frames, dom, d.sbdf);
    switch_time("assign", t0);
    let timed_out = assigned.as_ref().is_ok_and(|c| c.timed_out.is_some());
    checks.check(
        "assign",
        assigned.is_ok() && !timed_out,
        format_args!(
            "{} given to guest-1: {}; {}; invalidation wait {}",
            d.sbdf,
            Outcome(&assigned),
            Moved(assigned.as_ref().ok()),
            if timed_out { "TIMED OUT" } else { "completed" }
        ),
    );
    if let Ok(r) = &assigned {
        r.cost.report("assign");
    }
    // The edu functions that moved (the whole alias group), each with the ID its DMA
    // carries (from the topology) and the page it lands in back in quarantine.
    let members: Vec<(&EduDevice, Sbdf, Option<PhysAddr>)> = devices
        .iter()
        .filter(|m| {
            assigned
                .as_ref()
                .map_or(m.sbdf == d.sbdf, |r| r.moved.contains(&m.sbdf))
        })
        .map(|m| {
            let (rid, lands_in) = groups::landing(&hv.pci, m.sbdf).unwrap_or((m.sbdf, m.sbdf));
            (m, rid, g.state().scratch_page(lands_in))
        })
        .collect();
    for (m, rid, _) in &members {
        let walks = g.state().translate(*rid, TARGET_GPA, true);
        checks.check(
            "assign-walk",
            walks == Ok(target),
            format_args!(
                "{} (DMA as {}): guest-physical {TARGET_GPA:#x} walks to {}, expected guest-1's frame {target} (reference walker)",
                m.sbdf,
                rid.bdf,
                match &walks {
                    Ok(p) => alloc::format!("{p}"),
                    Err(e) => alloc::format!("nothing ({e})"),
                }
            ),
        );
    }
    drop(g);

    // What each member read from the guest (its edu buffer), to find it again later.
    let mut read_back = Vec::new();
    for (m, _, scratch) in &members {
        let expected = fresh_pattern();
        DIRECT_MAP.write_bytes(source, &expected);
        DIRECT_MAP.zero(target_page, PAGE_SIZE);
        // The (now unused) scratch page gets a new pattern: a DMA that still went there shows.
        let scratch_marker = fresh_pattern();
        if let Some(s) = scratch {
            DIRECT_MAP.write_bytes(*s, &scratch_marker);
        }
        let read = m.edu.dma_from_ram(SOURCE_GPA, 0, DMA_LEN, edu::deadline());
        let write = m.edu.dma_to_ram(TARGET_GPA, 0, TARGET_LEN, edu::deadline());
        let page = read_page(target_page);
        let offset = (TARGET_GPA % PAGE_SIZE) as usize;
        let landed = page[offset..offset + TARGET_LEN] == expected[..TARGET_LEN];
        let rest_untouched = page[..offset]
            .iter()
            .chain(&page[offset + TARGET_LEN..])
            .all(|b| *b == 0);
        let scratch_clean = scratch.is_none_or(|s| read_page(s) == scratch_marker);
        checks.check(
            "assign-dma",
            read.is_ok() && write.is_ok() && landed && rest_untouched && scratch_clean,
            format_args!(
                "{}: read guest-physical {SOURCE_GPA:#x}, wrote {TARGET_LEN:#x} bytes at guest-physical {TARGET_GPA:#x}: the data {} in guest-1's memory; rest of the page untouched {}; scratch page untouched {}; read: {}; write: {}",
                m.sbdf,
                if landed { "landed" } else { "did NOT land" },
                YesNo(rest_untouched),
                YesNo(scratch_clean),
                Dma(&read),
                Dma(&write),
            ),
        );
        read_back.push(expected);
    }

    let mut g = lock.lock();
    let allocations = hv.frames.allocations();
    let t0 = crate::arch::tsc::now();
    let deassigned = passthrough::deassign(&mut g, dom, d.sbdf);
    switch_time("deassign", t0);
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
            "{} back to DomIO: {}; {}; invalidation wait {}; {during_deassign} frame(s) allocated",
            d.sbdf,
            Outcome(&deassigned),
            Moved(deassigned.as_ref().ok()),
            if timed_out { "TIMED OUT" } else { "completed" }
        ),
    );
    if let Ok(r) = &deassigned {
        r.cost.report("deassign");
    }
    drop(g);
    for ((m, _, scratch), expected) in members.iter().zip(&read_back) {
        DIRECT_MAP.zero(target_page, PAGE_SIZE);
        if let Some(s) = scratch {
            DIRECT_MAP.zero(*s, PAGE_SIZE);
        }
        let write = m.edu.dma_to_ram(TARGET_GPA, 0, TARGET_LEN, edu::deadline());
        let guest_untouched = read_page(target_page).iter().all(|b| *b == 0);
        let offset = (TARGET_GPA % PAGE_SIZE) as usize;
        let in_scratch = scratch
            .is_some_and(|s| read_page(s)[offset..offset + TARGET_LEN] == expected[..TARGET_LEN]);
        checks.check(
            "deassign-dma",
            write.is_ok() && guest_untouched && in_scratch,
            format_args!(
                "{}: after deassign the same DMA {} {} scratch page; guest memory untouched {}; {}",
                m.sbdf,
                if in_scratch {
                    "lands in"
                } else {
                    "does NOT land in"
                },
                if members.len() > 1 {
                    "the group leader's"
                } else {
                    "its"
                },
                YesNo(guest_untouched),
                Dma(&write)
            ),
        );
    }

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

/// Which functions a switch moved and which bridges it carried, as words.
struct Moved<'a>(Option<&'a passthrough::SwitchReport>);

impl fmt::Display for Moved<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(r) = self.0 else {
            return f.write_str("nothing moved");
        };
        f.write_str("moved")?;
        for m in &r.moved {
            write!(f, " {m}")?;
        }
        if r.carried.is_empty() {
            return Ok(());
        }
        f.write_str(", carrying bridge")?;
        for b in &r.carried {
            write!(f, " {b}")?;
        }
        Ok(())
    }
}

/// `FIGURE <what>-time`: one owner switch (entry exchange, invalidations, the bounded wait)
/// in microseconds of TSC time.
fn switch_time(what: &str, since: u64) {
    let ticks = crate::arch::tsc::now().saturating_sub(since);
    let ns = ticks.saturating_mul(1_000_000) / crate::arch::tsc::ticks_per_ms().max(1);
    figure(
        &alloc::format!("{what}-time"),
        format_args!("{}.{:03}", ns / 1000, ns % 1000),
        "us",
    );
}
