//! Which QEMU boots the image. 10.0 (bookworm-backports, unpacked by `scripts/setup` under
//! `target/qemu-10/root`) is the reference; Debian 12's system QEMU 7.2 is kept working
//! because its bugs differ (design.md §6). The IOMMU device defaults that changed between
//! the two are made explicit here, so a scenario means the same on both.
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::workspace_root;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Qemu {
    /// Debian 12's `qemu-system-x86` (on PATH).
    V7_2,
    /// bookworm-backports' 10.0.2, project-local.
    V10_0,
}

impl Qemu {
    pub const ALL: [Qemu; 2] = [Qemu::V7_2, Qemu::V10_0];
    /// What `scripts/demo` and a test that names no version use.
    pub const REFERENCE: Qemu = Qemu::V10_0;

    /// `7.2` or `10.0` (also `10`).
    pub fn parse(s: &str) -> Result<Qemu, String> {
        match s {
            "7.2" | "7" => Ok(Qemu::V7_2),
            "10.0" | "10" | "10.0.2" => Ok(Qemu::V10_0),
            _ => Err(format!("unknown QEMU '{s}': expected 7.2 or 10.0")),
        }
    }

    /// The version as the harness names it in test names and log lines.
    pub fn name(self) -> &'static str {
        match self {
            Qemu::V7_2 => "QEMU 7.2",
            Qemu::V10_0 => "QEMU 10.0",
        }
    }

    /// Where `scripts/setup` unpacks QEMU 10.0.
    pub fn local_root() -> PathBuf {
        workspace_root().join("target").join("qemu-10").join("root")
    }

    fn binary(self) -> PathBuf {
        match self {
            Qemu::V7_2 => PathBuf::from("qemu-system-x86_64"),
            Qemu::V10_0 => Self::local_root().join("usr/bin/qemu-system-x86_64"),
        }
    }

    /// The command that starts this QEMU, with its own firmware and module directories (the
    /// project-local copy must not pick up the system's 7.2 SeaBIOS or modules).
    pub fn command(self) -> Command {
        let mut c = Command::new(self.binary());
        if self == Qemu::V10_0 {
            let root = Self::local_root();
            c.arg("-L").arg(root.join("usr/share/qemu"));
            c.arg("-L").arg(root.join("usr/share/seabios"));
            c.env(
                "QEMU_MODULE_DIR",
                root.join("usr/lib/x86_64-linux-gnu/qemu"),
            );
        }
        c
    }

    /// The first line of `--version` (e.g. "QEMU emulator version 10.0.2 (Debian ...)"), or
    /// why this QEMU cannot run; asked once per process.
    pub fn version(self) -> Result<String, String> {
        static V7: OnceLock<Result<String, String>> = OnceLock::new();
        static V10: OnceLock<Result<String, String>> = OnceLock::new();
        let cell = match self {
            Qemu::V7_2 => &V7,
            Qemu::V10_0 => &V10,
        };
        cell.get_or_init(|| {
            let out = self.command().arg("--version").output().map_err(|e| {
                format!(
                    "cannot run {} at {} (run scripts/setup): {e}",
                    self.name(),
                    self.binary().display()
                )
            })?;
            let text = String::from_utf8_lossy(&out.stdout);
            let first = text.lines().next().unwrap_or("").to_string();
            let want = match self {
                Qemu::V7_2 => "QEMU emulator version 7.2.",
                Qemu::V10_0 => "QEMU emulator version 10.0.",
            };
            if first.starts_with(want) {
                Ok(first)
            } else {
                Err(format!(
                    "{} is not {}: '{first}' (run scripts/setup)",
                    self.binary().display(),
                    self.name()
                ))
            }
        })
        .clone()
    }

    /// The `-device` string for an IOMMU with the caller's options, plus the defaults that
    /// differ between versions made explicit: intel-iommu's `aw-bits` (39 on 7.2, 48 on
    /// 10.0) and amd-iommu's `pt` (on 9.2–10.0 `pt=on` sends every device's DMA around the
    /// IOMMU, whatever the device table says). An option the caller gives wins, so a test
    /// can ask for the bypass on purpose.
    pub fn iommu_device(self, device: &str, opts: &str) -> String {
        let given = |key: &str| opts.split(',').any(|o| o.starts_with(&format!("{key}=")));
        let mut parts = vec![device.to_string()];
        match device {
            "intel-iommu" if !given("aw-bits") => parts.push("aw-bits=48".into()),
            "amd-iommu" if !given("pt") => parts.push("pt=off".into()),
            _ => {}
        }
        parts.extend(opts.split(',').filter(|o| !o.is_empty()).map(String::from));
        parts.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iommu_defaults_are_explicit_and_the_callers_options_win() {
        let q = Qemu::V10_0;
        assert_eq!(q.iommu_device("intel-iommu", ""), "intel-iommu,aw-bits=48");
        assert_eq!(
            q.iommu_device("intel-iommu", "aw-bits=39"),
            "intel-iommu,aw-bits=39"
        );
        assert_eq!(
            q.iommu_device("intel-iommu", "caching-mode=on"),
            "intel-iommu,aw-bits=48,caching-mode=on"
        );
        assert_eq!(q.iommu_device("amd-iommu", ""), "amd-iommu,pt=off");
        assert_eq!(q.iommu_device("amd-iommu", "pt=on"), "amd-iommu,pt=on");
    }

    #[test]
    fn parses_versions() {
        assert_eq!(Qemu::parse("7.2"), Ok(Qemu::V7_2));
        assert_eq!(Qemu::parse("10"), Ok(Qemu::V10_0));
        assert!(Qemu::parse("8.2").is_err());
    }
}
