//! Ring 2 (design.md §5): the real image booted in QEMU/TCG, judged by its serial console and
//! its exit status. These run on the reference QEMU (10.0) unless they say otherwise.
use lazaret_tests::{on_every_qemu, run, Config, Iommu, Module, Status};

fn boot(config: Config) -> lazaret_tests::Outcome {
    run(&config, false).unwrap_or_else(|e| panic!("could not run QEMU: {e}"))
}

on_every_qemu! {
    fn boots_reports_its_memory_map_and_exits_with_success(qemu) {
        let out = boot(Config::default().with_qemu(qemu));
        assert_eq!(out.status, Status::Success, "{}", out.transcript());
        assert!(
            out.line("memory: ")
                .is_some_and(|l| l.contains("Available")),
            "{}",
            out.transcript()
        );
        assert!(
            out.line("paging: own tables live").is_some(),
            "{}",
            out.transcript()
        );
        assert!(
            out.line("acpi: RSDP at")
                .is_some_and(|l| l.contains("DMAR")),
            "{}",
            out.transcript()
        );
        let boot = out.figure("boot-to-ready").expect("boot-to-ready figure");
        assert!(boot.value > 0.0 && boot.unit == "ms", "{boot:?}");
        let results = out.results();
        assert!(
            !results.is_empty() && results.iter().all(|r| r.pass),
            "{results:?}"
        );
        assert!(out.line("LAZARET EXIT success").is_some());
    }
}

#[test]
fn boots_without_an_iommu_too() {
    let out = boot(Config {
        iommu: Iommu::None,
        ..Config::default()
    });
    assert_eq!(out.status, Status::Success, "{}", out.transcript());
    assert!(
        out.line("acpi: RSDP at")
            .is_some_and(|l| !l.contains("DMAR")),
        "{}",
        out.transcript()
    );
}

#[test]
fn panic_scenario_reports_the_location_and_fails_the_run() {
    let out = boot(Config::default().with_cmdline("scenario=panic"));
    assert_eq!(out.status, Status::Failure, "{}", out.transcript());
    let panic = out.line("PANIC at ").expect("panic line");
    assert!(
        panic.contains("kernel/src/scenario/mod.rs:") && panic.contains("deliberate panic"),
        "{panic}"
    );
}

#[test]
fn page_fault_scenario_is_reported_by_the_exception_handler() {
    let out = boot(Config::default().with_cmdline("scenario=page-fault"));
    assert_eq!(out.status, Status::Failure, "{}", out.transcript());
    let exc = out
        .line("EXCEPTION vector 14 (page fault)")
        .expect("exception line");
    assert!(exc.contains("cr2 0x10") && exc.contains("rip 0x"), "{exc}");
    assert!(
        out.line("stack[").is_some(),
        "the faulting stack is dumped: {}",
        out.transcript()
    );
}

#[test]
fn unknown_options_and_bad_values_warn_and_boot_on() {
    let out = boot(Config::default().with_cmdline("frobnicate=1 quarantine=maybe log=debug"));
    assert_eq!(out.status, Status::Success, "{}", out.transcript());
    assert!(
        out.line("unknown option 'frobnicate'")
            .is_some_and(|l| l.contains("WARN")),
        "{}",
        out.transcript()
    );
    assert!(
        out.line("ignoring quarantine=maybe").is_some(),
        "{}",
        out.transcript()
    );
    let opts = out.line("options: ").expect("options line");
    assert!(
        opts.contains("quarantine=scratch") && opts.contains("log=DEBUG"),
        "{opts}"
    );
}

#[test]
fn loader_refuses_a_missing_kernel_module_clearly() {
    let out = boot(Config {
        module: Module::Missing,
        ..Config::default()
    });
    assert_eq!(out.status, Status::Failure, "{}", out.transcript());
    assert!(
        out.line("lazaret-boot: error: no kernel").is_some(),
        "{}",
        out.transcript()
    );
}

#[test]
fn loader_refuses_a_module_that_is_not_a_kernel() {
    let not_elf = lazaret_tests::workspace_root().join("README.md");
    let out = boot(Config {
        module: Module::File(not_elf),
        ..Config::default()
    });
    assert_eq!(out.status, Status::Failure, "{}", out.transcript());
    assert!(
        out.line("lazaret-boot: error: module 0 is not a loadable kernel")
            .is_some(),
        "{}",
        out.transcript()
    );
}

#[test]
fn enumerates_the_edu_devices_and_the_q35_chipset() {
    let out = boot(Config {
        edu_devices: 2,
        ..Config::default()
    });
    assert_eq!(out.status, Status::Success, "{}", out.transcript());
    let edus: Vec<&String> = out
        .lines
        .iter()
        .filter(|l| l.contains(" 1234:11e8 "))
        .collect();
    assert_eq!(edus.len(), 2, "{}", out.transcript());
    assert!(
        edus.iter()
            .all(|l| l.contains("BAR0 mem32") && l.contains("(1 MiB)")),
        "{edus:?}"
    );
    for chipset in [
        "0000:00:00.0 8086:29c0",
        "0000:00:1f.0 8086:2918",
        "0000:00:1f.2 8086:2922",
        "0000:00:1f.3 8086:2930",
    ] {
        assert!(
            out.line(chipset).is_some(),
            "{chipset} missing: {}",
            out.transcript()
        );
    }
    assert!(
        out.line("pci: 6 function(s), 0 issue(s)").is_some(),
        "{}",
        out.transcript()
    );
}

#[test]
fn the_demo_runner_tells_the_whole_story_and_exits_zero() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lazaret-qemu"))
        .output()
        .expect("lazaret-qemu runs");
    let console = String::from_utf8_lossy(&out.stdout);
    let summary = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{console}\n{summary}");
    for phase in [
        "== 1. The platform",
        "== 3. Guests",
        "== 4. A rogue guest",
        "== 5. Tear-down",
    ] {
        assert!(console.contains(phase), "no '{phase}': {console}");
    }
    assert!(
        console.contains("RESULT guest-dma pass")
            && console.contains("RESULT rogue-dma-stopped pass"),
        "{console}"
    );
    assert!(
        !console.contains("\x1b["),
        "no colour when stdout is a pipe: {console}"
    );
    assert!(summary.contains("demo: success"), "{summary}");
}

#[test]
fn the_demo_runner_refuses_unknown_arguments() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lazaret-qemu"))
        .arg("--frobnicate")
        .output()
        .expect("lazaret-qemu runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown argument '--frobnicate'"));
}
