//! lazaret-boot: the multiboot1 / multiboot2 stage-0 loader. `entry.s` brings the CPU to long
//! mode; this file reads whichever boot information it was given, finds the kernel (module
//! 0), loads it with hermit-entry and jumps to it with one multiboot1 structure rebuilt for
//! every path (`lazaret_boot::handoff`) and the RSDP, when the boot loader gave one, as
//! `acpi_rsdp=` on the command line. Every failure prints one clear line on COM1 and ends
//! the run with the failure status.
#![no_std]
#![no_main]

use core::fmt::Write;
use core::mem::MaybeUninit;
use core::num::{NonZeroU16, NonZeroU64};

use buddy_system_allocator::LockedHeap;
use hermit_entry::boot_info::{BootInfo, HardwareInfo, PlatformInfo, RawBootInfo};
use hermit_entry::elf::KernelObject;
use lazaret_boot::placement::{self, Range};
use lazaret_boot::{cmdline, elf_check, handoff};
use lazaret_rt::exit::{exit, ExitCode};
use lazaret_rt::multiboot::{self, MultibootInfo, RegionKind};
use lazaret_rt::multiboot2;
use uart_16550::{Config, Uart16550Tty};

lazaret_rt::freestanding_runtime!();
core::arch::global_asm!(include_str!("entry.s"), options(att_syntax));

const COM1: u16 = 0x3f8;
/// Virtual address where entry.s maps the first 4 GiB a second time (PML4 entry 1).
const PHYS_ALIAS: u64 = 1 << 39;

/// hermit-entry's loader side uses `alloc`; it needs little, so a small static heap does.
#[global_allocator]
static HEAP: LockedHeap<24> = LockedHeap::new();
static mut HEAP_SPACE: [u8; 256 * 1024] = [0; 256 * 1024];

/// Storage that outlives the loader: the kernel reads both through `RawBootInfo`, and the
/// kernel never hands out memory below its own image, where these live.
static mut CMDLINE: [u8; multiboot::MAX_CMDLINE] = [0; multiboot::MAX_CMDLINE];
static mut RAW_BOOT_INFO: MaybeUninit<RawBootInfo> = MaybeUninit::uninit();
static mut HANDOFF: Handoff = Handoff([0; handoff::SIZE]);

/// The multiboot1 structure the kernel reads, 8-aligned like a loader's would be.
#[repr(align(8))]
struct Handoff([u8; handoff::SIZE]);

extern "C" {
    static __load_start: u8;
    static __bss_end: u8;
}

struct Console(Option<Uart16550Tty<uart_16550::backend::PioBackend>>);

impl Write for Console {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        match &mut self.0 {
            Some(tty) => tty.write_str(s),
            None => Ok(()),
        }
    }
}

fn console() -> Console {
    // SAFETY: COM1 is the legacy serial port at 0x3f8..0x3ff, which nothing else drives
    // while the loader runs.
    Console(unsafe { Uart16550Tty::new_port(COM1, Config::default()) }.ok())
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let _ = writeln!(console(), "lazaret-boot: panic: {info}");
    exit(ExitCode::Failure)
}

#[no_mangle]
extern "C" fn loader_main(magic: u32, info_addr: u32) -> ! {
    let mut con = console();
    let protocol = match magic {
        multiboot2::BOOTLOADER_MAGIC => "multiboot2",
        _ => "multiboot1",
    };
    let _ = writeln!(con, "lazaret-boot: {protocol} loader started");
    let message = match load(&mut con, magic, info_addr) {
        Ok(never) => match never {},
        Err(m) => m,
    };
    let _ = writeln!(con, "lazaret-boot: error: {message}");
    exit(ExitCode::Failure)
}

enum Never {}

