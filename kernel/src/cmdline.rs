//! The kernel command line: `key=value` options separated by spaces (the options and their
//! values are listed in `docs/test-boxes.md`).
//!
//! A later option overrides an earlier one. Unknown keys, bad values and words that are not
//! `key=value` each give one warning naming the option and keep the default: a typo on a
//! test box's command line must never stop it from booting.
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use log::LevelFilter;

/// What happens to a device that belongs to no guest (`design.md` §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuarantineMode {
    /// No translation: all DMA from unowned devices is blocked.
    None,
    /// DMA faults, except the device's RMRR / unity ranges.
    Basic,
    /// DMA lands in a zeroed page private to the device.
    Scratch,
}

impl QuarantineMode {
    pub const NAMES: &'static str = "none|basic|scratch";

    fn parse(s: &str) -> Option<QuarantineMode> {
        match s {
            "none" => Some(QuarantineMode::None),
            "basic" => Some(QuarantineMode::Basic),
            "scratch" => Some(QuarantineMode::Scratch),
            _ => None,
        }
    }
}

impl fmt::Display for QuarantineMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QuarantineMode::None => "none",
            QuarantineMode::Basic => "basic",
            QuarantineMode::Scratch => "scratch",
        })
    }
}

/// Whether assignment demands interrupt remapping (`intremap=on|off`, default on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntremapMode {
    /// `assign` refuses a device whose IOMMU does not remap interrupts.
    Required,
    /// Assign anyway (the device can then raise any host interrupt): said loudly at boot.
    Off,
}

impl IntremapMode {
    pub const NAMES: &'static str = "on|off";

    fn parse(s: &str) -> Option<IntremapMode> {
        match s {
            "on" => Some(IntremapMode::Required),
            "off" => Some(IntremapMode::Off),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            IntremapMode::Required => "on",
            IntremapMode::Off => "off",
        }
    }
}

/// What the kernel does once it is up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Boot, report, exit with success.
    Boot,
    /// Panic on purpose: proves the panic path reports and fails the run.
    Panic,
    /// Write to a read-only page on purpose: proves the exception path.
    PageFault,
    /// Real DMA from every edu device while quarantined: scratch mode confines it to the
    /// device's own scratch page; basic mode makes it fault.
    QuarantineDma,
    /// A guest made of host frames gets an edu device: its DMA lands in the guest's memory;
    /// deassign returns it to its scratch page.
    AssignDma,
    /// DMA in a loop in basic mode until the device loses bus mastering.
    FaultStorm,
    /// The story for a talk: quarantine-dma, then assign-dma.
    Demo,
    /// One edu device round DomIO → guest A → guest B → DomIO … hundreds of times, with a
    /// DMA in flight across every owner switch and one after it.
    Reassign,
    /// A hand-assembled guest on the SVM vCPU: exits, XMM across exits, a refused state.
    Vcpu,
    /// Interrupt attacks from edu devices, quarantined and assigned: forged MSIs, DMA into
    /// the interrupt window, an interrupt storm.
    IrqAttacks,
}

impl Scenario {
    pub const NAMES: &'static str =
        "boot|panic|page-fault|quarantine-dma|assign-dma|fault-storm|demo|reassign|vcpu|irq-attacks";

    fn parse(s: &str) -> Option<Scenario> {
        match s {
            "boot" => Some(Scenario::Boot),
            "panic" => Some(Scenario::Panic),
            "page-fault" => Some(Scenario::PageFault),
            "quarantine-dma" => Some(Scenario::QuarantineDma),
            "assign-dma" => Some(Scenario::AssignDma),
            "fault-storm" => Some(Scenario::FaultStorm),
            "demo" => Some(Scenario::Demo),
            "reassign" => Some(Scenario::Reassign),
            "vcpu" => Some(Scenario::Vcpu),
            "irq-attacks" => Some(Scenario::IrqAttacks),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Boot => "boot",
            Scenario::Panic => "panic",
            Scenario::PageFault => "page-fault",
            Scenario::QuarantineDma => "quarantine-dma",
            Scenario::AssignDma => "assign-dma",
            Scenario::FaultStorm => "fault-storm",
            Scenario::Demo => "demo",
            Scenario::Reassign => "reassign",
            Scenario::Vcpu => "vcpu",
            Scenario::IrqAttacks => "irq-attacks",
        }
    }
}

/// Which serial port the console uses (`console=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serial {
    /// The port the ACPI SPCR table names, else COM1 at 115200 baud.
    Auto,
    /// This I/O port at this baud rate, whatever SPCR says.
    Port { base: u16, baud: u32 },
}

impl Serial {
    pub const NAMES: &'static str = "auto|com1..com4|0xPORT, optionally ,BAUD";
    pub const DEFAULT_BAUD: u32 = 115_200;

