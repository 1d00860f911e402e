//! One place that knows how Lazaret is booted in QEMU: image build, QEMU command line,
//! serial capture with a hard time-out, exit-status decoding and the structured console
//! lines (`RESULT`, `FIGURE`). The integration tests and `scripts/demo` (through the
//! `lazaret-qemu` binary) both use it, so they cannot drift apart.
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub mod boot_path;
pub mod console;
pub mod qemu;
pub mod xen;

pub use boot_path::{BootPath, Firmware};
pub use console::{Figure, ResultLine};
pub use qemu::Qemu;

/// QEMU exit statuses produced by the kernel through isa-debug-exit (see lazaret-rt `exit`).
pub const STATUS_SUCCESS: i32 = 33;
pub const STATUS_FAILURE: i32 = 35;

/// Which emulated IOMMU the machine has, with extra `-device` properties (`aw-bits=39`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Iommu {
    Intel(String),
    Amd(String),
    None,
}

impl Iommu {
    /// Parses `intel`, `amd`, `none`, optionally followed by `,OPTS` for the QEMU device.
    pub fn parse(s: &str) -> Result<Iommu, String> {
        let (kind, opts) = s.split_once(',').unwrap_or((s, ""));
        match kind {
            "intel" => Ok(Iommu::Intel(opts.into())),
            "amd" => Ok(Iommu::Amd(opts.into())),
            "none" if opts.is_empty() => Ok(Iommu::None),
            _ => Err(format!("unknown IOMMU '{s}': expected intel|amd|none, optionally with ,OPTS (e.g. intel,aw-bits=39)")),
        }
    }

    fn device(&self, qemu: Qemu) -> Option<String> {
        match self {
            Iommu::Intel(o) => Some(qemu.iommu_device("intel-iommu", o)),
            Iommu::Amd(o) => Some(qemu.iommu_device("amd-iommu", o)),
            Iommu::None => None,
        }
    }
}

/// What QEMU passes as multiboot module 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Module {
    /// The kernel, with the command line.
    Kernel,
    /// No module at all (the loader must refuse cleanly).
    Missing,
    /// Some other file in the kernel's place.
    File(PathBuf),
}

/// One QEMU boot of the image.
#[derive(Clone, Debug)]
pub struct Config {
    pub qemu: Qemu,
    pub module: Module,
    pub iommu: Iommu,
    pub cmdline: String,
    pub edu_devices: usize,
    /// edu devices behind one `pcie-pci-bridge` (slot 0x10): conventional PCI, they all DMA
    /// with the bridge's (secondary bus, 00.0) requester ID.
    pub bridged_edu_devices: usize,
    pub memory_mib: u32,
    pub extra_args: Vec<String>,
    pub timeout: Duration,
    /// Guest images after the kernel, each an extra multiboot module `guest NAME ARGS`.
    pub guests: Vec<GuestModule>,
    /// How the firmware finds the image (`-kernel` unless a boot-path test says otherwise).
    pub boot: BootPath,
    pub firmware: Firmware,
}

/// One guest payload module: its name and its command line (`variant=... other=...`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestModule {
    pub name: String,
    pub args: String,
}

impl Default for Config {
    /// The demo machine: QEMU 10.0, q35, Intel IOMMU with 48-bit address width, three edu
    /// devices.
    fn default() -> Config {
        Config {
            qemu: Qemu::REFERENCE,
            module: Module::Kernel,
            iommu: Iommu::Intel(String::new()),
            cmdline: String::new(),
            edu_devices: 3,
            bridged_edu_devices: 0,
            memory_mib: 512,
            extra_args: Vec::new(),
            timeout: Duration::from_secs(120),
            guests: Vec::new(),
            boot: BootPath::Kernel,
            firmware: Firmware::Bios,
        }
    }
}

impl Config {
    pub fn with_cmdline(mut self, cmdline: &str) -> Config {
        self.cmdline = cmdline.to_string();
        self
    }

    /// The demo's machine and story (`scripts/demo`): three edu devices, two good guests and
    /// a rogue one, `-icount shift=10,sleep=off` so edu's 100 ms virtual-clock DMAs cost
    /// microseconds of wall time (the kernel's deadlines are TSC-based, so they stay in
    /// virtual time too), and the quiet log level.
    pub fn demo() -> Config {
        let mut c = Config::default()
            .with_cmdline("scenario=demo log=warn")
            .with_guest("alpha", "memory=4M variant=good")
            .with_guest("beta", "memory=4M variant=good wait=window")
            .with_guest("mallory", "memory=4M variant=rogue-dma");
        c.extra_args = vec!["-icount".into(), "shift=10,sleep=off".into()];
        c
    }

    /// Adds the guest payload as a further module with string `guest NAME ARGS`.
    pub fn with_guest(mut self, name: &str, args: &str) -> Config {
        self.guests.push(GuestModule {
            name: name.to_string(),
            args: args.to_string(),
        });
        self
    }

    pub fn with_qemu(mut self, qemu: Qemu) -> Config {
        self.qemu = qemu;
        self
    }