fn load(con: &mut Console, magic: u32, info_addr: u32) -> Result<Never, LoadError> {
    let addr = info_addr as u64;
    let (info, info_size) = match magic {
        multiboot::BOOTLOADER_MAGIC => {
            // SAFETY: a multiboot1 loader entered us with EBX pointing at its boot
            // information, and our page tables identity-map the first 4 GiB where it lives.
            (unsafe { MultibootInfo::read(addr) }, 4096)
        }
        multiboot2::BOOTLOADER_MAGIC => {
            // SAFETY: as above, for a multiboot2 loader.
            let info = unsafe { MultibootInfo::read_v2(addr) };
            // SAFETY: the first field of the information is its size (read again only for
            // placement; read_v2 has bounded it when it succeeded).
            let size = unsafe { (addr as *const u32).read_unaligned() };
            (info, u64::from(size))
        }
        _ => {
            return Err(LoadError::Multiboot(multiboot::MultibootError::BadMagic(
                magic,
            )))
        }
    };
    let info = info.map_err(LoadError::Multiboot)?;
    match info.rsdp {
        Some(r) => {
            let _ = writeln!(
                con,
                "lazaret-boot: ACPI RSDP from the boot loader at {r:#x}"
            );
        }
        None => {
            let _ = writeln!(con, "lazaret-boot: no RSDP from the boot loader (multiboot1); the kernel scans the BIOS area");
        }
    }
    let is_padding = |m: &multiboot::Module| {
        // SAFETY: boot-loader strings are NUL-terminated and identity-mapped.
        m.string != 0 && unsafe { multiboot::c_string(m.string) }.is_ok_and(cmdline::is_padding)
    };
    let module = *info
        .modules()
        .iter()
        .find(|m| !is_padding(m))
        .ok_or(LoadError::NoModule)?;
    let len = usize::try_from(module.end - module.start).map_err(|_| LoadError::NoModule)?;
    let _ = writeln!(
        con,
        "lazaret-boot: kernel module {:#x}..{:#x} ({} KiB)",
        module.start,
        module.end,
        len / 1024
    );
    // GRUB on UEFI may put a module at physical 0, where no Rust slice may start: read it
    // through the loader's second identity map at PHYS_ALIAS (entry.s).
    // SAFETY: the boot loader placed module 0 at [start, end) and nothing writes it; the
    // alias maps the first 4 GiB, where multiboot modules live (32-bit addresses).
    let elf = unsafe { core::slice::from_raw_parts((PHYS_ALIAS + module.start) as *const u8, len) };
    elf_check::check(elf).map_err(LoadError::Elf)?;

    // SAFETY: HEAP_SPACE is used by nothing but this allocator, initialised once here.
    unsafe {
        HEAP.lock()
            .init(core::ptr::addr_of_mut!(HEAP_SPACE) as usize, 256 * 1024)
    };
    let object = KernelObject::parse(elf).map_err(|_| LoadError::Hermit)?;

    let cmdline = compose_cmdline(&info, module.string)?;
    let size = object.mem_size() as u64;
    let start = match object.start_addr() {
        Some(fixed) => fixed,
        None => choose_address(&info, info_addr as u64, info_size, size)?,
    };
    // SAFETY: only this function touches HANDOFF, once, before the kernel (its only reader)
    // runs; the loader image it lives in stays below the kernel, which never hands it out.
    let handoff_buf = unsafe { &mut (*core::ptr::addr_of_mut!(HANDOFF)).0 };
    let handoff_addr = handoff_buf.as_ptr() as u64;
    handoff::encode_v1(&info, handoff_addr, handoff_buf, is_padding).map_err(LoadError::Handoff)?;
    let _ = writeln!(
        con,
        "lazaret-boot: loading the kernel at {:#x}..{:#x}",
        start,
        start + size
    );
    // SAFETY: `start..start+size` is available RAM above everything in use (placement::choose)
    // or the kernel's fixed link address, and identity-mapped.
    let memory =
        unsafe { core::slice::from_raw_parts_mut(start as *mut MaybeUninit<u8>, size as usize) };
    let loaded = object.load_kernel(memory, start);

    let boot_info = BootInfo {
        hardware_info: HardwareInfo {
            phys_addr_range: 0..info.top_of_ram(),
            serial_port_base: NonZeroU16::new(COM1),
            device_tree: None,
        },
        load_info: loaded.load_info,
        platform_info: PlatformInfo::Multiboot {
            command_line: Some(cmdline),
            multiboot_info_addr: NonZeroU64::new(handoff_addr).ok_or(LoadError::NoModule)?,
        },
    };
    let _ = writeln!(
        con,
        "lazaret-boot: cmdline \"{cmdline}\"; entering kernel at {:#x}",
        loaded.entry_point
    );
    // SAFETY: written once, before the kernel (its only reader) runs.
    let raw: &'static RawBootInfo =
        unsafe { (*core::ptr::addr_of_mut!(RAW_BOOT_INFO)).write(boot_info.into()) };
    // SAFETY: hermit-entry loaded and relocated the kernel; its entry has the hermit-entry
    // signature (checked by the entry-version note) and we are the boot processor.
    let entry: hermit_entry::Entry = unsafe { core::mem::transmute(loaded.entry_point as usize) };
    // SAFETY: as above.
    unsafe { entry(raw, 0) }
}

