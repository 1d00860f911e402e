//! lazaret-guest: the guest payload. `entry.s` makes sure SSE is on and calls
//! [`guest_main`]; everything the guest decides is `lazaret_guest::run`, against the real
//! machine below: port I/O, volatile loads and stores at identity-mapped gpas, VMMCALL and
//! RDTSC, RDMSR/WRMSR, and the IDT of [`idt`] for the interrupt the good variant waits for.
//! It ends with `HC_EXIT`; a panic or an exception prints itself and exits with
//! `GuestExit::Panic`.
#![no_std]
#![no_main]

mod idt;

use core::arch::asm;
use core::fmt::{self, Write};

use lazaret_guest::{Console, Env, HandlerRecord, Platform};
use lazaret_guest_abi::hypercall::{HC_CONSOLE_WRITE, HC_EXIT, HC_INTERRUPT_STAMP};
use lazaret_guest_abi::GuestExit;
use lazaret_types::Mmio;

lazaret_rt::freestanding_runtime!();
core::arch::global_asm!(include_str!("entry.s"), options(att_syntax));

extern "C" {
    /// One past the image's last byte (bss included), page-aligned, from linker.ld.
    static __image_end: u8;
}

/// The machine the guest runs on. Guest RAM and the MMIO window are identity-mapped in the
/// page tables Lazaret built (guest contract), so a gpa is a usable pointer.
struct Machine;

/// One hypercall: RAX = number, RDI/RSI/RDX = arguments, result in RAX.
fn vmmcall(nr: u64, a: u64, b: u64, c: u64) -> u64 {
    let rax: u64;
    // SAFETY: VMMCALL exits to Lazaret, which reads the registers and writes RAX only (the
    // console call reads guest memory, which the compiler must see as read: no `nomem`).
    unsafe {
        asm!("vmmcall", inlateout("rax") nr => rax, in("rdi") a, in("rsi") b, in("rdx") c,
             options(nostack));
    }
    rax
}

/// A BAR's registers at a gpa in the MMIO window (mapped uncached by Lazaret).
struct Bar(u64);

impl Bar {
    fn at(&self, offset: usize) -> u64 {
        self.0.wrapping_add(offset as u64)
    }
}

impl Mmio for Bar {
    fn read32(&self, offset: usize) -> u32 {
        // SAFETY: the BAR lies in the MMIO window (checked by lazaret-guest) and the driver's
        // offsets are inside edu's 1 MiB BAR0; device registers need volatile access.
        unsafe { (self.at(offset) as *const u32).read_volatile() }
    }
    fn write32(&self, offset: usize, value: u32) {
        // SAFETY: as in read32.
        unsafe { (self.at(offset) as *mut u32).write_volatile(value) }
    }
    fn read64(&self, offset: usize) -> u64 {
        // SAFETY: as in read32.
        unsafe { (self.at(offset) as *const u64).read_volatile() }
    }
    fn write64(&self, offset: usize, value: u64) {
        // SAFETY: as in read32.
        unsafe { (self.at(offset) as *mut u64).write_volatile(value) }
    }
}

impl Platform for Machine {
    type Bar = Bar;

    fn outl(&self, port: u16, value: u32) {
        // SAFETY: the guest owns its (virtual) ports 0xCF8/0xCFC; one CPU, interrupts off.
        unsafe { lazaret_rt::port::outl(port, value) }
    }

    fn inl(&self, port: u16) -> u32 {
        // SAFETY: as in outl.
        unsafe { lazaret_rt::port::inl(port) }
    }

    fn console_write(&self, bytes: &[u8]) -> u64 {
        // The slice's address is its gpa (identity map; the stack and image are guest RAM).
        vmmcall(
            HC_CONSOLE_WRITE,
            bytes.as_ptr() as u64,
            bytes.len() as u64,
            0,
        )
    }

    fn rdtsc(&self) -> u64 {
        let (lo, hi): (u32, u32);
        // SAFETY: RDTSC only reads the time-stamp counter.
        unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
        (u64::from(hi) << 32) | u64::from(lo)
    }

