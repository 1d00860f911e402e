//! The real guest binary (built with the `image` profile, as scripts/build-image does), run
//! in a forked host process that plays a minimal hypervisor: guest RAM is an anonymous
//! mapping at gpa = host address, and every privileged instruction the guest executes
//! traps (#GP → SIGSEGV, VMMCALL's #UD → SIGILL) into a handler that emulates it from the
//! AMD APM encodings: MOV from CR0/CR4, IN/OUT EAX,DX (an empty PCI bus), VMMCALL
//! (console write and exit), LIDT (the crash variant) and HLT/CLI. Under KVM a VMMCALL at
//! CPL 3 does not fault (KVM answers it with RAX = -EPERM), so the harness rewrites each
//! `0F 01 D9` of the loaded image to `0F 0B 90` (UD2, NOP) and emulates that instead.
//!
//! This checks what no host unit test can: the link (ET_EXEC at 0x200000, loadable by
//! `lazaret_guest_abi::prepare`), the entry assembly, SSE use after entry, the hypercall
//! register ABI with real gpas, and the exit status. There is no edu here, so the runs end
//! in "no edu device" (NoDevice), BadBoot or the crash.
#![cfg(target_arch = "x86_64")]

use std::io::Read;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use lazaret_guest_abi::layout::DEFAULT_MEMORY_SIZE;
use lazaret_guest_abi::{prepare, GuestExit};

fn guest_binary() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(d) if !d.is_empty() => root.join(d),
            _ => root.join("target"),
        }
        .join("qemu");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(&root)
            .args([
                "build",
                "-q",
                "--profile",
                "image",
                "-p",
                "lazaret-guest-bin",
                "--target-dir",
            ])
            .arg(&target)
            .status()
            .expect("run cargo");
        assert!(status.success(), "building the guest failed");
        target.join("image/lazaret-guest")
    })
}

/// What the child reports through the pipe: console text, then one final line.
static mut PIPE: i32 = -1;
static mut CF8: u32 = 0;

fn report(bytes: &[u8]) {
    // SAFETY: PIPE is the write end, set before the guest runs; write(2) is signal-safe.
    unsafe { libc::write(PIPE, bytes.as_ptr().cast(), bytes.len()) };
}

/// Formats without allocating: the child of a multi-threaded fork must not touch malloc.
struct Line([u8; 160], usize);

impl std::fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let n = s.len().min(self.0.len() - self.1);
        self.0[self.1..self.1 + n].copy_from_slice(&s.as_bytes()[..n]);
        self.1 += n;
        Ok(())
    }
}

fn finish_with(args: std::fmt::Arguments<'_>) -> ! {
    let mut line = Line([0; 160], 0);
    let _ = std::fmt::Write::write_fmt(&mut line, args);
    finish(std::str::from_utf8(&line.0[..line.1]).unwrap_or("\nEND ?\n"))
}

fn finish(line: &str) -> ! {
    report(line.as_bytes());
    // SAFETY: ends the forked child at once, without running the parent's atexit handlers.
    unsafe { libc::_exit(0) }
}

extern "C" fn trap(_sig: i32, _info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid ucontext to an SA_SIGINFO handler.
    let g = unsafe { &mut (*ctx.cast::<libc::ucontext_t>()).uc_mcontext.gregs };
    let rip = g[libc::REG_RIP as usize] as u64;
    // SAFETY: RIP points into the guest image we mapped; instructions are at most 15 bytes.
    let code = unsafe { std::slice::from_raw_parts(rip as *const u8, 3) };
    let (rax, rdx) = (
        g[libc::REG_RAX as usize] as u64,
        g[libc::REG_RDX as usize] as u64,
    );
    let len = match code {
        // MOV r64, CR0 / CR4 with ModRM mod=11, rm=RAX: the contract's entry state.
        [0x0f, 0x20, 0xc0] => {
            g[libc::REG_RAX as usize] = 0x8005_0033;
            3
        }
        [0x0f, 0x20, 0xe0] => {
            g[libc::REG_RAX as usize] = 0x620;
            3
        }
        [0x0f, 0x22, _] => finish("\nEND cr-write (the entry state should have sufficed)\n"),
        // OUT DX, EAX / IN EAX, DX: CONFIG_ADDRESS latches, CONFIG_DATA reads an empty bus.
        [0xef, ..] => {
            if rdx as u16 == 0xcf8 {
                // SAFETY: single-threaded child; only this handler touches CF8.
                unsafe { CF8 = rax as u32 };
            }
            1
        }
        [0xed, ..] => {
            let v = if rdx as u16 == 0xcf8 {
                // SAFETY: as above.
                unsafe { CF8 }
            } else {
                u32::MAX
            };
            g[libc::REG_RAX as usize] = i64::from(v);
            1
        }
        // VMMCALL (as rewritten to UD2; NOP).
        [0x0f, 0x0b, 0x90] => {
            let (rdi, rsi) = (
                g[libc::REG_RDI as usize] as u64,
                g[libc::REG_RSI as usize] as u64,
            );
            match rax {
                1 if rsi <= 256 => {
                    // SAFETY: the guest passed a gpa inside the RAM mapping (identity).
                    report(unsafe { std::slice::from_raw_parts(rdi as *const u8, rsi as usize) });
                    g[libc::REG_RAX as usize] = 0;
                }
                2 => finish_with(format_args!("\nEND exit {rdi}\n")),
                _ => g[libc::REG_RAX as usize] = -1,
            }
            3
        }
        [0x0f, 0x01, m] if (m >> 3) & 7 == 3 => finish("\nEND lidt (triple fault next)\n"),
        [0xf4, ..] | [0xfa, ..] => finish("\nEND hlt\n"),
        _ => finish_with(format_args!("\nEND fault at {rip:#x}: {code:02x?}\n")),
    };
    g[libc::REG_RIP as usize] += len;
}