    /// `auto`, `com2`, `com1,9600`, `0x2f8,57600`.
    pub fn parse(s: &str) -> Option<Serial> {
        if s == "auto" {
            return Some(Serial::Auto);
        }
        let (port, baud) = match s.split_once(',') {
            Some((p, b)) => (p, b.parse::<u32>().ok().filter(|b| valid_baud(*b))?),
            None => (s, Serial::DEFAULT_BAUD),
        };
        // The PC's conventional COM port addresses.
        let base = match port {
            "com1" => 0x3f8,
            "com2" => 0x2f8,
            "com3" => 0x3e8,
            "com4" => 0x2e8,
            _ => u16::from_str_radix(port.strip_prefix("0x")?, 16)
                .ok()
                .filter(|p| *p != 0)?,
        };
        Some(Serial::Port { base, baud })
    }
}

/// A 16550 at 1.8432 MHz reaches `115200 / divisor` exactly.
pub fn valid_baud(baud: u32) -> bool {
    (50..=115_200).contains(&baud) && 115_200 % baud == 0
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Serial::Auto => f.write_str("auto"),
            Serial::Port { base, baud } => write!(f, "{base:#x},{baud}"),
        }
    }
}

/// The console choice alone, read before the heap exists (so no warnings: [`parse`] gives
/// them later). The last valid `console=` wins, as in [`parse`].
pub fn early_serial(line: &str) -> Serial {
    line.split_ascii_whitespace()
        .filter_map(|w| w.strip_prefix("console="))
        .filter_map(Serial::parse)
        .next_back()
        .unwrap_or(Serial::Auto)
}

/// The log level alone, read before the heap exists, so the first lines already follow it
/// (`log=warn` keeps the boot quiet from its first line). The last valid `log=` wins, as in
/// [`parse`]; without one, the default.
pub fn early_log(line: &str) -> LevelFilter {
    line.split_ascii_whitespace()
        .filter_map(|w| w.strip_prefix("log="))
        .filter_map(parse_level)
        .next_back()
        .unwrap_or(Options::default().log)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub log: LevelFilter,
    pub quarantine: QuarantineMode,
    pub scenario: Scenario,
    pub console: Serial,
    /// Physical address of the ACPI RSDP (the loader's multiboot2 tag, or the user's).
    pub acpi_rsdp: Option<u64>,
    pub intremap: IntremapMode,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            log: LevelFilter::Info,
            quarantine: QuarantineMode::Scratch,
            scenario: Scenario::Boot,
            console: Serial::Auto,
            acpi_rsdp: None,
            intremap: IntremapMode::Required,
        }
    }
}

/// One ignored option, with why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning(pub String);

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub const KEYS: &str = "log, quarantine, scenario, console, acpi_rsdp, intremap";

pub fn parse(line: &str) -> (Options, Vec<Warning>) {
    let mut options = Options::default();
    let mut warnings = Vec::new();
    let mut warn = |args: fmt::Arguments| warnings.push(Warning(alloc::format!("{args}")));
    for word in line.split_ascii_whitespace() {
        let Some((key, value)) = word.split_once('=') else {
            warn(format_args!(
                "ignoring '{word}': options are key=value (keys: {KEYS})"
            ));
            continue;
        };
        match key {
            "log" => match parse_level(value) {
                Some(level) => options.log = level,
                None => warn(format_args!(
                    "ignoring log={value}: expected off|error|warn|info|debug|trace; keeping {}",
                    options.log
                )),
            },
            "quarantine" => match QuarantineMode::parse(value) {
                Some(mode) => options.quarantine = mode,
                None => warn(format_args!(
                    "ignoring quarantine={value}: expected {}; keeping {}",
                    QuarantineMode::NAMES,
                    options.quarantine
                )),
            },
            "intremap" => match IntremapMode::parse(value) {
                Some(m) => options.intremap = m,
                None => warn(format_args!(
                    "ignoring intremap={value}: expected {}; keeping {}",
                    IntremapMode::NAMES,
                    options.intremap.name()
                )),
            },
            "scenario" => match Scenario::parse(value) {
                Some(s) => options.scenario = s,
                None => warn(format_args!(
                    "ignoring scenario={value}: expected {}; keeping {}",
                    Scenario::NAMES,
                    options.scenario.name()
                )),
            },
            "console" => match Serial::parse(value) {
                Some(c) => options.console = c,
                None => warn(format_args!(
                    "ignoring console={value}: expected {}; keeping {}",
                    Serial::NAMES,
                    options.console
                )),
            },
            "acpi_rsdp" => match value
                .strip_prefix("0x")
                .and_then(|h| u64::from_str_radix(h, 16).ok())
                .filter(|a| *a != 0)
            {
                Some(a) => options.acpi_rsdp = Some(a),
                None => warn(format_args!(
                    "ignoring acpi_rsdp={value}: expected a hex address (0x...)"
                )),
            },
            _ => warn(format_args!(
                "ignoring unknown option '{key}' (known: {KEYS})"
            )),
        }
    }
    (options, warnings)
}

