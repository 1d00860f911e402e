//! Checks shared by VT-d RMRRs and AMD IVMDs: both ask for a physical range to stay
//! identity-mapped for some devices, and firmware gets both wrong the same ways.
use super::alloc::format;
use super::alloc::vec::Vec;

use lazaret_types::PAGE_SIZE;

use super::{Action, Defect};

/// The codes and name used for one kind of reserved range.
pub(super) struct RangeCodes {
    /// "RMRR" or "IVMD".
    pub what: &'static str,
    pub zero_size: &'static str,
    pub inverted: &'static str,
    pub page_zero: &'static str,
    pub unaligned: &'static str,
}

pub(super) const RMRR_CODES: RangeCodes = RangeCodes {
    what: "RMRR",
    zero_size: "rmrr-zero-size",
    inverted: "rmrr-inverted",
    page_zero: "rmrr-page-zero",
    unaligned: "rmrr-unaligned",
};

pub(super) const IVMD_CODES: RangeCodes = RangeCodes {
    what: "IVMD",
    zero_size: "ivmd-zero-length",
    inverted: "ivmd-wraps",
    page_zero: "ivmd-page-zero",
    unaligned: "ivmd-unaligned",
};

/// A reserved range as firmware wrote it, reduced to one of three shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Shape {
    /// No bytes at all.
    Empty,
    /// The end lies before the start (RMRR limit below base, IVMD start + length past 2^64).
    Backwards,
    /// Bytes `first..=last`.
    Span { first: u64, last: u64 },
}

impl Shape {
    /// An RMRR (VT-d spec §8.4): base and an inclusive limit. A limit equal to the base or one
    /// below it is how firmware writes "nothing" (Linux rejects `limit <= base` too).
    pub(super) fn from_base_limit(base: u64, limit: u64) -> Shape {
        if limit == base || limit.checked_add(1) == Some(base) {
            Shape::Empty
        } else if limit < base {
            Shape::Backwards
        } else {
            Shape::Span {
                first: base,
                last: limit,
            }
        }
    }

    /// An IVMD (AMD IOMMU spec rev 3.x §5.2.3): start and length in bytes.
    pub(super) fn from_start_size(start: u64, size: u64) -> Shape {
        match size.checked_sub(1) {
            None => Shape::Empty,
            Some(extra) => match start.checked_add(extra) {
                Some(last) => Shape::Span { first: start, last },
                None => Shape::Backwards,
            },
        }
    }
}

/// The defects of one reserved range at `offset` whose raw fields read `raw` (for messages).
pub(super) fn range_defects(
    codes: &RangeCodes,
    offset: usize,
    raw: &str,
    shape: Shape,
) -> Vec<Defect> {
    let what = codes.what;
    let mut out = Vec::new();
    match shape {
        Shape::Empty => out.push(Defect::new(
            codes.zero_size,
            offset,
            format!("{what} {raw} covers no memory"),
            Action::SkipRange,
        )),
        Shape::Backwards => out.push(Defect::new(
            codes.inverted,
            offset,
            format!("{what} {raw} ends before it starts"),
            Action::SkipRange,
        )),
        Shape::Span { first, last } => {
            if first < PAGE_SIZE {
                // Page 0 holds the real-mode IVT and BIOS data the boot path reads; a device
                // that may write it could also reach whatever Lazaret keeps in that frame.
                out.push(Defect::new(
                    codes.page_zero,
                    offset,
                    format!("{what} {raw} covers page 0 (physical address 0)"),
                    Action::SkipRange,
                ));
            }
            let end_aligned = last.checked_add(1).is_none_or(|end| end % PAGE_SIZE == 0);
            if first % PAGE_SIZE != 0 || !end_aligned {
                out.push(Defect::new(
                    codes.unaligned,
                    offset,
                    format!("{what} {raw} does not start and end on 4 KiB page boundaries"),
                    Action::IdentityMapAnyway,
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(shape: Shape) -> Vec<&'static str> {
        range_defects(&RMRR_CODES, 0x40, "r", shape)
            .iter()
            .map(|d| d.code)
            .collect()
    }

    #[test]
    fn shapes_from_rmrr_fields() {
        assert_eq!(Shape::from_base_limit(0x1000, 0x1000), Shape::Empty);
        assert_eq!(Shape::from_base_limit(0x1000, 0xfff), Shape::Empty);
        assert_eq!(Shape::from_base_limit(0x2000, 0xfff), Shape::Backwards);
        assert_eq!(
            Shape::from_base_limit(0, u64::MAX),
            Shape::Span {
                first: 0,
                last: u64::MAX
            }
        );
    }

    #[test]
    fn shapes_from_ivmd_fields() {
        assert_eq!(Shape::from_start_size(0x1000, 0), Shape::Empty);
        assert_eq!(Shape::from_start_size(u64::MAX, 2), Shape::Backwards);
        assert_eq!(
            Shape::from_start_size(0x1000, 0x1000),
            Shape::Span {
                first: 0x1000,
                last: 0x1fff
            }
        );
    }

    #[test]
    fn span_checks() {
        let span = |first, last| Shape::Span { first, last };
        assert!(codes(span(0x1000, 0x1fff)).is_empty());
        assert_eq!(codes(span(0, 0xfff)), ["rmrr-page-zero"]);
        assert_eq!(
            codes(span(0x800, 0x1fff)),
            ["rmrr-page-zero", "rmrr-unaligned"]
        );
        assert_eq!(codes(span(0x1000, 0x17ff)), ["rmrr-unaligned"]);
        assert_eq!(codes(span(0x1000, u64::MAX)), Vec::<&str>::new());
        assert_eq!(codes(Shape::Empty), ["rmrr-zero-size"]);
        assert_eq!(codes(Shape::Backwards), ["rmrr-inverted"]);
    }
}