fn compose_cmdline(info: &MultibootInfo, module_string: u64) -> Result<&'static str, LoadError> {
    let read = |addr: Option<u64>| match addr.filter(|a| *a != 0) {
        // SAFETY: boot-loader strings are NUL-terminated and identity-mapped.
        Some(a) => unsafe { multiboot::c_string(a) }.map_err(LoadError::Multiboot),
        None => Ok(&b""[..]),
    };
    let (loader, module) = (read(info.cmdline)?, read(Some(module_string))?);
    let mut found = Small([0; 32], 0);
    if let Some(rsdp) = info.rsdp {
        let _ = write!(found, "acpi_rsdp={rsdp:#x}");
    }
    // SAFETY: only this function touches CMDLINE, once, before the kernel runs.
    let buf = unsafe { &mut *core::ptr::addr_of_mut!(CMDLINE) };
    let n = cmdline::compose(&[&found.0[..found.1], loader, module], buf)
        .ok_or(LoadError::CmdlineTooLong)?;
    core::str::from_utf8(&buf[..n]).map_err(|_| LoadError::CmdlineNotUtf8)
}

/// A few bytes formatted without an allocator (the `acpi_rsdp=` option); what does not fit
/// is an error the caller ignores, leaving the option out.
struct Small([u8; 32], usize);

impl Write for Small {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.1 + s.len();
        self.0
            .get_mut(self.1..end)
            .ok_or(core::fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.1 = end;
        Ok(())
    }
}

fn choose_address(
    info: &MultibootInfo,
    info_addr: u64,
    info_size: u64,
    size: u64,
) -> Result<u64, LoadError> {
    let mut available = [Range { start: 0, end: 0 }; multiboot::MAX_REGIONS];
    let mut n = 0;
    for r in info
        .regions()
        .iter()
        .filter(|r| r.kind == RegionKind::Available)
    {
        available[n] = Range {
            start: r.base,
            end: r.end(),
        };
        n += 1;
    }
    let mut occupied = [Range { start: 0, end: 0 }; multiboot::MAX_MODULES + 2];
    // Linker-script symbols: only their addresses are taken.
    let (image_start, image_end) = (
        core::ptr::addr_of!(__load_start) as u64,
        core::ptr::addr_of!(__bss_end) as u64,
    );
    occupied[0] = Range {
        start: image_start,
        end: image_end,
    };
    occupied[1] = Range {
        start: info_addr,
        end: info_addr + info_size,
    };
    for (slot, m) in occupied[2..].iter_mut().zip(info.modules()) {
        *slot = Range {
            start: m.start,
            end: m.end,
        };
    }
    placement::choose(&available[..n], &occupied, size).ok_or(LoadError::NoRoom(size))
}

enum LoadError {
    Multiboot(multiboot::MultibootError),
    NoModule,
    Elf(elf_check::ElfError),
    Hermit,
    CmdlineTooLong,
    CmdlineNotUtf8,
    NoRoom(u64),
    Handoff(handoff::HandoffError),
}

impl core::fmt::Display for LoadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LoadError::Multiboot(e) => write!(f, "boot information: {e}"),
            LoadError::NoModule => {
                f.write_str("no kernel: pass the kernel ELF as multiboot module 0")
            }
            LoadError::Elf(e) => write!(f, "module 0 is not a loadable kernel: {e}"),
            LoadError::Hermit => f.write_str(
                "module 0 is not a hermit-entry kernel (entry-version note missing or wrong)",
            ),
            LoadError::CmdlineTooLong => write!(
                f,
                "command line longer than {} bytes",
                multiboot::MAX_CMDLINE
            ),
            LoadError::CmdlineNotUtf8 => f.write_str("command line is not UTF-8"),
            LoadError::NoRoom(size) => {
                write!(f, "no available RAM region holds the {size}-byte kernel")
            }
            LoadError::Handoff(handoff::HandoffError::Above4GiB(a)) => write!(
                f,
                "boot information at {a:#x} is above 4 GiB, out of multiboot1's reach"
            ),
        }
    }
}
