//! The bring-up sequence (`design.md` §1), each stage logged, then the chosen scenario.

use hermit_entry::boot_info::{BootInfo, PlatformInfo, RawBootInfo};
use lazaret_rt::exit::{exit, ExitCode};
use lazaret_rt::multiboot::{MultibootInfo, RegionKind};
use lazaret_types::FrameAllocator;
use log::{info, warn};

use crate::arch::paging;
use crate::arch::{gdt, idt, tsc};
use crate::cmdline::Serial;
use crate::console::{self, figure};
use crate::hypervisor::{Hypervisor, Passthrough};
use crate::iommu::discover::KernelVtd;
use crate::mm::frames::{self, Frames};
use crate::mm::heap::KernelHeap;
use crate::mm::layout::{self, KernelLayout, FOUR_GIB};
use crate::mm::ranges::{self, Range};
use crate::passthrough::iommu::Inspect;
use crate::{cmdline, platform, scenario};

const HEAP_SIZE: u64 = 16 << 20;
const COM1: u16 = 0x3f8;

/// Lists modules 1.. (guest images, string `guest NAME key=value…`) as the kernel sees them,
/// whatever the boot path: the loader's rebuilt list, leading image paths dropped.
fn log_extra_modules(mb: &MultibootInfo) {
    for (i, m) in mb.modules().iter().enumerate().skip(1) {
        let raw = match m.string {
            0 => Ok(&b""[..]),
            // SAFETY: module strings are NUL-terminated boot-loader memory below the kernel,
            // identity-mapped and never handed out.
            addr => unsafe { lazaret_rt::multiboot::c_string(addr) },
        };
        let words = raw.map(lazaret_rt::multiboot::without_image_path);
        let text = match words.as_deref().map(core::str::from_utf8) {
            Ok(Ok(t)) => t,
            Ok(Err(_)) => "<not UTF-8>",
            Err(_) => "<no NUL within 4 KiB>",
        };
        info!(
            "module {i}: {:#x}..{:#x} ({} KiB) \"{text}\"",
            m.start,
            m.end,
            (m.end - m.start) / 1024
        );
    }
}

/// Moves the console to the UART the ACPI SPCR table names (the BMC's serial-over-LAN port on
/// servers), when it is a 16550 in I/O space other than the current `(port, baud)`.
fn follow_spcr(platform: &platform::acpi::Platform, (port, baud): (u16, u32)) {
    let Some(table) = platform.raw_table(b"SPCR") else {
        info!("serial: no SPCR table; staying on {port:#x} at {baud} baud");
        return;
    };
    let spcr = match acpi_iommu::Spcr::parse(table) {
        Ok(s) => s,
        Err(e) => return warn!("serial: SPCR unusable ({e}); staying on {port:#x}"),
    };
    let new_baud = spcr.baud.unwrap_or(Serial::DEFAULT_BAUD);
    match spcr.address {
        acpi_iommu::UartAddress::Port(p) if spcr.is_16550() => {
            if (p, new_baud) == (port, baud) {
                return info!("serial: SPCR names this port ({p:#x} at {baud} baud)");
            }
            info!("serial: SPCR names {p:#x} at {new_baud} baud; the console moves there");
            if console::init(p, new_baud) {
                info!("serial: console on {p:#x} at {new_baud} baud per SPCR (moved from {port:#x})");
            } else {
                console::init(port, baud);
                warn!("serial: no 16550 answered at {p:#x} (SPCR); staying on {port:#x}");
            }
        }
        other => warn!(
            "serial: SPCR names a UART Lazaret cannot drive ({other:?}, interface type {:#x}); staying on {port:#x}",
            spcr.interface_type
        ),
    }
}

fn fatal(what: &str, why: &dyn core::fmt::Display) -> ! {
    log::error!("{what}: {why}");
    console::print(format_args!("LAZARET EXIT failure\n"));
    exit(ExitCode::Failure)
}

