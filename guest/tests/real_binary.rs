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

/// Where the harness puts edu's BAR0 (1 MiB) when there is one.
const BAR: u64 = 0xc000_0000;
const BAR_SIZE: u64 = 1 << 20;

/// The machine the child emulates: CONFIG_ADDRESS, and edu at 00:00.0 when `edu` is set
/// (QEMU `docs/specs/edu.txt`: identification 0x010000ed, liveness, DMA registers; a DMA
/// completes at once).
struct Device {
    edu: bool,
    cf8: u32,
    command: u32,
    bar: u32,
    liveness: u32,
    dma: [u64; 4],
    buffer: [u8; 4096],
    dmas: u32,
}

static mut DEV: Device = Device {
    edu: false,
    cf8: 0,
    command: 0,
    bar: BAR as u32,
    liveness: 0,
    dma: [0; 4],
    buffer: [0; 4096],
    dmas: 0,
};

fn dev() -> &'static mut Device {
    // SAFETY: the forked child is single-threaded and only the signal handler (which does
    // not nest: each trap completes before the guest continues) touches DEV.
    unsafe { &mut *std::ptr::addr_of_mut!(DEV) }
}

impl Device {
    /// The function CONFIG_ADDRESS selects, if it is edu at 00:00.0, and the register.
    fn selected(&self) -> Option<u32> {
        let a = self.cf8;
        (self.edu && a & 0x8000_0000 != 0 && a & 0x00ff_ff00 == 0).then_some(a & 0xfc)
    }

    fn config_read(&self) -> u32 {
        match self.selected() {
            Some(0x00) => 0x11e8_1234,
            Some(0x04) => self.command,
            Some(0x08) => 0x00ff_0010,
            Some(0x10) => self.bar,
            Some(_) => 0,
            None => u32::MAX,
        }
    }

    fn config_write(&mut self, v: u32) {
        match self.selected() {
            Some(0x04) => self.command = v & 0x0547,
            // A 1 MiB 32-bit memory BAR: the low 20 bits are not writable.
            Some(0x10) => self.bar = v & 0xfff0_0000,
            _ => {}
        }
    }

    fn mmio_read(&self, offset: u64) -> u64 {
        match offset {
            0x00 => 0x0100_00ed,
            0x04 => u64::from(!self.liveness),
            0x80 | 0x88 | 0x90 | 0x98 => self.dma[(offset as usize - 0x80) / 8],
            _ => 0,
        }
    }

    fn mmio_write(&mut self, offset: u64, v: u64) {
        match offset {
            0x04 => self.liveness = v as u32,
            0x80 | 0x88 | 0x90 => self.dma[(offset as usize - 0x80) / 8] = v,
            0x98 if v & 1 != 0 => self.run_dma(v),
            _ => {}
        }
    }

    /// Command bit 1: edu → RAM. RAM is the child's mapping at gpa = address; a range
    /// outside [0x1000, RAM) ends the run (there is no IOMMU here to stop it).
    fn run_dma(&mut self, cmd: u64) {
        let [src, dst, count, _] = self.dma;
        let (ram, device) = if cmd & 2 != 0 { (dst, src) } else { (src, dst) };
        let offset = device.wrapping_sub(0x40000) as usize;
        let in_ram = ram >= 0x1000 && ram.saturating_add(count) <= DEFAULT_MEMORY_SIZE;
        if !in_ram || offset.saturating_add(count as usize) >= 4096 {
            finish_with(format_args!("\nEND dma outside RAM at {ram:#x}\n"));
        }
        let buffer = &mut self.buffer[offset..offset + count as usize];
        // SAFETY: [ram, ram + count) lies inside the RAM mapping (checked above).
        let memory = unsafe { std::slice::from_raw_parts_mut(ram as *mut u8, count as usize) };
        if cmd & 2 != 0 {
            memory.copy_from_slice(buffer);
        } else {
            buffer.copy_from_slice(memory);
        }
        self.dmas += 1;
    }
}

/// The general-purpose register numbered `n` (ModRM.reg with REX.R) in the ucontext.
fn gpr(n: u8) -> usize {
    const ORDER: [i32; 16] = [
        libc::REG_RAX,
        libc::REG_RCX,
        libc::REG_RDX,
        libc::REG_RBX,
        libc::REG_RSP,
        libc::REG_RBP,
        libc::REG_RSI,
        libc::REG_RDI,
        libc::REG_R8,
        libc::REG_R9,
        libc::REG_R10,
        libc::REG_R11,
        libc::REG_R12,
        libc::REG_R13,
        libc::REG_R14,
        libc::REG_R15,
    ];
    ORDER[usize::from(n & 15)] as usize
}

