//! `lazaret-qemu [--qemu 10.0|7.2] [--iommu intel|amd|none[,OPTS]] [--cmdline "key=value ..."]
//! [--edu N] [--timeout SECS] [-- QEMU ARGS]`: boots the image in QEMU (10.0 unless told
//! otherwise), streams the console and exits with the hypervisor's status (0 success,
//! 1 failure, 124 time-out, 2 QEMU error). `scripts/demo` runs it; without `--cmdline` it runs
//! `scenario=demo`.
use std::time::Duration;

use lazaret_tests::{run, Config, Iommu, Qemu, Status};

const USAGE: &str = "usage: scripts/demo [--qemu 10.0|7.2] [--iommu intel|amd|none[,OPTS]] [--cmdline \"key=value ...\"] [--edu N] [--timeout SECS] [-- QEMU ARGS]";

fn parse(args: &[String]) -> Result<Config, String> {
    let mut config = Config::demo();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or(format!("{name} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--qemu" => config.qemu = Qemu::parse(&value("--qemu")?)?,
            "--iommu" => config.iommu = Iommu::parse(&value("--iommu")?)?,
            "--cmdline" => config.cmdline = value("--cmdline")?,
            "--edu" => {
                config.edu_devices = value("--edu")?
                    .parse()
                    .map_err(|_| format!("--edu takes a number\n{USAGE}"))?
            }
            "--timeout" => {
                let secs: u64 = value("--timeout")?
                    .parse()
                    .map_err(|_| format!("--timeout takes seconds\n{USAGE}"))?;
                config.timeout = Duration::from_secs(secs);
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            "--" => {
                config.extra_args.extend(it.by_ref().cloned());
            }
            other => return Err(format!("unknown argument '{other}'\n{USAGE}")),
        }
    }
    Ok(config)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    match run(&config, true) {
        Ok(outcome) => {
            eprintln!("demo: ran on {}", outcome.qemu_version);
            let failed = outcome.results().iter().filter(|r| !r.pass).count();
            let verdict = match outcome.status {
                Status::Success => "success".to_string(),
                Status::Failure => "failure".to_string(),
                Status::TimedOut => format!(
                    "no exit within {} s (QEMU killed)",
                    config.timeout.as_secs()
                ),
                Status::Qemu(c) => format!("QEMU exited by itself with status {c}"),
            };
            eprintln!(
                "demo: {verdict}; {} RESULT line(s), {failed} failed; QEMU wall time {:.2} s",
                outcome.results().len(),
                outcome.wall.as_secs_f64()
            );
            std::process::exit(outcome.status.exit_code());
        }
        Err(e) => {
            eprintln!("demo: {e}");
            std::process::exit(2);
        }
    }
}