pub fn start(
    raw: &'static RawBootInfo,
    cpu_id: u32,
    entry_tsc: u64,
    heap: &'static KernelHeap,
) -> ! {
    tsc::set_entry(entry_tsc);
    let boot_info = BootInfo::from(*raw);
    let platform_info = match boot_info.platform_info {
        PlatformInfo::Multiboot {
            command_line,
            multiboot_info_addr,
        } => Some((command_line.unwrap_or(""), multiboot_info_addr.get())),
        _ => None,
    };
    let command_line = platform_info.map_or("", |(c, _)| c);
    let loader_port = boot_info
        .hardware_info
        .serial_port_base
        .map_or(COM1, |p| p.get());
    let (port, baud, chosen_by) = match cmdline::early_serial(command_line) {
        Serial::Port { base, baud } => (base, baud, "console="),
        Serial::Auto => (
            loader_port,
            Serial::DEFAULT_BAUD,
            "default until ACPI SPCR is read",
        ),
    };
    let serial = console::init(port, baud);
    let (ticks_per_ms, pit_ok) = tsc::calibrate();
    console::init_logger(cmdline::early_log(command_line));
    info!("Lazaret {} on CPU {cpu_id}", env!("CARGO_PKG_VERSION"));
    // SAFETY: reading CR4 has no side effects.
    let cr4 = unsafe { x86::controlregs::cr4() };
    info!(
        "sse: enabled (CR4.OSFXSR={})",
        cr4.contains(x86::controlregs::Cr4::CR4_ENABLE_SSE) as u8
    );
    info!(
        "serial: {port:#x} at {baud} baud ({chosen_by}; {})",
        if serial { "16550 answered" } else { "no UART" }
    );
    if pit_ok {
        info!(
            "tsc: {}.{:03} MHz, calibrated against the PIT",
            ticks_per_ms / 1000,
            ticks_per_ms % 1000
        );
    } else {
        warn!("tsc: PIT did not answer; assuming 1 GHz (timestamps approximate)");
    }

    gdt::init();
    idt::init();
    info!("cpu: GDT, TSS and IDT loaded; 256 vectors, each on an IST stack");

    let Some((command_line, mbi)) = platform_info else {
        fatal(
            "boot",
            &"the loader did not use the multiboot platform; no memory map",
        )
    };
    // SAFETY: the loader passed the multiboot1 information it rebuilt (lazaret-boot
    // `handoff`), which lies in its image below the kernel and, like the firmware memory it
    // points to, is identity-mapped by the loader's tables we still run on.
    let mb = unsafe { MultibootInfo::read(mbi) }.unwrap_or_else(|e| fatal("memory map", &e));
    let kernel = KernelLayout::current();
    for r in mb.regions() {
        info!("memory: {:#014x}-{:#014x} {:?}", r.base, r.end(), r.kind);
    }
    let module_size = mb.modules().first().map_or(0, |m| m.end - m.start);
    log_extra_modules(&mb);

    // Everything below the kernel's end is the loader's, the firmware's or the modules'
    // (the loader puts the kernel above all of them).
    let avail: [Range; lazaret_rt::multiboot::MAX_REGIONS] = core::array::from_fn(|i| {
        mb.regions()
            .get(i)
            .filter(|r| r.kind == RegionKind::Available)
            .map_or(Range::new(0, 0), |r| Range::new(r.base, r.end()))
    });
    // The heap comes first (the frame allocator's bookkeeping lives on it), found without
    // allocating, below 4 GiB where the loader's page tables still map it.
    let heap_range = ranges::first_fit(&avail, kernel.end, HEAP_SIZE, FOUR_GIB)
        .unwrap_or_else(|| fatal("heap", &"no free RAM range of 16 MiB below 4 GiB"));
    // SAFETY: the range is free RAM above the kernel, identity-mapped, used by nothing else.
    unsafe { heap.init(heap_range) };
    info!("heap: {} MiB at {:#x}", HEAP_SIZE >> 20, heap_range.start);
    let guest_images = crate::guest::modules::collect(mb.modules());

    let (options, warnings) = cmdline::parse(command_line);
    log::set_max_level(options.log);
    info!("cmdline: \"{command_line}\"");
    for w in &warnings {
        warn!("cmdline: {w}");
    }
    info!(
        "options: log={} quarantine={} scenario={}",
        options.log,
        options.quarantine,
        options.scenario.name()
    );

    let free = ranges::free_ranges(&avail, &[Range::new(0, kernel.end), heap_range]);
    let mut frames = Frames::new(frames::zero_identity_mapped);
    for r in free.iter().filter(|r| r.end <= FOUR_GIB) {
        frames.add(*r);
    }
    let map = layout::page_map(mb.regions(), &kernel);
    let table_frames = paging::init(&map, &mut frames).unwrap_or_else(|e| fatal("paging", &e));
    for r in free.iter().filter(|r| r.end > FOUR_GIB) {
        frames.add(Range::new(r.start.max(FOUR_GIB), r.end));
    }
    info!(
        "paging: own tables live ({table_frames} frames): RAM RW+NX, text RX, rodata R, firmware uncached"
    );
    info!(
        "frames: {} free of {} MiB usable, {} in use",
        frames.total() - frames.frames_in_use(),
        frames.total() * 4 / 1024,
        frames.frames_in_use()
    );
    info!(
        "image: kernel {} KiB in memory (text {} KiB, rodata {} KiB, data+bss {} KiB), module {} KiB",
        (kernel.end - kernel.start) / 1024,
        (kernel.text_end - kernel.start) / 1024,
        (kernel.rodata_end - kernel.text_end) / 1024,
        (kernel.end - kernel.rodata_end) / 1024,
        module_size / 1024
    );
    figure(
        "kernel-image-memory",
        (kernel.end - kernel.start) / 1024,
        "KiB",
    );
    figure("kernel-module-size", module_size / 1024, "KiB");

    let platform = match platform::acpi::discover(options.acpi_rsdp) {
        Ok(p) => p,
        Err(e) => fatal("acpi", &e),
    };
    info!(
        "acpi: RSDP at {:#x} from {} rev {} OEM {:?}; {} CPU(s); tables: {}",
        platform.rsdp,
        platform.rsdp_source,
        platform.revision,
        acpi_iommu::reader::Ascii(&platform.oem_id),
        platform.cpus.len(),
        TableList(&platform.tables)
    );
    if options.console == Serial::Auto {
        follow_spcr(&platform, (port, baud));
    }
    for w in &platform.ecam {
        info!(
            "acpi: ECAM segment {} buses {:#04x}-{:#04x} at {:#x}",
            w.segment, w.bus_start, w.bus_end, w.base
        );
    }

    let (config, pci) = platform::pci::discover(&platform.ecam, &mut frames);
    info!(
        "pci: {} function(s), {} issue(s):",
        pci.functions.len(),
        pci.issues.len()
    );
    if log::max_level() >= log::LevelFilter::Info {
        console::print(format_args!("{pci}"));
    }
    let (passthrough, iommu_failure) = match platform::quarantine::bring_up(
        &platform,
        &pci,
        &mut frames,
        options.quarantine,
        options.intremap,
    ) {
        Ok(p) => (p, None),
        Err(e) => {
            log::error!("iommu: bring-up failed: {e}");
            (None, Some(e))
        }
    };

    let ready_us = tsc::micros_since_entry();
    info!(
        "ready: {}.{:03} ms from kernel entry; heap {} KiB used",
        ready_us / 1000,
        ready_us % 1000,
        heap.used() / 1024
    );
    figure(
        "boot-to-ready",
        format_args!("{}.{:03}", ready_us / 1000, ready_us % 1000),
        "ms",
    );
    let scenario = options.scenario;
    let machine = (options, frames, pci, config, iommu_failure, guest_images);
    let code = match passthrough {
        Some(Passthrough::Vtd(lock)) => run_scenario(scenario, machine, Some(lock)),
        Some(Passthrough::Amd(lock)) => run_scenario(scenario, machine, Some(lock)),
        None => run_scenario::<KernelVtd>(scenario, machine, None),
    };
    console::print(format_args!(
        "LAZARET EXIT {}\n",
        if code == ExitCode::Success {
            "success"
        } else {
            "failure"
        }
    ));
    exit(code)
}