    /// The full QEMU argument list.
    pub fn qemu_args(&self, images: &Images) -> Vec<String> {
        let mut a: Vec<String> = [
            "-machine",
            "q35",
            "-accel",
            "tcg",
            "-cpu",
            "qemu64,+svm,+npt",
            "-nographic",
            "-nodefaults",
            "-no-reboot",
            "-serial",
            "stdio",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=4",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(["-m".into(), format!("{}M", self.memory_mib)]);
        a.extend(self.boot.args(self.firmware));
        if self.boot == BootPath::Kernel {
            a.extend(["-kernel".into(), images.loader.display().to_string()]);
        }
        // QEMU takes one -initrd and splits it at commas into modules, so commas inside a
        // module string become spaces; the kernel's options go in its module string.
        let module = match &self.module {
            Module::Kernel => Some(images.kernel.clone()),
            Module::Missing => None,
            Module::File(f) => Some(f.clone()),
        };
        let module_string = |path: &Path, args: &str| {
            let s = format!("{} {}", path.display(), args.replace(',', " "));
            s.trim_end().to_string()
        };
        let mut modules: Vec<String> = module
            .iter()
            .map(|path| module_string(path, &self.cmdline))
            .collect();
        for g in &self.guests {
            let args = format!("guest {} {}", g.name, g.args);
            modules.push(module_string(&images.guest, &args));
        }
        if !modules.is_empty() && self.boot == BootPath::Kernel {
            a.extend(["-initrd".into(), modules.join(",")]);
        }
        if let Some(dev) = self.iommu.device(self.qemu) {
            a.extend(["-device".into(), dev]);
        }
        for _ in 0..self.edu_devices {
            a.extend(["-device".into(), "edu".into()]);
        }
        if self.bridged_edu_devices > 0 {
            a.extend([
                "-device".into(),
                "pcie-pci-bridge,id=lzbr0,addr=0x10".into(),
            ]);
            for slot in 1..=self.bridged_edu_devices {
                a.extend(["-device".into(), format!("edu,bus=lzbr0,addr={slot:#x}")]);
            }
        }
        a.extend(self.extra_args.iter().cloned());
        a
    }
}

/// The files QEMU boots: the multiboot loader, the kernel module and the guest payload.
#[derive(Clone, Debug)]
pub struct Images {
    pub loader: PathBuf,
    pub kernel: PathBuf,
    pub guest: PathBuf,
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

/// Cargo's target directory as `scripts/build-image` sees it: `$CARGO_TARGET_DIR` (relative
/// to the workspace root when relative) or `target/`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// Builds the image once per process (the `image` profile, in its own target directory so
/// it never waits on the lock of the `cargo test` that runs us).
pub fn build_images() -> Result<Images, String> {
    static BUILT: OnceLock<Result<Images, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = workspace_root();
            let target = target_dir().join("qemu");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .current_dir(&root)
                .args([
                    "build",
                    "--profile",
                    "image",
                    "-p",
                    "lazaret-boot-bin",
                    "-p",
                    "lazaret-kernel-bin",
                    "-p",
                    "lazaret-guest-bin",
                    "--target-dir",
                ])
                .arg(&target)
                .stdout(Stdio::null())
                .status()
                .map_err(|e| format!("cannot run cargo: {e}"))?;
            if !status.success() {
                return Err(format!("building the image failed ({status})"));
            }
            let dir = target.join("image");
            Ok(Images {
                loader: dir.join("lazaret-boot"),
                kernel: dir.join("lazaret-kernel"),
                guest: dir.join("lazaret-guest"),
            })
        })
        .clone()
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The kernel reported success through isa-debug-exit.
    Success,
    /// The kernel reported failure (a failed check, a panic, an exception).
    Failure,
    /// No exit within the time-out; QEMU was killed.
    TimedOut,
    /// QEMU exited on its own with this status (a triple fault with -no-reboot, a QEMU error).
    Qemu(i32),
}