    fn bar(&self, gpa: u64) -> Bar {
        Bar(gpa)
    }

    fn forbidden_read32(&self, gpa: u64) -> u32 {
        // SAFETY: deliberately hostile (rogue-mmio): the address is mapped in our own page
        // tables, so the load reaches nested paging, which must end this guest. If it returns,
        // it read a value and nothing else happened to our memory.
        unsafe { (gpa as *const u32).read_volatile() }
    }

    fn read_ram(&self, gpa: u64, buf: &mut [u8]) {
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: lazaret-guest reads only guest RAM, identity-mapped; volatile because
            // the device writes it by DMA behind the compiler's back.
            *b = unsafe { (gpa.wrapping_add(i as u64) as *const u8).read_volatile() };
        }
    }

    fn write_ram(&self, gpa: u64, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            // SAFETY: lazaret-guest writes only guest RAM it owns outright: the DMA buffers
            // and table pages above the image, and entries of its own page tables; never the
            // image or the stack. Volatile: the device reads the buffers by DMA.
            unsafe { (gpa.wrapping_add(i as u64) as *mut u8).write_volatile(*b) };
        }
    }

    fn cr3(&self) -> u64 {
        let cr3: u64;
        // SAFETY: reading CR3 has no side effect.
        unsafe { asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack, preserves_flags)) };
        cr3
    }

    fn invlpg(&self, va: u64) {
        // SAFETY: dropping a TLB entry only costs a walk.
        unsafe { asm!("invlpg [{}]", in(reg) va, options(nostack, preserves_flags)) };
    }

    fn triple_fault(&self) {
        let idtr = [0u16; 5];
        // SAFETY: deliberately fatal (the crash variant): with an IDT of limit 0, #UD cannot
        // be delivered, nor the #DF after it, so the CPU shuts down and Lazaret ends us.
        unsafe { asm!("lidt [{}]", "ud2", in(reg) idtr.as_ptr(), options(nostack)) };
    }

    fn rdmsr(&self, msr: u32) -> u64 {
        let (lo, hi): (u32, u32);
        // SAFETY: only the virtual LAPIC's x2APIC MSRs are read; Lazaret intercepts every
        // MSR, and a #GP would end us through the exception stub, not corrupt anything.
        unsafe {
            asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack))
        };
        (u64::from(hi) << 32) | u64::from(lo)
    }

    fn wrmsr(&self, msr: u32, value: u64) {
        // SAFETY: as in rdmsr; the writes enable the virtual LAPIC, nothing of the host's.
        unsafe {
            asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
                 options(nostack))
        };
    }

    fn install_interrupt_handlers(&self, edu_bar: u64) {
        idt::install(edu_bar);
    }

    fn wait_for_interrupt(&self) {
        idt::wait_for_interrupt();
    }

    fn interrupt_window(&self) {
        idt::interrupt_window();
    }

    fn handler_record(&self) -> HandlerRecord {
        idt::record()
    }

    fn interrupt_stamp(&self, tsc: u64, vector: u8) -> u64 {
        vmmcall(HC_INTERRUPT_STAMP, tsc, u64::from(vector), 0)
    }
}

fn exit(status: GuestExit) -> ! {
    vmmcall(HC_EXIT, status.code(), 0, 0);
    lazaret_rt::exit::halt_forever()
}

#[no_mangle]
extern "C" fn guest_main(boot_info_gpa: u64) -> ! {
    let image_end = core::ptr::addr_of!(__image_end) as u64;
    exit(lazaret_guest::run(
        &Machine,
        Env {
            boot_info_gpa,
            image_end,
        },
    ))
}

/// Prints one line and exits with `GuestExit::Panic`: the end of a panic or an exception.
fn fail(what: fmt::Arguments) -> ! {
    let mut con = Console::new(&Machine);
    let _ = writeln!(con, "{what}");
    drop(con);
    exit(GuestExit::Panic)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    fail(format_args!("panic: {info}"))
}
