//! Which guests to run: every multiboot module after the kernel whose string reads
//! `guest NAME [key=value ...]` is a guest image. `memory=` and `device=` are Lazaret's (how
//! much RAM, which PCI function to assign); every other word is handed to the guest as its
//! command line. QEMU and iPXE put the image's path or URI in front of each module string:
//! it is stripped by the loader's rule (`lazaret_rt::multiboot::without_image_path`).
use core::fmt;

use heapless::String;
use lazaret_types::{Bdf, Sbdf};

/// The most guests one boot runs.
pub const MAX_GUESTS: usize = 4;
/// Longest guest name (it prefixes the guest's console lines).
pub const NAME_LEN: usize = 12;
/// Longest command line handed to a guest.
pub const CMDLINE_LEN: usize = 256;
/// Guest RAM unless `memory=` says otherwise.
pub const DEFAULT_MEMORY: u64 = 8 << 20;
/// Bounds on `memory=`: room for the guest's fixed layout, and what a demo box can spare.
pub const MIN_MEMORY: u64 = 4 << 20;
pub const MAX_MEMORY: u64 = 256 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestSpec {
    pub name: String<NAME_LEN>,
    pub memory: u64,
    /// The function to assign (segment 0), when the module string names one.
    pub device: Option<Sbdf>,
    /// What the guest receives as its command line.
    pub cmdline: String<CMDLINE_LEN>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpecError {
    /// The string is not a guest's (not an error: the module is something else).
    NotAGuest,
    MissingName,
    BadName,
    BadMemory,
    BadDevice,
    CommandLineTooLong,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SpecError::NotAGuest => "not a guest module (its string does not start with 'guest')",
            SpecError::MissingName => "'guest' must be followed by the guest's name",
            SpecError::BadName => "a guest name is 1-12 characters of a-z, 0-9 and '-'",
            SpecError::BadMemory => "memory= takes a size in MiB (4M to 256M, whole MiB)",
            SpecError::BadDevice => "device= takes a PCI address bus:device.function, e.g. 00:01.0",
            SpecError::CommandLineTooLong => "the guest's command line is longer than 256 bytes",
        })
    }
}

/// Parses one module string.
pub fn parse(module_string: &str) -> Result<GuestSpec, SpecError> {
    // QEMU and iPXE put the image's path or URI first; the loader's own rule strips it.
    let line = lazaret_rt::multiboot::without_image_path(module_string.as_bytes());
    let line = core::str::from_utf8(line).map_err(|_| SpecError::NotAGuest)?;
    let mut words = line.split_ascii_whitespace();
    if words.next() != Some("guest") {
        return Err(SpecError::NotAGuest);
    }
    let name = words.next().ok_or(SpecError::MissingName)?;
    let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if !name.chars().all(valid) {
        return Err(SpecError::BadName);
    }
    let name = String::try_from(name).map_err(|_| SpecError::BadName)?;
    let mut spec = GuestSpec {
        name,
        memory: DEFAULT_MEMORY,
        device: None,
        cmdline: String::new(),
    };
    for word in words {
        if let Some(v) = word.strip_prefix("memory=") {
            spec.memory = parse_memory(v).ok_or(SpecError::BadMemory)?;
        } else if let Some(v) = word.strip_prefix("device=") {
            spec.device = Some(parse_bdf(v).ok_or(SpecError::BadDevice)?);
        } else {
            let sep = if spec.cmdline.is_empty() { "" } else { " " };
            spec.cmdline
                .push_str(sep)
                .and_then(|_| spec.cmdline.push_str(word))
                .map_err(|_| SpecError::CommandLineTooLong)?;
        }
    }
    Ok(spec)
}

/// `8M`, `8m` or `8` (MiB).
fn parse_memory(v: &str) -> Option<u64> {
    let digits = v.strip_suffix(['M', 'm']).unwrap_or(v);
    let mib: u64 = digits.parse().ok()?;
    let bytes = mib.checked_mul(1 << 20)?;
    (MIN_MEMORY..=MAX_MEMORY).contains(&bytes).then_some(bytes)
}

/// `bb:dd.f` in hex, segment 0.
fn parse_bdf(v: &str) -> Option<Sbdf> {
    let (bus, rest) = v.split_once(':')?;
    let (dev, func) = rest.split_once('.')?;
    let hex = |s: &str| {
        (s.len() <= 2)
            .then(|| u8::from_str_radix(s, 16).ok())
            .flatten()
    };
    let bdf = Bdf::new(hex(bus)?, hex(dev)?, func.parse().ok()?)?;
    Some(Sbdf::new(0, bdf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_module_string_splits_into_lazarets_keys_and_the_guests() {
        let s = parse("guest alpha memory=16M device=00:02.0 variant=good other=0x1000").unwrap();
        assert_eq!(s.name.as_str(), "alpha");
        assert_eq!(s.memory, 16 << 20);
        assert_eq!(s.device, Some(Sbdf::new(0, Bdf::new(0, 2, 0).unwrap())));
        assert_eq!(s.cmdline.as_str(), "variant=good other=0x1000");
    }

    #[test]
    fn defaults_and_the_ipxe_uri_in_front() {
        let s = parse("http://10.0.2.2:8000/lazaret-guest guest beta").unwrap();
        assert_eq!(s.name.as_str(), "beta");
        assert_eq!(s.memory, DEFAULT_MEMORY);
        assert_eq!(s.device, None);
        assert!(s.cmdline.is_empty());
    }

    #[test]
    fn other_modules_are_not_guests() {
        assert_eq!(parse(""), Err(SpecError::NotAGuest));
        assert_eq!(
            parse("/boot/lazaret-kernel scenario=demo"),
            Err(SpecError::NotAGuest)
        );
        assert_eq!(parse("a b guest x"), Err(SpecError::NotAGuest));
    }

    #[test]
    fn bad_values_are_refused_with_their_reason() {
        assert_eq!(parse("guest"), Err(SpecError::MissingName));
        assert_eq!(parse("guest Alpha"), Err(SpecError::BadName));
        assert_eq!(
            parse("guest averyveryverylongname"),
            Err(SpecError::BadName)
        );
        for m in [
            "memory=3M",
            "memory=257M",
            "memory=x",
            "memory=99999999999999999M",
        ] {
            assert_eq!(
                parse(&format!("guest a {m}")),
                Err(SpecError::BadMemory),
                "{m}"
            );
        }
        for d in [
            "device=00:20.0",
            "device=00:01.8",
            "device=100:01.0",
            "device=0001.0",
        ] {
            assert_eq!(
                parse(&format!("guest a {d}")),
                Err(SpecError::BadDevice),
                "{d}"
            );
        }
        let long = format!("guest a {}", "x".repeat(300));
        assert_eq!(parse(&long), Err(SpecError::CommandLineTooLong));
        assert!(SpecError::BadMemory.to_string().contains("MiB"));
    }
}
