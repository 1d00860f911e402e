//! The one-byte flag fields of the DMAR table, each a newtype that prints its set bits by name
//! (unknown bits in hex), so a pre-flight tool can show firmware's claims verbatim.
use core::fmt;

/// Writes the names of the set bits of `bits` joined by `|`, any bits without a name as one hex
/// value, or `none`.
fn write_flags(f: &mut fmt::Formatter<'_>, bits: u8, names: &[(u8, &str)]) -> fmt::Result {
    if bits == 0 {
        return f.write_str("none");
    }
    let mut unnamed = bits;
    let mut first = true;
    for &(bit, name) in names {
        if bits & bit != 0 {
            if !first {
                f.write_str("|")?;
            }
            f.write_str(name)?;
            unnamed &= !bit;
            first = false;
        }
    }
    if unnamed != 0 {
        if !first {
            f.write_str("|")?;
        }
        write!(f, "{unnamed:#04x}")?;
    }
    Ok(())
}

/// Defines a flag-byte newtype: named bit constants, `contains`, and Display/Debug by name.
macro_rules! flag_byte {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $flag:ident = $bit:expr;)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Default)]
        pub struct $name(pub u8);

        impl $name {
            $($(#[$fmeta])* pub const $flag: u8 = $bit;)*
            const NAMES: &'static [(u8, &'static str)] = &[$(($bit, stringify!($flag))),*];

            /// True when every bit of `mask` is set.
            pub const fn contains(self, mask: u8) -> bool {
                self.0 & mask == mask
            }

            pub const fn bits(self) -> u8 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_flags(f, self.0, Self::NAMES)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({self})", stringify!($name))
            }
        }
    };
}

flag_byte! {
    /// DMAR header flags (VT-d spec §8.1, Table 8-2).
    DmarFlags {
        /// Interrupt remapping is supported.
        INTR_REMAP = 1 << 0;
        /// Firmware asks the OS not to enable x2APIC mode.
        X2APIC_OPT_OUT = 1 << 1;
        /// Platform DMA protection was on at hand-off (set only with matching firmware settings).
        DMA_CTRL_PLATFORM_OPT_IN = 1 << 2;
    }
}

flag_byte! {
    /// DRHD flags (VT-d spec §8.3).
    DrhdFlags {
        /// The unit covers every device of its segment not claimed by another unit's scope.
        INCLUDE_PCI_ALL = 1 << 0;
    }
}

flag_byte! {
    /// ATSR flags (VT-d spec §8.5).
    AtsrFlags {
        /// Every root port of the segment supports ATS; the scope list is then empty.
        ALL_PORTS = 1 << 0;
    }
}

flag_byte! {
    /// SATC flags (VT-d spec §8.8).
    SatcFlags {
        /// The listed devices need ATS enabled to work correctly.
        ATC_REQUIRED = 1 << 0;
    }
}

flag_byte! {
    /// Device scope flags (VT-d spec rev 4.x §8.3.1; byte 2, reserved in earlier revisions).
    /// They mostly qualify scopes inside SATC and SIDP structures.
    ScopeFlags {
        REQ_WO_PASID_NESTED_NOTALLOWED = 1 << 0;
        REQ_WO_PASID_PWSNP_NOTALLOWED = 1 << 1;
        REQ_WO_PASID_PGSNP_NOTALLOWED = 1 << 2;
        ATC_HARDENED = 1 << 3;
        ATC_REQUIRED = 1 << 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn prints_named_and_unnamed_bits() {
        assert_eq!(DmarFlags(0).to_string(), "none");
        assert_eq!(
            DmarFlags(0b101).to_string(),
            "INTR_REMAP|DMA_CTRL_PLATFORM_OPT_IN"
        );
        assert_eq!(DrhdFlags(0x81).to_string(), "INCLUDE_PCI_ALL|0x80");
        assert_eq!(AtsrFlags(0x02).to_string(), "0x02");
        assert_eq!(format!("{:?}", SatcFlags(1)), "SatcFlags(ATC_REQUIRED)");
    }

    #[test]
    fn contains_needs_every_bit_of_the_mask() {
        let f = ScopeFlags(ScopeFlags::ATC_HARDENED | ScopeFlags::ATC_REQUIRED);
        assert!(f.contains(ScopeFlags::ATC_REQUIRED));
        assert!(!f.contains(ScopeFlags::ATC_REQUIRED | ScopeFlags::REQ_WO_PASID_NESTED_NOTALLOWED));
    }
}
