//! Paging depth: the one value from which both the I/O page-table depth and the DTE's Mode
//! field are derived, so the two can never disagree (Xen XSA-445 leaked data when they did).

use core::fmt;

pub use lazaret_io_pagetable::Depth;

/// Number of I/O page-table levels, 1..=6 (AMD IOMMU spec §2.2.3, DTE Mode field §2.2.2.1).
///
/// Mode = number of levels: level `n` resolves IOVA bits `12 + 9n - 1 .. 12 + 9(n-1)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Levels(u8);

impl Levels {
    pub const THREE: Levels = Levels(3);
    pub const FOUR: Levels = Levels(4);
    pub const FIVE: Levels = Levels(5);
    pub const SIX: Levels = Levels(6);

    /// `None` outside 1..=6 (Mode 0 means "no translation", 7 is reserved).
    pub const fn new(levels: u8) -> Option<Levels> {
        match levels {
            1..=6 => Some(Levels(levels)),
            _ => None,
        }
    }

    /// Number of table levels walked; also the DTE Mode encoding.
    pub const fn count(self) -> u32 {
        self.0 as u32
    }

    /// DTE\[Mode\] (bits 11:9) for this depth (§2.2.2.1: 001b..110b = 1..6 levels).
    pub const fn mode(self) -> u8 {
        self.0
    }
}

/// Width and index arithmetic are shared with VT-d; the legal depths (1..6) and their DTE
/// Mode encoding are AMD's own.
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
    fn only_modes_one_to_six_are_depths() {
        assert_eq!(Levels::new(0), None);
        assert_eq!(Levels::new(7), None);
        for n in 1..=6u8 {
            assert_eq!(Levels::new(n).map(Levels::mode), Some(n));
        }
    }

    #[test]
    fn widths_and_indices_follow_depth() {
        assert_eq!(Levels::THREE.address_bits(), 39);
        assert_eq!(Levels::FOUR.max_iova(), 0xffff_ffff_ffff);
        assert_eq!(Levels::SIX.max_iova(), u64::MAX);
    }
}
