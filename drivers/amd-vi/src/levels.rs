//! Paging depth: the one value from which both the I/O page-table depth and the DTE's Mode
//! field are derived, so the two can never disagree (Xen XSA-445 leaked data when they did).

use core::fmt;

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

    /// IOVA bits these tables translate (39 for 3 levels, 48 for 4, capped at 64).
    pub const fn address_bits(self) -> u32 {
        let bits = 12 + 9 * self.0 as u32;
        if bits > 64 {
            64
        } else {
            bits
        }
    }

    /// Largest IOVA these tables can translate.
    pub const fn max_iova(self) -> u64 {
        match self.address_bits() {
            64 => u64::MAX,
            bits => (1u64 << bits) - 1,
        }
    }

    /// Index of `iova` in a table at `level` (1 = leaf table, `count()` = root), §2.2.3.
    pub const fn index(iova: u64, level: u32) -> usize {
        let shift = 12 + 9 * level.saturating_sub(1);
        if shift >= 64 {
            0
        } else {
            ((iova >> shift) & 0x1ff) as usize
        }
    }

    /// Bytes covered by one entry of a table at `level` (4 KiB at level 1).
    pub const fn entry_span(level: u32) -> u64 {
        let shift = 12 + 9 * level.saturating_sub(1);
        if shift >= 64 {
            u64::MAX
        } else {
            1u64 << shift
        }
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
        let iova = (3u64 << 39) | (5 << 30) | (7 << 21) | (9 << 12) | 0xabc;
        assert_eq!(Levels::index(iova, 4), 3);
        assert_eq!(Levels::index(iova, 3), 5);
        assert_eq!(Levels::index(iova, 2), 7);
        assert_eq!(Levels::index(iova, 1), 9);
        assert_eq!(Levels::entry_span(2), 2 << 20);
    }
}