/// A MOV between a register (or an immediate) and memory (AMD APM vol. 3: 8B /r load,
/// 89 /r store, C7 /0 store of imm32; REX.W = 64-bit). The faulting address comes from the
/// signal, so only the length of the addressing form is decoded: ModRM, SIB, displacement.
enum Mov {
    Load {
        reg: u8,
        wide: bool,
    },
    Store {
        value: u64,
        wide: bool,
    },
    /// F7 /0: TEST r/m, imm32 (the compiler folds `read_volatile() & bit` into it).
    Test {
        imm: u64,
        wide: bool,
    },
}

fn decode_mov(code: &[u8], g: &[i64]) -> Option<(Mov, u64)> {
    let mut i = 0;
    let rex = if code[0] & 0xf0 == 0x40 {
        i += 1;
        code[0]
    } else {
        0
    };
    let (op, modrm) = (code[i], code[i + 1]);
    i += 2;
    let (md, rm) = (modrm >> 6, modrm & 7);
    let reg = ((modrm >> 3) & 7) | ((rex & 4) << 1);
    if md == 3 {
        return None;
    }
    if rm == 4 {
        let sib = code[i];
        i += 1;
        if md == 0 && sib & 7 == 5 {
            i += 4;
        }
    }
    i += match (md, rm) {
        (0, 5) => 4,
        (1, _) => 1,
        (2, _) => 4,
        _ => 0,
    };
    let wide = rex & 8 != 0;
    let mov = match op {
        0x8b => Mov::Load { reg, wide },
        0x89 => Mov::Store {
            value: g[gpr(reg)] as u64,
            wide,
        },
        0xc7 | 0xf7 if reg & 7 == 0 => {
            let imm = i32::from_le_bytes(code[i..i + 4].try_into().ok()?) as i64 as u64;
            i += 4;
            if op == 0xc7 {
                Mov::Store { value: imm, wide }
            } else {
                Mov::Test { imm, wide }
            }
        }
        _ => return None,
    };
    Some((mov, i as u64))
}

/// An access to guest-physical `addr` that is not RAM: edu's BAR is emulated, anything
/// else is what Lazaret's nested paging must refuse, so the run ends there.
fn mmio(g: &mut [i64], code: &[u8], addr: u64) -> i64 {
    let d = dev();
    let in_bar = d.edu && d.command & 2 != 0 && (BAR..BAR + BAR_SIZE).contains(&addr);
    if !in_bar {
        finish_with(format_args!("\nEND npf at {addr:#x}\n"));
    }
    let Some((mov, len)) = decode_mov(code, g) else {
        finish_with(format_args!("\nEND undecoded MMIO access {code:02x?}\n"));
    };
    match mov {
        Mov::Load { reg, wide } => {
            let v = d.mmio_read(addr - BAR);
            let v = if wide { v } else { v & 0xffff_ffff };
            g[gpr(reg)] = v as i64;
        }
        Mov::Store { value, wide } => {
            let v = if wide { value } else { value & 0xffff_ffff };
            d.mmio_write(addr - BAR, v);
        }
        Mov::Test { imm, wide } => {
            let (r, sign) = match wide {
                true => (d.mmio_read(addr - BAR) & imm, 63),
                false => (d.mmio_read(addr - BAR) & imm & 0xffff_ffff, 31),
            };
            // RFLAGS: CF (0), PF (2), ZF (6), SF (7), OF (11); TEST clears CF and OF.
            let mut f =
                g[libc::REG_EFL as usize] as u64 & !(1 | 1 << 2 | 1 << 6 | 1 << 7 | 1 << 11);
            f |= u64::from((r as u8).count_ones().is_multiple_of(2)) << 2;
            f |= u64::from(r == 0) << 6;
            f |= ((r >> sign) & 1) << 7;
            g[libc::REG_EFL as usize] = f as i64;
        }
    }
    len as i64
}

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

