//! Ring 2 for alias groups: edu devices behind a `pcie-pci-bridge` are conventional PCI and
//! all DMA with the bridge's (secondary bus, 00.0) requester ID, so the IOMMU cannot tell
//! them apart. They are one group that carries the bridge: quarantined as one (each member's
//! DMA lands in the leader's — 01:01.0's — scratch page), assigned and deassigned as one.
use lazaret_tests::{on_every_qemu, run, Config, Iommu, Outcome, Qemu, Status};

fn behind_bridge(qemu: Qemu, iommu: &str, cmdline: &str) -> Outcome {
    let config = Config {
        iommu: Iommu::parse(iommu).expect("valid"),
        edu_devices: 0,
        bridged_edu_devices: 2,
        ..Config::default()
    }
    .with_qemu(qemu)
    .with_cmdline(cmdline);
    let out = run(&config, false).unwrap_or_else(|e| panic!("could not run QEMU: {e}"));
    let debug = out.debug_output_in_results();
    assert!(
        debug.is_empty(),
        "RESULT lines with Debug output: {debug:#?}"
    );
    out
}

on_every_qemu! {
    /// The topology is seen (one bridge, two functions behind it), every function is
    /// quarantined, an `alias-group` RESULT names the group, and in basic mode no DMA from
    /// behind the bridge reaches memory (the frame at each IOVA's own address included).
    fn dma_from_behind_a_pcie_pci_bridge_reaches_no_memory(qemu) {
        for iommu in ["intel", "amd"] {
            let out = behind_bridge(qemu, iommu, "scenario=quarantine-dma quarantine=basic");
            assert!(
                out.line("pcie:pcie-to-pci-bridge").is_some(),
                "{}",
                out.transcript()
            );
            let results = out.results();
            assert!(
                results.iter().any(|r| r.name == "alias-group"
                    && r.details.contains("behind bridge 0000:00:10.0 all DMA as 01:00.0")),
                "{iommu}\n{}",
                out.transcript()
            );
            let blocked: Vec<_> = results.iter().filter(|r| r.name == "dma-blocked").collect();
            assert_eq!(blocked.len(), 4, "{iommu}\n{}", out.transcript());
            assert!(
                blocked.iter().all(|r| r.pass),
                "{iommu}: {blocked:#?}\n{}",
                out.transcript()
            );
        }
    }

    /// Every function is in DomIO with the bridge carried by its group. VT-d: each
    /// member's DMA lands in the leader's scratch page (read back at its physical address)
    /// and the second member's own page stays untouched. AMD: see [`amd_behind_bridge_is_safe`].
    fn an_alias_group_is_quarantined_as_one(qemu) {
        for cmdline in ["", "scenario=quarantine-dma"] {
            let out = behind_bridge(qemu, "intel", cmdline);
            let failed: Vec<_> = out.results().into_iter().filter(|r| !r.pass).collect();
            assert!(failed.is_empty(), "intel {cmdline}: {failed:#?}\n{}", out.transcript());
            let results = out.results();
            assert!(
                results.iter().any(|r| r.name == "alias-group" && r.pass),
                "{cmdline}\n{}",
                out.transcript()
            );
            let to_leader = results
                .iter()
                .filter(|r| {
                    r.name == "scratch-dma"
                        && r.details.contains("group leader 0000:01:01.0's scratch page")
                })
                .count();
            // Four IOVAs for the second member; the leader's DMA lands in its own page.
            let want = if cmdline.is_empty() { 0 } else { 4 };
            assert_eq!(to_leader, want, "{cmdline}\n{}", out.transcript());
            assert_eq!(out.status, Status::Success, "{}", out.transcript());
        }
        let out = behind_bridge(qemu, "amd", "");
        let failed: Vec<_> = out.results().into_iter().filter(|r| !r.pass).collect();
        assert!(failed.is_empty(), "amd: {failed:#?}\n{}", out.transcript());
        assert!(out.results().iter().any(|r| r.name == "alias-group" && r.pass));
        amd_behind_bridge_is_safe(&behind_bridge(qemu, "amd", "scenario=quarantine-dma"), "scratch-dma");
    }

    /// Assigning one member moves the group and carries the bridge: on VT-d each member's DMA
    /// lands in the guest's memory, and deassigned, in the leader's scratch page.
    fn an_alias_group_is_assigned_together(qemu) {
        let out = behind_bridge(qemu, "intel", "scenario=assign-dma");
        let failed: Vec<_> = out.results().into_iter().filter(|r| !r.pass).collect();
        assert!(failed.is_empty(), "intel: {failed:#?}\n{}", out.transcript());
        let results = out.results();
        for (name, count) in [("assign-dma", 2), ("deassign-dma", 2), ("assign-walk", 2)] {
            assert_eq!(
                results.iter().filter(|r| r.name == name && r.pass).count(),
                count,
                "{name}\n{}",
                out.transcript()
            );
        }
        assert!(
            results
                .iter()
                .filter(|r| r.name == "deassign-dma")
                .all(|r| r.details.contains("the group leader's scratch page")),
            "{}",
            out.transcript()
        );
        assert_eq!(out.status, Status::Success, "{}", out.transcript());
        for iommu in ["intel", "amd"] {
            let out = if iommu == "intel" { out.clone() } else { behind_bridge(qemu, iommu, "scenario=assign-dma") };
            let assign = out.results().into_iter().find(|r| r.name == "assign").expect("assign RESULT");
            assert!(
                assign.pass
                    && assign.details.contains("moved 0000:01:01.0 0000:01:02.0, carrying bridge 0000:00:10.0"),
                "{iommu}: {}",
                assign.details
            );
            if iommu == "amd" {
                amd_behind_bridge_is_safe(&out, "assign-dma");
            }
        }
    }
}

/// QEMU's amd-iommu (7.2 and 10.0.2) takes a device's bus number when the device is created,
/// before the firmware numbers the bridge's secondary bus: DMA from behind the
/// `pcie-pci-bridge` reaches the IOMMU as device ID 00:00.0 (the host bridge's, whose entry
/// is its own quarantine; traced with `-trace 'amdvi_*'`). So on AMD the group's DMA cannot
/// land where the group's entries say; what must still hold is that it reaches no memory
/// beyond quarantine: no watched frame, no other scratch page, no guest page. When QEMU
/// fixes this, the `did NOT land` below fails: make AMD strict like VT-d then.
fn amd_behind_bridge_is_safe(out: &Outcome, name: &str) {
    let dmas: Vec<_> = out
        .results()
        .into_iter()
        .filter(|r| r.name == name)
        .collect();
    assert!(!dmas.is_empty(), "amd {name}\n{}", out.transcript());
    for r in &dmas {
        let escaped = match name {
            "scratch-dma" => {
                !r.details.contains("other scratch pages untouched yes")
                    || !r.details.contains("untouched yes; read")
            }
            _ => !r.details.contains("rest of the page untouched yes"),
        };
        assert!(
            !escaped,
            "amd: DMA from behind the bridge escaped: {}",
            r.details
        );
        assert!(
            r.details.contains("did NOT land"),
            "amd: QEMU now routes the bridge's DMA by its real ID; make the AMD check strict: {}",
            r.details
        );
    }
}
