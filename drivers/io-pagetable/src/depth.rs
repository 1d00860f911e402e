//! Paging-depth arithmetic shared by both vendors: each level resolves 9 IOVA bits above the
//! 12-bit page offset (VT-d §3.6, AMD IOMMU spec §2.2.3). Which depths are legal, and how
//! the context entry / DTE encodes them, is the vendor's (VT-d AW/SAGAW, AMD Mode).

use core::fmt;

/// A vendor's paging depth. Implementors guarantee `count()` is in `1..=6`.
pub trait Depth: Copy + Eq + fmt::Debug + fmt::Display {
    /// Number of table levels walked (the root's level).
    fn count(self) -> u32;

    /// IOVA bits these tables translate: 12 + 9 per level, capped at 64.
    fn address_bits(self) -> u32 {
        (12 + 9 * self.count()).min(64)
    }

    /// Largest IOVA these tables can translate.
    fn max_iova(self) -> u64 {
        match self.address_bits() {
            64 => u64::MAX,
            bits => (1u64 << bits) - 1,
        }
    }
}

/// log2 of the bytes one entry of a table at `level` covers (12 at level 1).
const fn shift(level: u32) -> u32 {
    12 + 9 * level.saturating_sub(1)
}

/// Index of `iova` in a table at `level` (1 = leaf table).
pub const fn index(iova: u64, level: u32) -> usize {
    match shift(level) {
        s if s >= 64 => 0,
        s => ((iova >> s) & 0x1ff) as usize,
    }
}

/// Bytes covered by one entry of a table at `level` (4 KiB at level 1).
pub const fn entry_span(level: u32) -> u64 {
    match shift(level) {
        s if s >= 64 => u64::MAX,
        s => 1u64 << s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct N(u32);
    impl fmt::Display for N {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{}", self.0)
        }
    }
    impl Depth for N {
        fn count(self) -> u32 {
            self.0
        }
    }

    #[test]
    fn widths_follow_depth_and_cap_at_64_bits() {
        assert_eq!(N(3).address_bits(), 39);
        assert_eq!(N(4).max_iova(), 0xffff_ffff_ffff);
        assert_eq!(N(5).address_bits(), 57);
        assert_eq!(N(6).address_bits(), 64);
        assert_eq!(N(6).max_iova(), u64::MAX);
    }

    #[test]
    fn index_selects_nine_bits_per_level() {
        let iova = (3u64 << 39) | (5 << 30) | (7 << 21) | (9 << 12) | 0xabc;
        assert_eq!(
            [
                index(iova, 4),
                index(iova, 3),
                index(iova, 2),
                index(iova, 1)
            ],
            [3, 5, 7, 9]
        );
        assert_eq!(index(u64::MAX, 6), 0x7f & 0x1ff);
        assert_eq!(index(u64::MAX, 7), 0);
        assert_eq!((entry_span(1), entry_span(2)), (0x1000, 2 << 20));
        assert_eq!(entry_span(8), u64::MAX);
    }
}
