//! Paging depth: the one value from which both the second-level table depth and the context
//! entry's AW field are derived (so they can never disagree, cf. Xen XSA-445).

use core::fmt;

pub use lazaret_io_pagetable::Depth;

/// Number of second-level paging levels (§3.6, §9.3 "AW" field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Levels {
    /// 39-bit adjusted guest address width, AW = 1.
    Three,
    /// 48-bit AGAW, AW = 2.
    Four,
    /// 57-bit AGAW, AW = 3.
    Five,
}

impl Levels {
    pub const ALL: [Levels; 3] = [Levels::Three, Levels::Four, Levels::Five];

    /// Number of table levels walked (3, 4 or 5).
    pub const fn count(self) -> u32 {
        match self {
            Levels::Three => 3,
            Levels::Four => 4,
            Levels::Five => 5,
        }
    }

    /// The context entry's AW encoding, which is also this depth's bit in CAP.SAGAW (§10.4.2).
    pub const fn aw_field(self) -> u8 {
        match self {
            Levels::Three => 1,
            Levels::Four => 2,
            Levels::Five => 3,
        }
    }

    /// Inverse of [`Levels::aw_field`]; `None` for the reserved / obsolete encodings.
    pub const fn from_aw_field(aw: u8) -> Option<Levels> {
        match aw {
            1 => Some(Levels::Three),
            2 => Some(Levels::Four),
            3 => Some(Levels::Five),
            _ => None,
        }
    }
}

/// Width and index arithmetic are shared with AMD-Vi; the legal depths (3..5) and their AW /
/// SAGAW encoding are VT-d's own.
impl Depth for Levels {
    fn count(self) -> u32 {
        Levels::count(self)
    }
}

impl fmt::Display for Levels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-level ({}-bit)", self.count(), self.address_bits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aw_field_round_trips_and_widths_follow_depth() {
        for l in Levels::ALL {
            assert_eq!(Levels::from_aw_field(l.aw_field()), Some(l));
        }
        assert_eq!(Levels::from_aw_field(0), None);
        assert_eq!(Levels::from_aw_field(4), None);
        assert_eq!(Levels::Three.address_bits(), 39);
        assert_eq!(Levels::Four.address_bits(), 48);
        assert_eq!(Levels::Five.address_bits(), 57);
        assert_eq!(Levels::Four.max_iova(), 0xffff_ffff_ffff);
    }

    #[test]
    fn depth_is_the_level_count() {
        let counts = Levels::ALL.map(Depth::count);
        assert_eq!(counts, [3, 4, 5]);
    }
}
