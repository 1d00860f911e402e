//! Ring 2 under load (issue 8 §7): `scenario=reassign` moves one edu device round DomIO →
//! guest-a → guest-b → DomIO more than 200 times, with a DMA in flight across every switch
//! and one after it, and reads back where each landed. edu DMA completes on a 100 ms
//! virtual-clock timer, so QEMU runs with `-icount shift=10,sleep=off`: virtual time (and
//! the TSC the kernel's deadlines use) runs ahead of the wall clock and the test takes
//! seconds. The switches per wall-clock second are printed as a FIGURE line.
use std::time::Duration;

use lazaret_tests::{on_every_qemu, run, Config, Iommu, Outcome, Qemu, Status};

/// 2^10 ns of virtual time per instruction: the kernel's polling of the edu (an MMIO read
/// per iteration, slow under TCG) then crosses 100 ms in a few thousand iterations.
const ICOUNT: &str = "shift=10,sleep=off";

fn reassign(qemu: Qemu, iommu: &str) -> Outcome {
    let config = Config {
        iommu: Iommu::parse(iommu).expect("valid"),
        edu_devices: 1,
        extra_args: vec!["-icount".into(), ICOUNT.into()],
        timeout: Duration::from_secs(300),
        ..Config::default()
    }
    .with_qemu(qemu)
    .with_cmdline("scenario=reassign");
    run(&config, false).unwrap_or_else(|e| panic!("could not run QEMU: {e}"))
}

/// The number right before `word` in `text` ("201 owner switches" → 201).
fn count_before(text: &str, word: &str) -> Option<u64> {
    let at = text.find(word)?;
    text[..at].split_whitespace().last()?.parse().ok()
}

on_every_qemu! {
    /// Every racing DMA landed in exactly one of the two owners' memory, every later DMA in
    /// the new owner's, nothing else changed, and no invalidation wait timed out.
    fn two_hundred_reassignments_under_dma_land_only_where_allowed(qemu) {
        for iommu in ["intel", "amd"] {
            let out = reassign(qemu, iommu);
            let results = out.results();
            let failed: Vec<_> = results.iter().filter(|r| !r.pass).collect();
            assert!(failed.is_empty(), "{iommu}: {failed:#?}\n{}", out.transcript());
            let line = results
                .iter()
                .find(|r| r.name == "reassign")
                .unwrap_or_else(|| panic!("{iommu}: no reassign RESULT\n{}", out.transcript()));
            let switches = count_before(&line.details, "owner switches").expect("switch count");
            let dmas = count_before(&line.details, "DMAs").expect("DMA count");
            assert!(switches >= 200, "{iommu}: {}", line.details);
            assert_eq!(dmas, 3 * switches, "{iommu}: {}", line.details);
            assert!(
                line.details.contains(&format!("landed in the new owner's {switches} of {switches} times")),
                "{iommu}: {}",
                line.details
            );
            assert_eq!(out.status, Status::Success, "{}", out.transcript());
            let (Some(start), Some(end)) =
                (out.arrival("reassign: start"), out.arrival("reassign: end"))
            else {
                panic!("{iommu}: no start/end lines\n{}", out.transcript());
            };
            let wall = (end - start).as_secs_f64().max(1e-3);
            println!(
                "FIGURE reassign-switches-per-wall-second-{iommu}-{} {:.1} switches/s",
                qemu.name().replace(' ', "-"),
                switches as f64 / wall
            );
        }
    }
}
