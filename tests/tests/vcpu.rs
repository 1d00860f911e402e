//! Ring 2 for the vCPU seam on AMD SVM (`scenario=vcpu`, kernel/src/scenario/vcpu_smoke.rs):
//! a hand-assembled long-mode guest under QEMU's TCG SVM (no NRIP save: the backend decodes
//! instruction lengths), on both IOMMUs — SVM is the CPU's, so either machine runs it. Every
//! test runs on QEMU 7.2 and 10.0 (`NAME::qemu_7_2`, `NAME::qemu_10_0`).
use lazaret_tests::{on_every_qemu, run, Config, Iommu, Outcome, Qemu, Status};

fn vcpu(qemu: Qemu, iommu: &str) -> Outcome {
    let config = Config {
        iommu: Iommu::parse(iommu).expect("valid"),
        edu_devices: 1,
        ..Config::default()
    }
    .with_qemu(qemu)
    .with_cmdline("scenario=vcpu");
    let out = run(&config, false).unwrap_or_else(|e| panic!("could not run QEMU: {e}"));
    let debug = out.debug_output_in_results();
    assert!(
        debug.is_empty(),
        "RESULT lines with Debug output: {debug:#?}"
    );
    out
}

/// The checks the scenario must report, each passing.
const CHECKS: [&str; 13] = [
    "vcpu-enable",
    "vcpu-exits",
    "vcpu-guest-memory",
    "vcpu-xmm",
    "vcpu-host-sse",
    "vcpu-exit-counts",
    "vcpu-rip",
    "vcpu-npf",
    "vcpu-shutdown",
    "vcpu-cr0",
    "vcpu-inject",
    "vcpu-bad-state",
    "vcpu-frames",
];

fn assert_guest_ran(out: &Outcome) {
    assert_eq!(out.status, Status::Success, "{}", out.transcript());
    let results = out.results();
    for name in CHECKS {
        let r = results
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no RESULT {name}\n{}", out.transcript()));
        assert!(r.pass, "{r:?}\n{}", out.transcript());
    }
    assert!(
        out.line("guest vcpu-smoke: hello from the vCPU smoke guest")
            .is_some(),
        "the guest's console write was not printed\n{}",
        out.transcript()
    );
    let bad = results
        .iter()
        .find(|r| r.name == "vcpu-bad-state")
        .expect("checked above");
    assert!(bad.details.contains("EFER.SVME"), "{bad:?}");
    assert!(out.line("LAZARET EXIT success").is_some());
}

on_every_qemu! {
    fn a_long_mode_guest_runs_its_exits_on_intel_iommu_machine(qemu) {
        assert_guest_ran(&vcpu(qemu, "intel"));
    }

    fn a_long_mode_guest_runs_its_exits_on_amd_iommu_machine(qemu) {
        assert_guest_ran(&vcpu(qemu, "amd"));
    }
}