/// Forks, maps guest RAM, prepares the guest, runs it; returns the child's report.
fn run_guest(cmdline: &str) -> Option<String> {
    let elf = std::fs::read(guest_binary()).expect("guest image");
    let mut fds = [0; 2];
    // SAFETY: plain pipe(2) and fork(2); the child only maps memory, installs handlers and
    // jumps into the guest, and leaves through _exit.
    unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        let pid = libc::fork();
        if pid == 0 {
            libc::close(fds[0]);
            PIPE = fds[1];
            child(&elf, cmdline);
        }
        libc::close(fds[1]);
        let mut out = String::new();
        let mut reader = std::fs::File::from_raw_fd_compat(fds[0]);
        let _ = reader.read_to_string(&mut out);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        (!out.contains("END no-ram")).then_some(out)
    }
}

trait FromRawFdCompat {
    /// # Safety
    /// `fd` is an open descriptor this call takes ownership of.
    unsafe fn from_raw_fd_compat(fd: i32) -> Self;
}

impl FromRawFdCompat for std::fs::File {
    unsafe fn from_raw_fd_compat(fd: i32) -> Self {
        use std::os::fd::FromRawFd;
        // SAFETY: the caller hands over an open descriptor.
        unsafe { std::fs::File::from_raw_fd(fd) }
    }
}

/// # Safety
/// Only in the forked child: it replaces the low address space and never returns.
unsafe fn child(elf: &[u8], cmdline: &str) -> ! {
    let ram = DEFAULT_MEMORY_SIZE;
    // SAFETY: a fresh mapping at [4 KiB, RAM) — page 0 stays unmapped, as the contract says.
    let base = unsafe {
        libc::mmap(
            0x1000 as *mut _,
            (ram - 0x1000) as usize,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if base as usize != 0x1000 {
        finish("\nEND no-ram\n");
    }
    let entry = prepare(elf, ram, cmdline, &mut |gpa, bytes| {
        // SAFETY: prepare writes only inside [0x1000, RAM), which is mapped above.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), gpa as *mut u8, bytes.len()) };
        Ok::<(), ()>(())
    })
    .unwrap_or_else(|e| finish_with(format_args!("\nEND prepare failed: {e:?}\n")));
    let image = entry.image.lowest..entry.image.highest;
    // SAFETY: the loaded image lies inside the mapping.
    let text = unsafe {
        std::slice::from_raw_parts_mut(image.start as *mut u8, (image.end - image.start) as usize)
    };
    for i in 0..text.len().saturating_sub(2) {
        if text[i..i + 3] == [0x0f, 0x01, 0xd9] {
            text[i..i + 3].copy_from_slice(&[0x0f, 0x0b, 0x90]);
        }
    }
    static mut ALT: [u8; 64 * 1024] = [0; 64 * 1024];
    // SAFETY: an alternate stack for the handler and the two trapping signals.
    unsafe {
        let ss = libc::stack_t {
            ss_sp: std::ptr::addr_of_mut!(ALT).cast(),
            ss_flags: 0,
            ss_size: 64 * 1024,
        };
        libc::sigaltstack(&ss, std::ptr::null_mut());
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = trap as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
        libc::sigaction(libc::SIGSEGV, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGILL, &sa, std::ptr::null_mut());
        std::arch::asm!("mov rsp, {rsp}", "jmp {rip}", rsp = in(reg) entry.rsp,
                        rip = in(reg) entry.rip, in("rdi") entry.rdi, options(noreturn));
    }
}

fn expect_run(cmdline: &str) -> Option<String> {
    let out = run_guest(cmdline);
    if out.is_none() {
        eprintln!("skipped: cannot map guest RAM at 0x1000 (needs CAP_SYS_RAWIO)");
    }
    out
}

#[test]
fn the_real_binary_boots_scans_an_empty_bus_and_exits_no_device() {
    let Some(out) = expect_run("variant=good") else {
        return;
    };
    assert!(out.contains("up: variant good, 8 MiB of RAM"), "{out}");
    assert!(out.contains("no edu device on bus 0"), "{out}");
    assert!(
        out.ends_with(&format!("END exit {}\n", GuestExit::NoDevice.code())),
        "{out}"
    );
}

#[test]
fn the_real_binary_reports_a_bad_command_line() {
    let Some(out) = expect_run("variant=good colour=red") else {
        return;
    };
    assert!(out.contains("unknown command line key \"colour\""), "{out}");
    assert!(
        out.ends_with(&format!("END exit {}\n", GuestExit::BadBoot.code())),
        "{out}"
    );
}

#[test]
fn the_real_binary_crashes_by_loading_an_empty_idt() {
    let Some(out) = expect_run("variant=crash") else {
        return;
    };
    assert!(out.contains("crash: IDT limit 0"), "{out}");
    assert!(out.ends_with("END lidt (triple fault next)\n"), "{out}");
}