/// The scenarios run against whichever vendor the platform has (generic: each vendor's
/// tables keep their own types).
fn run_scenario<V: Inspect>(
    scenario: crate::cmdline::Scenario,
    (options, frames, pci, config, iommu_failure, guest_images): Machine,
    passthrough: Option<crate::passthrough::DeviceLock<V>>,
) -> ExitCode {
    let mut hv = Hypervisor {
        options,
        frames,
        pci,
        config,
        passthrough,
        iommu_failure,
        guest_images,
        host_vectors: Default::default(),
    };
    scenario::run(scenario, &mut hv)
}

/// What the scenarios get beside the IOMMU: options, frames, PCI, config access, and why the
/// IOMMU is off when bring-up failed.
type Machine = (
    cmdline::Options,
    Frames,
    lazaret_pci::Enumeration,
    platform::pci::ConfigAccess,
    Option<alloc::string::String>,
    alloc::vec::Vec<crate::guest::lifecycle::GuestImage>,
);

struct TableList<'a>(&'a [([u8; 4], u64, usize)]);

impl core::fmt::Display for TableList<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, (sig, _, _)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            for b in sig {
                write!(
                    f,
                    "{}",
                    if b.is_ascii_graphic() {
                        *b as char
                    } else {
                        '?'
                    }
                )?;
            }
        }
        Ok(())
    }
}
