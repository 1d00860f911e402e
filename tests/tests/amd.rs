//! Ring 2 for AMD-Vi: the same scenarios as VT-d, on QEMU's `-device amd-iommu` (q35). The
//! IOMMU takes PCI function 00:01.0, so the edu devices sit at 00:02.0 onwards. The harness
//! passes `pt=off` (on QEMU 9.2–10.0 the default `pt=on` sends all DMA around the IOMMU).
//! Every test runs on QEMU 7.2 and 10.0 (`NAME::qemu_7_2`, `NAME::qemu_10_0`).
use lazaret_tests::{on_every_qemu, run, Config, Iommu, Outcome, Qemu, Status};

fn amd(qemu: Qemu, edu: usize, cmdline: &str) -> Outcome {
    let config = Config {
        iommu: Iommu::parse("amd").expect("valid"),
        edu_devices: edu,
        ..Config::default()
    };
    checked(run(&config.with_qemu(qemu).with_cmdline(cmdline), false))
}

fn checked(out: Result<Outcome, String>) -> Outcome {
    let out = out.unwrap_or_else(|e| panic!("could not run QEMU: {e}"));
    let debug = out.debug_output_in_results();
    assert!(
        debug.is_empty(),
        "RESULT lines with Debug output: {debug:#?}"
    );
    out
}

/// Every DMA blocked, and only the fault-log checks fail (QEMU's AMD event log, README).
fn assert_blocked_though_no_event(out: &Outcome) {
    let results = out.results();
    let blocked: Vec<_> = results.iter().filter(|r| r.name == "dma-blocked").collect();
    assert_eq!(blocked.len(), 6, "{}", out.transcript());
    assert!(blocked.iter().all(|r| r.pass), "{blocked:#?}");
    assert!(
        results
            .iter()
            .filter(|r| !r.pass)
            .all(|r| r.name == "dma-fault"),
        "only the fault-log checks may fail: {:#?}",
        failed(out)
    );
}

fn failed(out: &Outcome) -> Vec<String> {
    out.results()
        .into_iter()
        .filter(|r| !r.pass)
        .map(|r| format!("{} {}", r.name, r.details))
        .collect()
}

on_every_qemu! {
    fn every_device_but_the_iommu_is_quarantined_at_boot(qemu) {
        let out = amd(qemu, 3, "");
        assert_eq!(out.status, Status::Success, "{}", out.transcript());
        assert!(
            out.line("iommu: AMD-Vi with 4-level tables").is_some(),
            "{}",
            out.transcript()
        );
        assert!(
            out.line("all 7 device(s) quarantined").is_some(),
            "{}",
            out.transcript()
        );
        assert!(
            out.line("quarantine: 0000:00:01.0").is_none(),
            "the IOMMU's own function stays out"
        );
        assert_eq!(
            out.figure("pages-per-quarantined-device").map(|f| f.value),
            Some(5.0)
        );
    }

    fn scratch_mode_confines_dma_to_each_devices_own_scratch_page(qemu) {
        let out = amd(qemu, 3, "scenario=quarantine-dma");
        assert!(
            failed(&out).is_empty(),
            "{:#?}\n{}",
            failed(&out),
            out.transcript()
        );
        assert_eq!(
            out.results()
                .iter()
                .filter(|r| r.name == "scratch-dma" && r.pass)
                .count(),
            12
        );
        assert_eq!(out.status, Status::Success);
    }

    fn an_assigned_device_dmas_into_its_guest_and_back_into_quarantine(qemu) {
        let out = amd(qemu, 1, "scenario=assign-dma");
        assert!(
            failed(&out).is_empty(),
            "{:#?}\n{}",
            failed(&out),
            out.transcript()
        );
        assert_eq!(out.status, Status::Success);
        // INVALIDATE_DEVTAB_ENTRY, a fencing COMPLETION_WAIT (the DTE invalidation completes
        // before the pages are dropped, so nothing is refilled through a stale DTE),
        // INVALIDATE_IOMMU_PAGES, and the one polled COMPLETION_WAIT per switch; deassign adds
        // INVALIDATE_INTERRUPT_TABLE (the device's entries blocked in the same batch).
        for (name, value) in [
            ("assign-invalidation-descriptors", 4.0),
            ("assign-invalidation-waits", 1.0),
            ("deassign-invalidation-descriptors", 5.0),
            ("deassign-invalidation-waits", 1.0),
            ("frames-allocated-during-deassign", 0.0),
        ] {
            assert_eq!(out.figure(name).map(|f| f.value), Some(value), "{name}");
        }
    }

    /// Basic mode blocks the DMA on AMD-Vi too. Neither QEMU 7.2's nor 10.0.2's amd-iommu records
    /// a usable event for it (the event log never advances the Event Log Tail register and
    /// `amdvi_page_walk` returns without an event on an all-zero entry; see README "QEMU limits"),
    /// so here the fault-log checks fail while every blocking check passes; the event-log
    /// decoding itself is host-tested against the simulated unit in drivers/amd-vi.
    fn basic_mode_blocks_dma_though_qemu_logs_no_event(qemu) {
        let out = amd(qemu, 3, "scenario=quarantine-dma quarantine=basic");
        assert_blocked_though_no_event(&out);
    }

    /// quarantine=none: the DTE blocks all DMA; the frame at each IOVA's own physical address
    /// stays as it was.
    fn quarantine_none_blocks_every_dma(qemu) {
        let out = amd(qemu, 3, "scenario=quarantine-dma quarantine=none");
        assert_blocked_though_no_event(&out);
    }
}

/// The check of the check: QEMU 10.0's amd-iommu with its default `pt=on` sends every DMA
/// around the IOMMU. The harness passes `pt=off`; asked for `pt=on`, the blocked writes land
/// at the IOVA's own physical address, and `dma-blocked` must see it and fail.
#[test]
fn with_pt_on_qemu_10_bypasses_the_iommu_and_dma_blocked_fails() {
    let config = Config {
        iommu: Iommu::parse("amd,pt=on").expect("valid"),
        edu_devices: 1,
        ..Config::default()
    }
    .with_qemu(Qemu::V10_0)
    .with_cmdline("scenario=quarantine-dma quarantine=basic");
    let out = checked(run(&config, false));
    assert_eq!(out.status, Status::Failure, "{}", out.transcript());
    let write = out
        .results()
        .into_iter()
        .find(|r| r.name == "dma-blocked" && r.details.contains(" write at IOVA "))
        .expect("a blocked-write check");
    assert!(
        !write.pass && write.details.contains("unchanged NO"),
        "{write:?}\n{}",
        out.transcript()
    );
}
