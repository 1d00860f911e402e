//! Ring 2: an AMD-Vi unit that does not remap interrupts is detected, not trusted. QEMU's
//! amd-iommu with `intremap=off` ignores the DTE's interrupt fields, and its IVRS then lists
//! no IOAPIC (hw/i386/acpi-build.c writes the 48h IOAPIC entry only with remapping on): the
//! kernel must say so and refuse assignment as on VT-d without remapping, unless the kernel
//! command line says `intremap=off`. QEMU's default (`intremap=auto`, on under TCG) is the
//! one every other AMD test runs with. On QEMU 7.2 and 10.0 (`NAME::qemu_7_2`, `NAME::qemu_10_0`).
use lazaret_tests::{on_every_qemu, run, Config, Iommu, Outcome, Qemu, ResultLine};

const OFF_LINE: &str = "interrupt remapping: OFF on IOMMU 0000:00:01.0: its IVRS lists no IOAPIC, the unit may pass every MSI; assignment is refused unless intremap=off";

/// `scenario=assign-dma` with one edu device behind `-device amd-iommu,intremap=off`.
fn without_intremap(qemu: Qemu, cmdline: &str) -> Outcome {
    let config = Config {
        iommu: Iommu::parse("amd,intremap=off").expect("valid"),
        edu_devices: 1,
        ..Config::default()
    };
    run(&config.with_qemu(qemu).with_cmdline(cmdline), false)
        .unwrap_or_else(|e| panic!("could not run QEMU: {e}"))
}

fn assign_result(out: &Outcome) -> ResultLine {
    out.results()
        .into_iter()
        .find(|r| r.name == "assign")
        .unwrap_or_else(|| panic!("no RESULT assign\n{}", out.transcript()))
}

on_every_qemu! {
    fn a_unit_whose_ivrs_lists_no_ioapic_is_off_and_assignment_is_refused(qemu) {
        let out = without_intremap(qemu, "scenario=assign-dma");
        assert!(out.line(OFF_LINE).is_some(), "{}", out.transcript());
        assert!(out.line("interrupt remapping: on (IOMMU").is_none(), "{}", out.transcript());
        let assign = assign_result(&out);
        assert!(
            !assign.pass && assign.details.contains("does not remap interrupts"),
            "{assign:?}\n{}",
            out.transcript()
        );
    }

    fn intremap_off_on_the_kernel_command_line_lets_the_device_be_assigned(qemu) {
        let out = without_intremap(qemu, "scenario=assign-dma intremap=off");
        assert!(out.line(OFF_LINE).is_some(), "{}", out.transcript());
        let assign = assign_result(&out);
        assert!(assign.pass, "{assign:?}\n{}", out.transcript());
    }
}
