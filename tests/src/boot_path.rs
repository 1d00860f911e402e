//! How the image reaches the machine, beside QEMU's `-kernel`: an ISO on `-cdrom`, or the
//! NIC's iPXE ROM over QEMU's user network (TFTP, or HTTP from a loopback server reached as
//! 10.0.2.2), on SeaBIOS or on OVMF (UEFI, pflash). The boot directory and the ISO come from
//! `scripts/boot-dir` and `scripts/iso`, so the tests boot exactly what a test box gets.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use crate::{build_images, target_dir, workspace_root};

/// Where the firmware finds the image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum BootPath {
    /// `-kernel` loader `-initrd` kernel: QEMU's own multiboot1 loader.
    #[default]
    Kernel,
    /// `-cdrom ISO`.
    Cdrom(PathBuf),
    /// An e1000 NIC booting `bootfile` (`-boot n` on BIOS, `bootindex=1` on UEFI) over
    /// `-netdev user`, with `tftp` as QEMU's TFTP root; `restrict=on` when there is no
    /// HTTP to reach (QEMU's TFTP still answers), off for HTTP to the host's loopback.
    Network {
        tftp: Option<PathBuf>,
        bootfile: String,
    },
}

/// The machine's firmware.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Firmware {
    /// QEMU's default SeaBIOS.
    #[default]
    Bios,
    /// OVMF from Debian's `ovmf`, code read-only and a throw-away copy of the variables.
    Uefi,
}

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

impl BootPath {
    /// QEMU arguments for everything but `-kernel` (which `Config::qemu_args` keeps).
    pub fn args(&self, firmware: Firmware) -> Vec<String> {
        let mut a = Vec::new();
        if firmware == Firmware::Uefi {
            a.push("-drive".into());
            a.push(format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"));
            a.push("-drive".into());
            // snapshot=on: the run's variable writes go to a temporary overlay.
            a.push(format!("if=pflash,format=raw,snapshot=on,file={OVMF_VARS}"));
        }
        match self {
            BootPath::Kernel => {}
            BootPath::Cdrom(iso) => a.extend(["-cdrom".into(), iso.display().to_string()]),
            BootPath::Network { tftp, bootfile } => {
                let mut netdev = format!(
                    "user,id=n0,restrict={}",
                    if tftp.is_some() { "on" } else { "off" }
                );
                if let Some(dir) = tftp {
                    netdev.push_str(&format!(",tftp={}", dir.display()));
                }
                netdev.push_str(&format!(",bootfile={bootfile}"));
                a.extend(["-netdev".into(), netdev, "-device".into()]);
                match firmware {
                    Firmware::Bios => {
                        a.extend(["e1000,netdev=n0".into(), "-boot".into(), "n".into()])
                    }
                    Firmware::Uefi => a.push("e1000,netdev=n0,bootindex=1".into()),
                }
            }
        }
        a
    }
}

/// Installs the boot-path packages once (`scripts/setup --boot-tools`); `Err` says why they
/// are unavailable, for a test to skip with.
pub fn boot_tools() -> Result<(), String> {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    READY
        .get_or_init(|| {
            let out = Command::new(workspace_root().join("scripts/setup"))
                .arg("--boot-tools")
                .output()
                .map_err(|e| format!("cannot run scripts/setup: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "scripts/setup --boot-tools failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            for f in [
                OVMF_CODE,
                OVMF_VARS,
                "/usr/lib/grub/i386-pc",
                "/usr/lib/grub/x86_64-efi",
            ] {
                if !Path::new(f).exists() {
                    return Err(format!("{f} is missing after scripts/setup --boot-tools"));
                }
            }
            Ok(())
        })
        .clone()
}

fn run_script(script: &str, args: &[String]) -> Result<(), String> {
    build_images()?;
    let out = Command::new(workspace_root().join("scripts").join(script))
        .args(args)
        .arg("--no-build")
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .map_err(|e| format!("cannot run scripts/{script}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "scripts/{script} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `-c cmdline -t 0` and one `-g` per guest (`NAME:FILE[:OPTS]`).
fn image_args(cmdline: &str, guests: &[String]) -> Vec<String> {
    let mut a = vec!["-c".into(), cmdline.into(), "-t".into(), "0".into()];
    for g in guests {
        a.extend(["-g".into(), g.clone()]);
    }
    a
}

/// A boot directory from `scripts/boot-dir` for the kernel command line `cmdline` and the
/// guest modules `guests`, in `target/boot-tests/NAME` (GRUB menu time-out 0).
pub fn boot_dir(name: &str, cmdline: &str, guests: &[String]) -> Result<PathBuf, String> {
    let dir = target_dir().join("boot-tests").join(name);
    let mut args = vec!["-o".to_string(), dir.display().to_string()];
    args.extend(image_args(cmdline, guests));
    run_script("boot-dir", &args)?;
    Ok(dir)
}

/// An ISO from `scripts/iso` for `cmdline` and `guests`, as `target/boot-tests/NAME.iso`.
pub fn iso(name: &str, cmdline: &str, guests: &[String]) -> Result<PathBuf, String> {
    let file = target_dir().join("boot-tests").join(format!("{name}.iso"));
    let mut args = vec!["-o".to_string(), file.display().to_string()];
    args.extend(image_args(cmdline, guests));
    run_script("iso", &args)?;
    Ok(file)
}

/// A small stand-in guest image (`target/boot-tests/tiny-guest.bin`, 4 KiB of a pattern) and
/// its `-g` argument: `tiny:FILE:mem=2M`, so the module string is `guest tiny mem=2M`.
pub fn tiny_guest() -> Result<String, String> {
    let file = target_dir().join("boot-tests").join("tiny-guest.bin");
    std::fs::create_dir_all(target_dir().join("boot-tests")).map_err(|e| e.to_string())?;
    let bytes: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, bytes).map_err(|e| e.to_string())?;
    Ok(format!("tiny:{}:mem=2M", file.display()))
}

/// A static file server on 127.0.0.1 (an ephemeral port) for iPXE's HTTP path: GET only,
/// one thread per connection, every request path recorded.
pub struct HttpServer {
    pub port: u16,
    requests: Arc<Mutex<Vec<String>>>,
}

impl HttpServer {
    pub fn serve(root: &Path) -> Result<HttpServer, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (root, log) = (root.to_path_buf(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (root, log) = (root.clone(), log.clone());
                std::thread::spawn(move || {
                    let _ = answer(stream, &root, &log);
                });
            }
        });
        Ok(HttpServer { port, requests })
    }

    /// The paths requested so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

fn answer(mut stream: TcpStream, root: &Path, log: &Mutex<Vec<String>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
    if let Ok(mut l) = log.lock() {
        l.push(path.clone());
    }
    // Only plain names inside the served directory.
    let name = path.trim_start_matches('/');
    let file = (!name.contains("..") && !name.is_empty()).then(|| root.join(name));
    match file.and_then(|f| std::fs::File::open(f).ok()) {
        Some(mut f) => {
            let mut body = Vec::new();
            f.read_to_end(&mut body)?;
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            stream.write_all(&body)
        }
        None => stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    }
}
