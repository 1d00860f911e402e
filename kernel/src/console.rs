//! The serial console (a 16550 through `uart_16550`) and the `log` backend that writes to it.
//!
//! The port is COM1 at 115200 baud until ACPI is read; then the SPCR table's port and baud
//! rate when firmware names one, unless `console=` chose a port (`boot.rs`).
//!
//! Log lines carry milliseconds since kernel entry, from the TSC. Structured lines that tests
//! and CI read (`RESULT …`, `FIGURE …`) are printed bare by [`result`] and [`figure`], so
//! they always start a line.
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU16, Ordering};

use spinning_top::Spinlock;
use uart_16550::backend::PioBackend;
use uart_16550::{BaudRate, Config, Uart16550Tty};

use crate::arch::tsc;

type Tty = Uart16550Tty<PioBackend>;

static CONSOLE: Spinlock<Option<Tty>> = Spinlock::new(None);
/// The console's port, for [`emergency_print`], which cannot take the lock.
static PORT: AtomicU16 = AtomicU16::new(0x3f8);

/// Brings up the UART at `port` with `baud` (a rate `cmdline::valid_baud` accepts); `false`
/// when no UART answers there (output is then dropped). Called again to move the console.
pub fn init(port: u16, baud: u32) -> bool {
    let config = Config {
        baud_rate: BaudRate::Custom(baud),
        ..Config::default()
    };
    // SAFETY: `port` is the serial port the loader reported, the SPCR table names or the
    // user chose; nothing else in the kernel drives it, and from here on all output goes
    // through CONSOLE's lock.
    let tty = unsafe { Tty::new_port(port, config) }.ok();
    let present = tty.is_some();
    *CONSOLE.lock() = tty;
    if present {
        PORT.store(port, Ordering::Relaxed);
    }
    present
}

/// Writes formatted text to the console.
pub fn print(args: fmt::Arguments) {
    if let Some(tty) = CONSOLE.lock().as_mut() {
        let mut out = Chunks {
            uart: tty.inner_mut(),
            buf: [0; CHUNK],
            len: 0,
        };
        let _ = out.write_fmt(args);
        out.flush();
    }
}

/// Bytes handed to the UART at once: the 16550's FIFO takes 16 per "transmitter empty" check,
/// where writing byte by byte costs a status read per byte (each a trip to the device model
/// under QEMU: logging was a fifth of the boot).
const CHUNK: usize = 64;

/// Collects text (newlines as CR LF) and sends it in FIFO-sized bursts.
struct Chunks<'a> {
    uart: &'a mut uart_16550::Uart16550<PioBackend>,
    buf: [u8; CHUNK],
    len: usize,
}

impl Chunks<'_> {
    fn push(&mut self, b: u8) {
        if self.len == CHUNK {
            self.flush();
        }
        self.buf[self.len] = b;
        self.len += 1;
    }

    fn flush(&mut self) {
        self.uart.send_bytes_exact(&self.buf[..self.len]);
        self.len = 0;
    }
}

impl Write for Chunks<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.push(b'\r');
            }
            self.push(b);
        }
        Ok(())
    }
}

/// Writes to the console's port without the console lock: for the panic and exception paths,
/// which may have interrupted a holder of the lock.
pub fn emergency_print(args: fmt::Arguments) {
    // SAFETY: the port is the kernel's own console; on these terminal paths interleaving with
    // an interrupted writer is acceptable, deadlocking on its lock is not.
    if let Ok(mut uart) = unsafe { uart_16550::Uart16550::new_port(PORT.load(Ordering::Relaxed)) } {
        struct W<'a>(&'a mut uart_16550::Uart16550<PioBackend>);
        impl Write for W<'_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                for b in s.bytes() {
                    if b == b'\n' {
                        self.0.send_bytes_exact(b"\r");
                    }
                    self.0.send_bytes_exact(&[b]);
                }
                Ok(())
            }
        }
        let _ = W(&mut uart).write_fmt(args);
    }
}

#[macro_export]
macro_rules! println {
    () => ($crate::console::print(format_args!("\n")));
    ($($arg:tt)*) => ($crate::console::print(format_args!("{}\n", format_args!($($arg)*))));
}

/// `RESULT <name> pass|fail <details>`: one check of a scenario.
pub fn result(name: &str, pass: bool, details: fmt::Arguments) {
    print(format_args!(
        "RESULT {name} {} {details}\n",
        if pass { "pass" } else { "fail" }
    ));
}

/// `FIGURE <name> <value> <unit>`: one measured figure.
pub fn figure(name: &str, value: impl fmt::Display, unit: &str) {
    print(format_args!("FIGURE {name} {value} {unit}\n"));
}

struct Logger;

static LOGGER: Logger = Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            let us = tsc::micros_since_entry();
            print(format_args!(
                "[{:>6}.{:03}] {:<5} {}\n",
                us / 1000,
                us % 1000,
                record.level(),
                record.args()
            ));
        }
    }

    fn flush(&self) {}
}

/// Installs the console as the `log` backend at `level`.
pub fn init_logger(level: log::LevelFilter) {
    // A second call keeps the first logger; only the level changes.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}
