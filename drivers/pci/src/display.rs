//! An lspci-like listing, one line per function, for the serial console:
//! `0000:00:03.0 1234:11e8 [00ff] unclassified device  BAR0 mem32 0xfea00000 (1 MiB)`.
use core::fmt;

use crate::bar::{Bar, BarKind};
use crate::{Enumeration, HeaderKind, PciFunction};

impl fmt::Display for PciFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:04x}:{:04x} [{:02x}{:02x}] {}",
            self.sbdf,
            self.vendor_id,
            self.device_id,
            self.class.base,
            self.class.sub,
            self.class.name()
        )?;
        match self.header {
            HeaderKind::Endpoint => {}
            HeaderKind::Bridge {
                secondary_bus,
                subordinate_bus,
            } => write!(f, "  bridge [{secondary_bus:02x}-{subordinate_bus:02x}]")?,
            HeaderKind::CardBus => f.write_str("  cardbus")?,
            HeaderKind::Unknown(t) => write!(f, "  header {t:#04x}")?,
        }
        if let Some(pcie) = self.pcie {
            write!(f, "  pcie:{}", pcie.port_type)?;
            if pcie.flr {
                f.write_str(" flr")?;
            }
        }
        for bar in &self.bars {
            write!(f, "  {bar}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Bar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            BarKind::Mem32 => "mem32",
            BarKind::Mem64 => "mem64",
            BarKind::Io => "io",
        };
        let pref = if self.prefetchable { " pref" } else { "" };
        write!(
            f,
            "BAR{} {kind}{pref} {:#x} ({})",
            self.index,
            self.base,
            Size(self.size)
        )
    }
}

/// One line per function, then one `! ` line per issue.
impl fmt::Display for Enumeration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for function in &self.functions {
            writeln!(f, "{function}")?;
        }
        for issue in &self.issues {
            writeln!(f, "! {issue}")?;
        }
        Ok(())
    }
}

/// A byte count in the largest binary unit that divides it exactly.
struct Size(u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
        for (unit, shift) in UNITS {
            let one = 1u64 << shift;
            if self.0 >= one && self.0.is_multiple_of(one) {
                return write!(f, "{} {unit}", self.0 >> shift);
            }
        }
        write!(f, "{} B", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn sizes_use_the_largest_exact_unit() {
        assert_eq!(Size(1 << 20).to_string(), "1 MiB");
        assert_eq!(Size(8 << 30).to_string(), "8 GiB");
        assert_eq!(Size(3 << 40).to_string(), "3 TiB");
        assert_eq!(Size(0x3000).to_string(), "12 KiB");
        assert_eq!(Size(32).to_string(), "32 B");
        assert_eq!(Size(1536).to_string(), "1536 B");
    }
}
