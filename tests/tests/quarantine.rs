//! Ring 2 for VT-d quarantine and assignment: real DMA from QEMU's edu devices through QEMU's
//! emulated VT-d (design.md §5; the scenarios are in kernel/src/scenario/). Every test runs
//! on QEMU 7.2 and 10.0 (`NAME::qemu_7_2`, `NAME::qemu_10_0`).
use lazaret_tests::{on_every_qemu, run, Config, Iommu, Outcome, Qemu, Status};

fn boot(config: Config) -> Outcome {
    let out = run(&config, false).unwrap_or_else(|e| panic!("could not run QEMU: {e}"));
    let debug = out.debug_output_in_results();
    assert!(
        debug.is_empty(),
        "RESULT lines with Debug output: {debug:#?}"
    );
    out
}

fn scenario(qemu: Qemu, iommu: &str, cmdline: &str) -> Outcome {
    let config = Config {
        iommu: Iommu::parse(iommu).expect("valid"),
        ..Config::default()
    }
    .with_qemu(qemu)
    .with_cmdline(cmdline);
    boot(config)
}

fn one_edu(qemu: Qemu, cmdline: &str) -> Outcome {
    boot(
        Config {
            edu_devices: 1,
            ..Config::default()
        }
        .with_qemu(qemu)
        .with_cmdline(cmdline),
    )
}

/// Every RESULT passed, there was at least `min` of them, and the run succeeded.
fn assert_all_pass(out: &Outcome, min: usize) {
    let results = out.results();
    let failed: Vec<_> = results.iter().filter(|r| !r.pass).collect();
    assert!(
        failed.is_empty(),
        "failed checks: {failed:#?}\n{}",
        out.transcript()
    );
    assert!(
        results.len() >= min,
        "only {} RESULT lines\n{}",
        results.len(),
        out.transcript()
    );
    assert_eq!(out.status, Status::Success, "{}", out.transcript());
}

