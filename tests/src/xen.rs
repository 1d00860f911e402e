//! Lazaret beside Xen: the same QEMU (the system's), the same machine (q35, TCG, the
//! emulated IOMMU, an edu, an e1000 and a virtio-rng), timed from QEMU's start to the point
//! where each hypervisor has its devices under the IOMMU — Xen's dom0 hand-over ("Freed …
//! init memory", as `xen-baseline.sh` reports it) and Lazaret's "all devices quarantined"
//! figure. The runs alternate so that a change in the machine's load hits both alike.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{run, Config, Iommu, Qemu, Status};

/// Where the baseline script lives: `$LAZARET_XEN_BASELINE`, else `../shared/tools/` beside
/// the checkout (it is not part of the repository: it downloads Debian's Xen packages).
pub fn baseline_script(workspace: &Path) -> Option<PathBuf> {
    let path = std::env::var_os("LAZARET_XEN_BASELINE")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("../shared/tools/xen-baseline.sh"));
    path.is_file().then_some(path)
}

/// The machine `xen-baseline.sh KIND` boots, for Lazaret.
pub fn lazaret_config(kind: &str) -> Result<Config, String> {
    let (iommu, memory_mib) = match kind {
        "intel" => (Iommu::Intel("intremap=on".into()), 512),
        "amd" => (Iommu::Amd("intremap=on".into()), 1100),
        other => {
            return Err(format!(
                "no Xen baseline for IOMMU '{other}' (intel or amd)"
            ))
        }
    };
    Ok(Config {
        qemu: Qemu::V7_2,
        iommu,
        edu_devices: 1,
        memory_mib,
        extra_args: [
            "-device",
            "e1000,netdev=n0,romfile=",
            "-netdev",
            "user,id=n0,restrict=on",
            "-device",
            "virtio-rng-pci",
        ]
        .map(String::from)
        .to_vec(),
        timeout: Duration::from_secs(60),
        ..Config::default()
    }
    .with_cmdline("scenario=boot"))
}

/// Seconds from QEMU's start to Lazaret's "all devices quarantined" figure.
pub fn lazaret_seconds(config: &Config) -> Result<f64, String> {
    let outcome = run(config, false)?;
    if outcome.status != Status::Success {
        return Err(format!(
            "Lazaret's boot did not succeed: {:?}",
            outcome.status
        ));
    }
    outcome
        .arrival("FIGURE boot-to-quarantined")
        .map(|d| d.as_secs_f64())
        .ok_or_else(|| "Lazaret printed no boot-to-quarantined figure".into())
}

/// Seconds from QEMU's start to Xen's dom0 hand-over: the script's last line.
pub fn xen_seconds(script: &Path, kind: &str, work: &Path) -> Result<f64, String> {
    let out = Command::new("bash")
        .arg(script)
        .arg(kind)
        .env("WORK", work)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or("").trim();
    last.parse::<f64>()
        .map_err(|_| format!("Xen baseline: {last}"))
}

/// The middle value (the mean of the two middle ones for an even count).
pub fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }

    #[test]
    fn the_machine_matches_the_baseline_script() {
        let c = lazaret_config("intel").unwrap();
        assert_eq!(c.qemu, Qemu::V7_2, "Xen's script runs the system QEMU");
        assert_eq!(c.memory_mib, 512);
        assert!(c.extra_args.iter().any(|a| a.starts_with("e1000")));
        assert!(c.extra_args.iter().any(|a| a == "virtio-rng-pci"));
        assert_eq!(lazaret_config("amd").unwrap().memory_mib, 1100);
        assert!(lazaret_config("arm").is_err());
    }
}