impl Status {
    /// The status `scripts/demo` exits with.
    pub fn exit_code(self) -> i32 {
        match self {
            Status::Success => 0,
            Status::Failure => 1,
            Status::TimedOut => 124,
            Status::Qemu(_) => 2,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Outcome {
    /// Which QEMU ran, as its `--version` says.
    pub qemu_version: String,
    pub status: Status,
    pub lines: Vec<String>,
    /// When each line reached us, from QEMU's start (`arrived[i]` for `lines[i]`; wall clock,
    /// so it also times runs under `-icount`).
    pub arrived: Vec<Duration>,
    pub wall: Duration,
}

impl Outcome {
    pub fn results(&self) -> Vec<ResultLine> {
        self.lines
            .iter()
            .filter_map(|l| ResultLine::parse(l))
            .collect()
    }

    pub fn figures(&self) -> Vec<Figure> {
        self.lines.iter().filter_map(|l| Figure::parse(l)).collect()
    }

    /// RESULT lines that print Rust `Debug` output (`Ok(..)`, `Err(..)`, `Some(..)`, `None`)
    /// instead of a sentence.
    pub fn debug_output_in_results(&self) -> Vec<String> {
        self.lines
            .iter()
            .filter(|l| l.starts_with("RESULT "))
            .filter(|l| {
                ["Ok(", "Err(", "Some(", "None", "DomainId", "Handle {"]
                    .iter()
                    .any(|d| l.contains(d))
            })
            .cloned()
            .collect()
    }

    pub fn figure(&self, name: &str) -> Option<Figure> {
        self.figures().into_iter().find(|f| f.name == name)
    }

    /// When the first line containing `needle` arrived.
    pub fn arrival(&self, needle: &str) -> Option<Duration> {
        let i = self.lines.iter().position(|l| l.contains(needle))?;
        self.arrived.get(i).copied()
    }

    /// The first line containing `needle`.
    pub fn line(&self, needle: &str) -> Option<&str> {
        self.lines
            .iter()
            .map(String::as_str)
            .find(|l| l.contains(needle))
    }

    /// The whole console, for assertion messages, headed by the QEMU version that ran.
    pub fn transcript(&self) -> String {
        format!("[{}]\n{}", self.qemu_version, self.lines.join("\n"))
    }
}

/// QEMU runs at most two at a time: the machine has two cores and TCG is CPU-bound.
fn qemu_slot() -> std::sync::MutexGuard<'static, usize> {
    static SLOTS: [Mutex<usize>; 2] = [Mutex::new(0), Mutex::new(0)];
    loop {
        for s in &SLOTS {
            if let Ok(g) = s.try_lock() {
                return g;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Boots `config`, capturing the console; `echo` also streams it to our stdout (the demo).
pub fn run(config: &Config, echo: bool) -> Result<Outcome, String> {
    use std::io::IsTerminal;
    let colour = echo && std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let show = |line: &str| {
        if colour {
            println!("{}", console::paint(line));
        } else {
            println!("{line}");
        }
        let _ = std::io::stdout().flush();
    };
    let images = build_images()?;
    let qemu_version = config.qemu.version()?;
    let _slot = qemu_slot();
    let start = Instant::now();
    let mut child = config
        .qemu
        .command()
        .args(config.qemu_args(&images))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!(
                "cannot start {} (run scripts/setup): {e}",
                config.qemu.name()
            )
        })?;
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let stderr = child.stderr.take().ok_or("no stderr pipe")?;
    let (tx, rx) = mpsc::channel::<String>();
    let err_tx = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
            let _ = tx.send(console::clean(&line));
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = err_tx.send(format!("qemu: {line}"));
        }
    });
    let deadline = start + config.timeout;
    let mut lines = Vec::new();
    let mut arrived = Vec::new();
    let status = loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => {
                if echo {
                    show(&line);
                }
                lines.push(line);
                arrived.push(start.elapsed());
                continue;
            }
            Err(mpsc::RecvTimeoutError::Timeout) | Err(mpsc::RecvTimeoutError::Disconnected) => {}
        }
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            // Drain what the reader threads still hold.
            while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
                if echo {
                    show(&line);
                }
                lines.push(line);
                arrived.push(start.elapsed());
            }
            break match st.code() {
                Some(STATUS_SUCCESS) => Status::Success,
                Some(STATUS_FAILURE) => Status::Failure,
                Some(c) => Status::Qemu(c),
                None => Status::Qemu(-1),
            };
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break Status::TimedOut;
        }
    };
    Ok(Outcome {
        qemu_version,
        status,
        lines,
        arrived,
        wall: start.elapsed(),
    })
}

/// Defines one test per QEMU version for a body taking the [`Qemu`] to run: `mod NAME` with
/// `qemu_7_2` and `qemu_10_0`, so every test line names the version it ran on. Attributes
/// (docs, `#[ignore]`) go on both tests.
#[macro_export]
macro_rules! on_every_qemu {
    ($($(#[$meta:meta])* fn $name:ident($qemu:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                fn body($qemu: $crate::Qemu) $body

                $(#[$meta])*
                #[test]
                fn qemu_7_2() {
                    body($crate::Qemu::V7_2)
                }

                $(#[$meta])*
                #[test]
                fn qemu_10_0() {
                    body($crate::Qemu::V10_0)
                }
            }
        )*
    };
}

#[cfg(test)]
mod guest_module_tests {
    use super::*;

    #[test]
    fn guests_follow_the_kernel_in_one_initrd() {
        let images = Images {
            loader: "/i/boot".into(),
            kernel: "/i/kernel".into(),
            guest: "/i/guest".into(),
        };
        let config = Config::default()
            .with_cmdline("scenario=demo,iommu=amd")
            .with_guest("alice", "variant=good")
            .with_guest("bob", "variant=rogue-dma other=0x1000");
        let args = config.qemu_args(&images);
        let at = args.iter().position(|a| a == "-initrd").unwrap();
        assert_eq!(
            args[at + 1],
            "/i/kernel scenario=demo iommu=amd,/i/guest guest alice variant=good,\
             /i/guest guest bob variant=rogue-dma other=0x1000"
        );
        assert_eq!(args.iter().filter(|a| *a == "-initrd").count(), 1);
    }
}