on_every_qemu! {
    fn every_device_is_quarantined_at_boot_with_levels_plus_one_pages(qemu) {
        for (iommu, pages) in [("intel,aw-bits=48", 5.0), ("intel,aw-bits=39", 4.0)] {
            let out = scenario(qemu, iommu, "");
            assert_eq!(out.status, Status::Success, "{}", out.transcript());
            let line = out.line("quarantine: all ").expect("quarantine summary");
            assert!(line.contains("all 7 device(s) quarantined"), "{line}");
            assert_eq!(
                out.figure("pages-per-quarantined-device").map(|f| f.value),
                Some(pages),
                "{iommu}"
            );
            assert!(out
                .figure("boot-to-quarantined")
                .is_some_and(|f| f.value > 0.0));
        }
    }

    fn scratch_mode_confines_dma_to_each_devices_own_scratch_page(qemu) {
        let out = scenario(qemu, "intel,aw-bits=48", "scenario=quarantine-dma");
        assert_all_pass(&out, 3 * 5 + 2);
        assert_eq!(
            out.results()
                .iter()
                .filter(|r| r.name == "scratch-dma")
                .count(),
            12
        );
        assert!(out.results().iter().any(|r| r.name == "requarantine-zero"));
    }

    fn scratch_mode_works_with_three_level_tables(qemu) {
        let out = scenario(qemu, "intel,aw-bits=39", "scenario=quarantine-dma");
        assert_all_pass(&out, 3 * 5 + 2);
    }

    fn basic_mode_dma_faults_with_the_right_device_and_address(qemu) {
        let out = scenario(qemu, "intel", "scenario=quarantine-dma quarantine=basic");
        assert_all_pass(&out, 1 + 3 * 4);
        assert_eq!(
            out.results()
                .iter()
                .filter(|r| r.name == "dma-fault")
                .count(),
            6
        );
        assert!(
            out.line("fault: 0000:00:02.0 write at 0x").is_some(),
            "{}",
            out.transcript()
        );
    }

    fn a_fault_storm_ends_with_bus_mastering_off(qemu) {
        let out = one_edu(qemu, "scenario=fault-storm quarantine=basic");
        assert_all_pass(&out, 2);
        assert!(
            out.line("Bus Master Enable cleared").is_some(),
            "{}",
            out.transcript()
        );
    }

    fn an_assigned_device_dmas_into_its_guest_and_back_into_quarantine(qemu) {
        let out = one_edu(qemu, "scenario=assign-dma");
        assert_all_pass(&out, 7);
        for (name, value) in [
            ("assign-invalidation-waits", 1.0),
            ("deassign-invalidation-waits", 1.0),
            // Context cache, domain IOTLB and the interrupt entries (in one batch).
            ("deassign-invalidation-descriptors", 3.0),
            ("frames-allocated-during-deassign", 0.0),
            ("frames-allocated-during-destroy", 0.0),
        ] {
            assert_eq!(
                out.figure(name).map(|f| f.value),
                Some(value),
                "{name}\n{}",
                out.transcript()
            );
        }
    }

    fn a_fault_storm_in_scratch_mode_is_refused_with_a_reason(qemu) {
        let out = one_edu(qemu, "scenario=fault-storm");
        assert_eq!(out.status, Status::Failure);
        assert!(
            out.line("needs quarantine=basic").is_some(),
            "{}",
            out.transcript()
        );
    }

    /// With caching-mode=on QEMU caches not-present entries too, so every not-present to
    /// present change needs its invalidation (design.md §6).
    fn caching_mode_on_needs_nothing_else(qemu) {
        for cmdline in [
            "scenario=quarantine-dma",
            "scenario=quarantine-dma quarantine=basic",
            "scenario=assign-dma",
        ] {
            let out = scenario(qemu, "intel,caching-mode=on", cmdline);
            assert!(
                out.line("caching-mode true").is_some(),
                "{}",
                out.transcript()
            );
            assert_all_pass(&out, 8);
        }
    }

    /// quarantine=none: no context entry, all DMA blocked and recorded as a fault; the frame at
    /// the IOVA's own physical address stays as it was.
    fn quarantine_none_blocks_every_dma(qemu) {
        let out = scenario(qemu, "intel", "scenario=quarantine-dma quarantine=none");
        assert_all_pass(&out, 1 + 3 * 4);
        let blocked: Vec<_> = out
            .results()
            .into_iter()
            .filter(|r| r.name == "dma-blocked")
            .collect();
        assert_eq!(blocked.len(), 6, "{}", out.transcript());
        assert!(blocked
            .iter()
            .all(|r| r.details.contains("the frame at physical address")));
    }

    /// Without cmpxchg16b Lazaret refuses to run the IOMMU: the boot RESULT must say that
    /// bring-up failed, and the run fails.
    fn the_boot_result_fails_when_iommu_bring_up_fails(qemu) {
        for iommu in ["intel", "amd"] {
            let out = boot(
                Config {
                    iommu: Iommu::parse(iommu).expect("valid"),
                    edu_devices: 1,
                    extra_args: vec!["-cpu".into(), "qemu64,+svm,+npt,-cx16".into()],
                    ..Config::default()
                }
                .with_qemu(qemu),
            );
            assert_eq!(out.status, Status::Failure, "{}", out.transcript());
            let boot = out.results().into_iter().find(|r| r.name == "boot");
            assert!(
                boot.as_ref()
                    .is_some_and(|r| !r.pass && r.details.contains("IOMMU bring-up failed")),
                "{iommu}: {boot:?}\n{}",
                out.transcript()
            );
        }
    }

    fn the_boot_result_names_every_device_quarantined(qemu) {
        let out = scenario(qemu, "intel", "");
        assert_all_pass(&out, 1);
        assert!(
            out.line("RESULT boot pass all bring-up stages completed; all 7 device(s)")
                .is_some(),
            "{}",
            out.transcript()
        );
    }
}