fn parse_level(s: &str) -> Option<LevelFilter> {
    ["off", "error", "warn", "info", "debug", "trace"]
        .iter()
        .position(|l| l.eq_ignore_ascii_case(s))
        .and_then(|i| LevelFilter::iter().nth(i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_when_empty() {
        assert_eq!(parse(""), (Options::default(), vec![]));
        assert_eq!(Options::default().quarantine, QuarantineMode::Scratch);
    }

    #[test]
    fn parses_known_options_and_later_ones_win() {
        let (o, w) = parse("log=debug quarantine=none scenario=panic quarantine=basic");
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(
            o,
            Options {
                log: LevelFilter::Debug,
                quarantine: QuarantineMode::Basic,
                scenario: Scenario::Panic,
                ..Options::default()
            }
        );
        assert_eq!(parse("log=TRACE").0.log, LevelFilter::Trace);
        assert_eq!(parse("intremap=off").0.intremap, IntremapMode::Off);
        assert_eq!(parse("").0.intremap, IntremapMode::Required);
        assert_eq!(parse("log=off").0.log, LevelFilter::Off);
    }

    #[test]
    fn every_scenario_name_parses_back() {
        for name in Scenario::NAMES.split('|') {
            let s = Scenario::parse(name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(s.name(), name);
        }
        assert_eq!(parse("scenario=vcpu").0.scenario, Scenario::Vcpu);
    }

    #[test]
    fn bad_input_warns_once_each_and_keeps_defaults() {
        let (o, w) = parse("frobnicate=1 quarantine=maybe log=loud scenario=nope stray");
        assert_eq!(o, Options::default());
        assert_eq!(w.len(), 5);
        assert!(w[0].0.contains("unknown option 'frobnicate'"));
        assert!(w[1].0.contains("quarantine=maybe") && w[1].0.contains("keeping scratch"));
        assert!(w[2].0.contains("log=loud"));
        assert!(w[3].0.contains("scenario=nope") && w[3].0.contains("keeping boot"));
        assert!(w[4].0.contains("'stray'"));
    }

    #[test]
    fn console_override_names_ports_and_bauds() {
        assert_eq!(Serial::parse("auto"), Some(Serial::Auto));
        assert_eq!(
            Serial::parse("com2"),
            Some(Serial::Port {
                base: 0x2f8,
                baud: 115_200
            })
        );
        assert_eq!(
            Serial::parse("0x3e8,9600"),
            Some(Serial::Port {
                base: 0x3e8,
                baud: 9600
            })
        );
        for bad in [
            "com5",
            "0x0",
            "3f8",
            "com1,56000",
            "com1,7",
            "com1,230400",
            "com1,",
            "0xzz",
        ] {
            assert_eq!(Serial::parse(bad), None, "{bad}");
        }
        let (o, w) = parse("console=com4,57600 console=bogus");
        assert_eq!(
            o.console,
            Serial::Port {
                base: 0x2e8,
                baud: 57600
            }
        );
        assert_eq!(w.len(), 1);
        assert!(w[0].0.contains("console=bogus") && w[0].0.contains("keeping 0x2e8,57600"));
        // Before the heap: same choice, the invalid word skipped.
        assert_eq!(
            early_serial("/k console=com4,57600 console=bogus log=info"),
            Serial::Port {
                base: 0x2e8,
                baud: 57600
            }
        );
        assert_eq!(early_serial("log=info"), Serial::Auto);
        // The last valid choice wins, as in parse().
        assert_eq!(
            early_serial("console=com2 console=com3,9600"),
            Serial::Port {
                base: 0x3e8,
                baud: 9600
            }
        );
    }

    #[test]
    fn acpi_rsdp_is_a_hex_address_and_the_last_one_wins() {
        let (o, w) = parse("acpi_rsdp=0x7fb7e014 acpi_rsdp=0xf0490");
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(o.acpi_rsdp, Some(0xf0490));
        let (o, w) = parse("acpi_rsdp=123 acpi_rsdp=0x0");
        assert_eq!((o.acpi_rsdp, w.len()), (None, 2));
    }

    #[test]
    fn the_early_log_level_is_the_last_valid_one() {
        assert_eq!(early_log(""), LevelFilter::Info);
        assert_eq!(early_log("scenario=demo log=warn"), LevelFilter::Warn);
        assert_eq!(early_log("log=debug log=bogus"), LevelFilter::Debug);
        assert_eq!(early_log("log=debug log=error"), LevelFilter::Error);
    }
}
