//! `lazaret-bench`: the figures of design.md §8, measured, not asserted. Boots a fixed set of
//! QEMU configurations, collects every `FIGURE` line plus QEMU's wall time and the image
//! sizes, prints a table and writes `bench/figures.json` in the target directory. `scripts/bench` runs it.
use std::fmt::Write as _;
use std::time::Duration;

use lazaret_tests::{build_images, run, target_dir, workspace_root, xen, Config, Iommu, Status};

struct Row {
    config: String,
    name: String,
    value: f64,
    unit: String,
}

fn main() {
    let images = match build_images() {
        Ok(i) => i,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(2);
        }
    };
    let mut rows = Vec::new();
    for (name, path) in [
        ("loader-image", &images.loader),
        ("kernel-image", &images.kernel),
    ] {
        let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        rows.push(Row {
            config: "files".into(),
            name: name.into(),
            value: bytes as f64 / 1024.0,
            unit: "KiB".into(),
        });
    }
    let configs = [
        ("intel-48", "intel,aw-bits=48", "scenario=boot"),
        ("intel-39", "intel,aw-bits=39", "scenario=boot"),
        ("intel-48", "intel,aw-bits=48", "scenario=assign-dma"),
        ("amd", "amd", "scenario=boot"),
        ("amd", "amd", "scenario=assign-dma"),
        ("intel-48", "intel,aw-bits=48", "scenario=demo"),
        ("amd", "amd", "scenario=demo"),
    ];
    let mut failed = false;
    for (label, iommu, cmdline) in configs {
        // The demo is the demo machine (its guests, -icount); the rest the default machine.
        let base = if cmdline == "scenario=demo" {
            Config::demo()
        } else {
            Config::default().with_cmdline(cmdline)
        };
        let config = Config {
            iommu: Iommu::parse(iommu).expect("fixed configuration"),
            timeout: Duration::from_secs(120),
            ..base
        };
        let outcome = match run(&config, false) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("bench: {label} {cmdline}: {e}");
                std::process::exit(2);
            }
        };
        failed |= outcome.status != Status::Success;
        let tag = format!("{label} {cmdline}");
        rows.push(Row {
            config: tag.clone(),
            name: "qemu-wall-time".into(),
            value: outcome.wall.as_secs_f64() * 1000.0,
            unit: "ms".into(),
        });
        for f in outcome.figures() {
            rows.push(Row {
                config: tag.clone(),
                name: f.name,
                value: f.value,
                unit: f.unit,
            });
        }
    }
    // Beside Xen: `--xen-rounds N` (default 5) alternating boots of each, `--no-xen` to skip.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rounds = match args.iter().position(|a| a == "--xen-rounds") {
        Some(i) => match args.get(i + 1).and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => n,
            None => {
                eprintln!("bench: --xen-rounds needs a number");
                std::process::exit(2);
            }
        },
        None if args.iter().any(|a| a == "--no-xen") => 0,
        None => 5,
    };
    if rounds > 0 {
        match beside_xen(rounds) {
            Ok(r) => rows.extend(r),
            Err(e) => eprintln!("bench: beside Xen skipped: {e}"),
        }
    }
    let mut table = String::new();
    let _ = writeln!(
        table,
        "{:<36} {:<36} {:>12} unit",
        "configuration", "figure", "value"
    );
    for r in &rows {
        let _ = writeln!(
            table,
            "{:<36} {:<36} {:>12.3} {}",
            r.config, r.name, r.value, r.unit
        );
    }
    print!("{table}");
    let json: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "  {{\"configuration\": \"{}\", \"figure\": \"{}\", \"value\": {}, \"unit\": \"{}\"}}",
                r.config, r.name, r.value, r.unit
            )
        })
        .collect();
    let dir = target_dir().join("bench");
    let path = dir.join("figures.json");
    if let Err(e) = std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(&path, format!("[\n{}\n]\n", json.join(",\n"))))
    {
        eprintln!("bench: cannot write {}: {e}", path.display());
        std::process::exit(2);
    }
    eprintln!("bench: figures written to {}", path.display());
    if failed {
        eprintln!(
            "bench: a configuration did not exit with success; its figures may be incomplete"
        );
        std::process::exit(1);
    }
}

/// Alternating boots of Xen 4.17 and Lazaret on the same machine; medians and their ratio.
fn beside_xen(rounds: usize) -> Result<Vec<Row>, String> {
    let root = workspace_root();
    let script = xen::baseline_script(&root)
        .ok_or("xen-baseline.sh not found (set LAZARET_XEN_BASELINE to its path)")?;
    let work = target_dir().join("xen-baseline");
    let config = xen::lazaret_config("intel")?;
    let (mut xen_s, mut ours) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let x = xen::xen_seconds(&script, "intel", &work)?;
        let l = xen::lazaret_seconds(&config)?;
        eprintln!("bench: beside Xen, round {round}/{rounds}: Xen {x:.3} s, Lazaret {l:.3} s");
        xen_s.push(x);
        ours.push(l);
    }
    let x = xen::median(&mut xen_s).ok_or("no Xen run")?;
    let l = xen::median(&mut ours).ok_or("no Lazaret run")?;
    let tag = format!("beside-xen intel qemu-7.2 {rounds} rounds");
    let row = |name: &str, value: f64, unit: &str| Row {
        config: tag.clone(),
        name: name.into(),
        value,
        unit: unit.into(),
    };
    Ok(vec![
        row("xen-to-dom0-handover-median", x * 1000.0, "ms"),
        row("lazaret-to-all-quarantined-median", l * 1000.0, "ms"),
        row("xen-over-lazaret", x / l, "x"),
    ])
}
