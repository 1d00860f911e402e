//! The guest command line (guest contract): space-separated `key=value` pairs,
//! `variant=good|rogue-dma|rogue-mmio|crash|dma-storm|rogue-irq` (default good), `other=0xHPA`, `iommu=0xHPA`,
//! `wait=hlt|window` (default hlt).
//! Unknown keys, repeated keys and bad values are errors the guest reports rather than
//! guesses past. (The module string that names a guest image is the kernel's:
//! `kernel/src/guest/spec.rs`.)

use core::fmt;

/// What the guest sets out to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Variant {
    /// DMA round trip through its own RAM, each DMA awaited by its completion interrupt
    /// ([`crate::interrupts`]); exit 0 only if the data came back and every interrupt came.
    #[default]
    Good,
    /// DMA outside its RAM and to another guest's host-physical address.
    RogueDma,
    /// Reads an MMIO-window page that is not its BAR, then the IOMMU's registers.
    RogueMmio,
    /// Triple fault.
    Crash,
    /// DMA past its RAM again and again: Lazaret must stop it once its device crosses the
    /// fault threshold.
    DmaStorm,
    /// Asks for MSIs Lazaret must refuse (another CPU, an exception vector, an address outside
    /// the interrupt window), then legal ones, and DMAs into the interrupt window: only its
    /// own route's interrupts may reach it, and none a host vector.
    RogueIrq,
}

impl Variant {
    pub const fn name(self) -> &'static str {
        match self {
            Variant::Good => "good",
            Variant::RogueDma => "rogue-dma",
            Variant::RogueMmio => "rogue-mmio",
            Variant::Crash => "crash",
            Variant::DmaStorm => "dma-storm",
            Variant::RogueIrq => "rogue-irq",
        }
    }

    fn parse(s: &str) -> Option<Variant> {
        [
            Variant::Good,
            Variant::RogueDma,
            Variant::RogueMmio,
            Variant::Crash,
            Variant::DmaStorm,
            Variant::RogueIrq,
        ]
        .into_iter()
        .find(|v| v.name() == s)
    }
}

/// How the good guest waits for a DMA's completion interrupt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Wait {
    /// Asleep in `sti; hlt`: the interrupt is injected as soon as it arrives.
    #[default]
    Hlt,
    /// Polling the device with interrupts off, then opening a window (`sti; nop; cli`): the
    /// interrupt arrived while the guest could not take it, so Lazaret must hold it and inject
    /// it when the window opens (SVM: V_IRQ and the VINTR intercept).
    Window,
}

impl Wait {
    pub const fn name(self) -> &'static str {
        match self {
            Wait::Hlt => "hlt",
            Wait::Window => "window",
        }
    }

    fn parse(s: &str) -> Option<Wait> {
        [Wait::Hlt, Wait::Window]
            .into_iter()
            .find(|w| w.name() == s)
    }
}

/// The parsed command line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestArgs {
    pub variant: Variant,
    /// `wait=`: how the good guest waits for its DMAs' interrupts.
    pub wait: Wait,
    /// `other=`: another guest's host-physical address (rogue-dma uses it as an IOVA).
    pub other: Option<u64>,
    /// `iommu=`: the IOMMU's register base (rogue-mmio reads it).
    pub iommu: Option<u64>,
}

/// Why a command line was refused; borrows the offending text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgsError<'a> {
    /// A word without `=`.
    NotKeyValue(&'a str),
    UnknownKey(&'a str),
    /// The same key twice: which one was meant is a guess we do not make.
    Repeated(&'a str),
    BadValue {
        key: &'a str,
        value: &'a str,
    },
}

impl fmt::Display for ArgsError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ArgsError::NotKeyValue(w) => write!(f, "command line word {w:?} is not key=value"),
            ArgsError::UnknownKey(k) => write!(f, "unknown command line key {k:?}"),
            ArgsError::Repeated(k) => write!(f, "command line key {k:?} given twice"),
            ArgsError::BadValue { key, value } => write!(f, "bad value {value:?} for {key:?}"),
        }
    }
}