extern "C" fn trap(_sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as u64;
    // SAFETY: the kernel passes a valid ucontext to an SA_SIGINFO handler.
    let g = unsafe { &mut (*ctx.cast::<libc::ucontext_t>()).uc_mcontext.gregs };
    let rip = g[libc::REG_RIP as usize] as u64;
    // SAFETY: RIP points into the guest image we mapped; instructions are at most 15 bytes.
    let code = unsafe { std::slice::from_raw_parts(rip as *const u8, 15) };
    let (rax, rdx) = (
        g[libc::REG_RAX as usize] as u64,
        g[libc::REG_RDX as usize] as u64,
    );
    let len = match code[..3] {
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
        // OUT DX, EAX / IN EAX, DX: CONFIG_ADDRESS and CONFIG_DATA.
        [0xef, ..] => {
            match rdx as u16 {
                0xcf8 => dev().cf8 = rax as u32,
                0xcfc => dev().config_write(rax as u32),
                _ => {}
            }
            1
        }
        [0xed, ..] => {
            let v = match rdx as u16 {
                0xcf8 => dev().cf8,
                0xcfc => dev().config_read(),
                _ => u32::MAX,
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
                2 => finish_with(format_args!("\nEND exit {rdi} after {} DMAs\n", dev().dmas)),
                _ => g[libc::REG_RAX as usize] = -1,
            }
            3
        }
        [0x0f, 0x01, m] if (m >> 3) & 7 == 3 => finish("\nEND lidt (triple fault next)\n"),
        [0xf4, ..] | [0xfa, ..] => finish("\nEND hlt\n"),
        _ if addr >= DEFAULT_MEMORY_SIZE => mmio(g, code, addr),
        _ => finish_with(format_args!(
            "\nEND fault at {rip:#x} ({addr:#x}): {:02x?}\n",
            &code[..4]
        )),
    };
    g[libc::REG_RIP as usize] += len;
}

/// Forks, maps guest RAM, prepares the guest, runs it; returns the child's report.
fn run_guest(cmdline: &str, edu: bool) -> Option<String> {
    let elf = std::fs::read(guest_binary()).expect("guest image");
    let mut fds = [0; 2];
    // SAFETY: plain pipe(2) and fork(2); the child only maps memory, installs handlers and
    // jumps into the guest, and leaves through _exit.
    unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        let pid = libc::fork();
        if pid == 0 {
            dev().edu = edu;
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

fn expect_run(cmdline: &str, edu: bool) -> Option<String> {
    let out = run_guest(cmdline, edu);
    if out.is_none() {
        eprintln!("skipped: cannot map guest RAM at 0x1000 (needs CAP_SYS_RAWIO)");
    }
    out
}

#[test]
fn the_real_binary_boots_scans_an_empty_bus_and_exits_no_device() {
    let Some(out) = expect_run("variant=good", false) else {
        return;
    };
    assert!(out.contains("up: variant good, 8 MiB of RAM"), "{out}");
    assert!(out.contains("no edu device on bus 0"), "{out}");
    assert!(
        out.ends_with(&format!(
            "END exit {} after 0 DMAs\n",
            GuestExit::NoDevice.code()
        )),
        "{out}"
    );
}

#[test]
fn the_real_binary_reports_a_bad_command_line() {
    let Some(out) = expect_run("variant=good colour=red", false) else {
        return;
    };
    assert!(out.contains("unknown command line key \"colour\""), "{out}");
    assert!(
        out.ends_with(&format!(
            "END exit {} after 0 DMAs\n",
            GuestExit::BadBoot.code()
        )),
        "{out}"
    );
}

#[test]
fn the_real_binary_crashes_by_loading_an_empty_idt() {
    let Some(out) = expect_run("variant=crash", false) else {
        return;
    };
    assert!(out.contains("crash: IDT limit 0"), "{out}");
    assert!(out.ends_with("END lidt (triple fault next)\n"), "{out}");
}

#[test]
fn the_real_binary_round_trips_through_an_emulated_edu() {
    let Some(out) = expect_run("variant=good", true) else {
        return;
    };
    assert!(
        out.contains("edu at 00:00.0, BAR0 0xc0000000 (1024 KiB), bus mastering on"),
        "{out}"
    );
    assert!(out.contains("PASS: DMA round trip"), "{out}");
    assert!(out.ends_with("END exit 0 after 2 DMAs\n"), "{out}");
}

#[test]
fn the_real_binary_rogue_mmio_touches_the_window_outside_its_bar_first() {
    let Some(out) = expect_run("variant=rogue-mmio iommu=0xfed90000", true) else {
        return;
    };
    assert!(out.contains("reading 0xc0100000"), "{out}");
    assert!(out.ends_with("END npf at 0xc0100000\n"), "{out}");
}

#[test]
#[ignore = "prints a transcript: cargo test -p lazaret-guest --test real_binary -- --ignored --nocapture"]
fn transcript() {
    for (cmdline, edu) in [
        ("variant=good", true),
        ("variant=rogue-dma other=0x1234000", true),
    ] {
        println!(
            "--- {cmdline}\n{}",
            run_guest(cmdline, edu).unwrap_or_default()
        );
    }
}
