//! Guests on SVM (issue 9): the demo's story and every rogue variant, on VT-d and AMD-Vi,
//! on both QEMUs. Each run boots the real payload as multiboot modules under
//! `-icount shift=10,sleep=off` (`Config::demo`), and the kernel's RESULT lines say what the
//! hardware did: the guests' buffers read back by the host, another guest's page and the
//! frame at the rogue's IOVA compared before and after, fault records, and the DMA of a
//! device back in quarantine.
use lazaret_tests::{on_every_qemu, run, Config, Iommu, Outcome, Qemu, Status};

fn demo(qemu: Qemu, iommu: &str, config: Config) -> Outcome {
    let config = Config {
        iommu: Iommu::parse(iommu).expect("valid"),
        ..config
    }
    .with_qemu(qemu);
    run(&config, false).unwrap_or_else(|e| panic!("could not run QEMU: {e}"))
}

/// Every RESULT passed, the run exited with success, and each of `names` is among them.
fn all_pass(out: &Outcome, iommu: &str, names: &[&str]) {
    let results = out.results();
    let failed: Vec<_> = results.iter().filter(|r| !r.pass).collect();
    assert!(
        failed.is_empty(),
        "{iommu}: {failed:#?}\n{}",
        out.transcript()
    );
    for name in names {
        assert!(
            results.iter().any(|r| r.name == *name),
            "{iommu}: no {name} RESULT\n{}",
            out.transcript()
        );
    }
    assert_eq!(out.status, Status::Success, "{iommu}\n{}", out.transcript());
    assert!(
        out.debug_output_in_results().is_empty(),
        "{}",
        out.transcript()
    );
}

on_every_qemu! {
    /// `scripts/demo`: two good guests interleaved, each round trip in its own memory and each
    /// DMA waited for in HLT until its completion interrupt (remapped, injected, EOI'd); the
    /// rogue guest's DMAs change nothing, it is destroyed and its device is back in quarantine
    /// where its DMA lands in its own scratch page. On VT-d the faults name its device.
    fn the_demo_tells_its_story_on_both_iommus(qemu) {
        for iommu in ["intel", "amd"] {
            let out = demo(qemu, iommu, Config::demo());
            let mut names = vec![
                "all-quarantined", "guest-dma", "guests-apart", "rogue-dma-stopped",
                "back-in-quarantine", "guest-destroyed", "guest-memory-scrubbed",
                "all-back-in-quarantine", "guest-interrupts",
            ];
            if iommu == "intel" {
                names.push("rogue-dma-attributed");
            }
            all_pass(&out, iommu, &names);
            let good = out.results().iter().filter(|r| r.name == "guest-dma").count();
            assert_eq!(good, 2, "{iommu}: both good guests\n{}", out.transcript());
            let woken = out.results().iter().filter(|r| r.name == "guest-interrupts").count();
            assert_eq!(woken, 2, "{iommu}: both good guests woken by interrupt\n{}", out.transcript());
            assert!(
                out.line("FIGURE guest-interrupt-latency").is_some(),
                "{iommu}: no latency figure\n{}",
                out.transcript()
            );
            for who in ["[alpha] PASS", "[beta] PASS", "[mallory] DMA edu->RAM"] {
                assert!(out.line(who).is_some(), "{iommu}: no '{who}' line\n{}", out.transcript());
            }
        }
    }

    /// A guest that reads MMIO it does not own (another window page, then the IOMMU's
    /// registers) ends by a nested page fault; a guest that triple-faults ends by SHUTDOWN;
    /// the good guest beside them still passes and Lazaret carries on.
    fn rogue_mmio_and_crash_end_only_themselves(qemu) {
        for (iommu, registers) in [("intel", "0xfed90000"), ("amd", "0xfed80000")] {
            let config = Config::default()
                .with_cmdline("scenario=demo log=warn")
                .with_guest("alpha", "memory=4M variant=good")
                .with_guest("eve", &format!("memory=4M variant=rogue-mmio iommu={registers}"))
                .with_guest("crash", "memory=4M variant=crash");
            let config = Config { extra_args: Config::demo().extra_args, ..config };
            let out = demo(qemu, iommu, config);
            all_pass(&out, iommu, &["guest-dma", "rogue-mmio-stopped", "crash-contained"]);
            let mmio = out.results().into_iter().find(|r| r.name == "rogue-mmio-stopped");
            assert!(
                mmio.is_some_and(|r| r.details.contains("stopped by nested paging")),
                "{iommu}\n{}",
                out.transcript()
            );
        }
    }
}

on_every_qemu! {
    /// A guest whose device DMAs past its memory again and again is stopped by Lazaret once
    /// the device crosses the fault threshold: bus mastering cleared, the guest destroyed, the
    /// good guest beside it unharmed. VT-d only: QEMU's AMD-Vi records no faults.
    fn a_dma_storm_is_stopped_at_the_fault_threshold(qemu) {
        let config = Config::default()
            .with_cmdline("scenario=demo log=warn")
            .with_guest("alpha", "memory=4M variant=good")
            .with_guest("storm", "memory=4M variant=dma-storm");
        let config = Config { extra_args: Config::demo().extra_args, ..config };
        let out = demo(qemu, "intel", config);
        all_pass(&out, "intel", &["guest-dma", "dma-storm-stopped", "guest-destroyed"]);
        let stopped = out.results().into_iter().find(|r| r.name == "dma-storm-stopped");
        assert!(
            stopped.is_some_and(|r| r.details.contains("DMA fault(s): stopped")),
            "{}",
            out.transcript()
        );
        assert!(out.line("still running").is_none(), "the storm ran to its end\n{}", out.transcript());
    }
}

/// A guest module whose string Lazaret cannot accept is refused with its reason, the other
/// guests still run, and the run fails.
#[test]
fn a_bad_guest_module_is_refused_with_its_reason() {
    let out = demo(
        Qemu::REFERENCE,
        "intel",
        Config::demo().with_guest("junk", "memory=3M"),
    );
    let refused = out.results().into_iter().find(|r| r.name == "guest-module");
    assert!(
        refused.is_some_and(|r| !r.pass && r.details.contains("memory=")),
        "{}",
        out.transcript()
    );
    let good = out
        .results()
        .iter()
        .filter(|r| r.name == "guest-dma" && r.pass)
        .count();
    assert_eq!(good, 2, "the other guests still ran\n{}", out.transcript());
    assert_eq!(
        out.status,
        Status::Failure,
        "a refused module fails the run"
    );
}