impl GuestArgs {
    /// Parses `key=value` words separated by ASCII whitespace.
    pub fn parse(line: &str) -> Result<GuestArgs, ArgsError<'_>> {
        let mut args = GuestArgs::default();
        let mut seen_variant = false;
        let mut seen_wait = false;
        for word in line.split_ascii_whitespace() {
            let Some((key, value)) = word.split_once('=') else {
                return Err(ArgsError::NotKeyValue(word));
            };
            let bad = ArgsError::BadValue { key, value };
            let slot = match key {
                "variant" => {
                    if core::mem::replace(&mut seen_variant, true) {
                        return Err(ArgsError::Repeated(key));
                    }
                    args.variant = Variant::parse(value).ok_or(bad)?;
                    continue;
                }
                "wait" => {
                    if core::mem::replace(&mut seen_wait, true) {
                        return Err(ArgsError::Repeated(key));
                    }
                    args.wait = Wait::parse(value).ok_or(bad)?;
                    continue;
                }
                "other" => &mut args.other,
                "iommu" => &mut args.iommu,
                _ => return Err(ArgsError::UnknownKey(key)),
            };
            if slot.is_some() {
                return Err(ArgsError::Repeated(key));
            }
            *slot = Some(parse_address(value).ok_or(bad)?);
        }
        Ok(args)
    }
}

/// `0x`-prefixed hexadecimal (as the contract writes addresses) or decimal.
fn parse_address(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) if !hex.is_empty() => u64::from_str_radix(hex, 16).ok(),
        Some(_) => None,
        None if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_is_hlt_unless_a_window_is_asked_for_once() {
        assert_eq!(GuestArgs::parse("").map(|a| a.wait), Ok(Wait::Hlt));
        assert_eq!(GuestArgs::parse("wait=hlt").map(|a| a.wait), Ok(Wait::Hlt));
        assert_eq!(
            GuestArgs::parse("variant=good wait=window").map(|a| a.wait),
            Ok(Wait::Window)
        );
        assert_eq!(
            GuestArgs::parse("wait=window wait=hlt"),
            Err(ArgsError::Repeated("wait"))
        );
        assert_eq!(
            GuestArgs::parse("wait=spin"),
            Err(ArgsError::BadValue {
                key: "wait",
                value: "spin"
            })
        );
    }

    #[test]
    fn defaults_to_good_with_no_addresses() {
        assert_eq!(GuestArgs::parse(""), Ok(GuestArgs::default()));
        assert_eq!(
            GuestArgs::parse("   ").map(|a| a.variant),
            Ok(Variant::Good)
        );
    }

    #[test]
    fn reads_every_key() {
        let a = GuestArgs::parse("variant=rogue-dma  other=0x1234000 iommu=0XFED90000").unwrap();
        assert_eq!(a.variant, Variant::RogueDma);
        assert_eq!(a.other, Some(0x123_4000));
        assert_eq!(a.iommu, Some(0xfed9_0000));
        for v in [
            "good",
            "rogue-dma",
            "rogue-mmio",
            "crash",
            "dma-storm",
            "rogue-irq",
        ] {
            let line = format!("variant={v}");
            assert_eq!(GuestArgs::parse(&line).unwrap().variant.name(), v);
        }
        assert_eq!(
            GuestArgs::parse("variant=rogue-irq").unwrap().variant,
            Variant::RogueIrq
        );
        assert_eq!(GuestArgs::parse("other=4096").unwrap().other, Some(4096));
    }

    #[test]
    fn refuses_what_it_does_not_understand() {
        assert_eq!(
            GuestArgs::parse("colour=red"),
            Err(ArgsError::UnknownKey("colour"))
        );
        assert_eq!(
            GuestArgs::parse("variant"),
            Err(ArgsError::NotKeyValue("variant"))
        );
        assert_eq!(
            GuestArgs::parse("variant=evil"),
            Err(ArgsError::BadValue {
                key: "variant",
                value: "evil"
            })
        );
        for v in [
            "0x",
            "0xg",
            "",
            "-1",
            "0x1_0000_0000_0000_0000",
            "+5",
            "18446744073709551616",
        ] {
            let line = format!("other={v}");
            assert!(
                matches!(GuestArgs::parse(&line), Err(ArgsError::BadValue { .. })),
                "{line}"
            );
        }
        assert_eq!(
            GuestArgs::parse("variant=good variant=crash"),
            Err(ArgsError::Repeated("variant"))
        );
        assert_eq!(
            GuestArgs::parse("iommu=1 iommu=2"),
            Err(ArgsError::Repeated("iommu"))
        );
    }
}
