//! Range arithmetic over the firmware memory map: what is free after the kernel, the loader
//! and firmware areas are taken out.

/// A half-open physical range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Range {
    pub start: u64,
    pub end: u64,
}

const PAGE: u64 = 4096;

impl Range {
    pub const fn new(start: u64, end: u64) -> Range {
        Range { start, end }
    }

    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole pages inside this range.
    pub fn pages_inside(&self) -> Range {
        let start = self.start.saturating_add(PAGE - 1) & !(PAGE - 1);
        let end = self.end & !(PAGE - 1);
        Range {
            start,
            end: end.max(start),
        }
    }

    /// The parts of `self` outside `hole` (zero, one or two ranges).
    pub fn minus(&self, hole: Range) -> [Option<Range>; 2] {
        let below = Range {
            start: self.start,
            end: self.end.min(hole.start),
        };
        let above = Range {
            start: self.start.max(hole.end),
            end: self.end,
        };
        [
            (!below.is_empty()).then_some(below),
            (!above.is_empty()).then_some(above),
        ]
    }
}

/// Free memory: the available ranges in whole pages, minus every reserved range, sorted.
/// Available ranges come from firmware and may overlap each other; the result does not.
pub fn free_ranges(available: &[Range], reserved: &[Range]) -> alloc::vec::Vec<Range> {
    let mut free: alloc::vec::Vec<Range> = available
        .iter()
        .map(Range::pages_inside)
        .filter(|r| !r.is_empty())
        .collect();
    for hole in reserved {
        free = free.iter().flat_map(|r| r.minus(*hole)).flatten().collect();
    }
    free.sort();
    // Merge overlaps and neighbours so no frame is counted twice.
    let mut merged: alloc::vec::Vec<Range> = alloc::vec::Vec::with_capacity(free.len());
    for r in free {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    merged
}

/// Takes `size` bytes (whole pages) from the first free range below `limit` that holds
/// them, returning the taken range; `free` keeps the rest.
pub fn take(free: &mut alloc::vec::Vec<Range>, size: u64, limit: u64) -> Option<Range> {
    let size = size.checked_add(PAGE - 1)? & !(PAGE - 1);
    let slot = free
        .iter_mut()
        .find(|r| r.len() >= size && r.start + size <= limit)?;
    let taken = Range {
        start: slot.start,
        end: slot.start + size,
    };
    slot.start += size;
    free.retain(|r| !r.is_empty());
    Some(taken)
}

/// The first `size` bytes (whole pages) of free RAM at or above `floor` that end at or below
/// `limit`, from `available` in order; allocation-free, for the heap before the heap exists.
pub fn first_fit(available: &[Range], floor: u64, size: u64, limit: u64) -> Option<Range> {
    available.iter().find_map(|r| {
        let r = Range::new(r.start.max(floor), r.end).pages_inside();
        let end = r.start.checked_add(size)?;
        (end <= r.end && end <= limit).then_some(Range::new(r.start, end))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn reserved_ranges_are_cut_out_and_pages_kept_whole() {
        let available = [Range::new(0, 0x9fc00), Range::new(MIB, 128 * MIB)];
        let reserved = [
            Range::new(0, 6 * MIB + 0x800),
            Range::new(64 * MIB, 80 * MIB),
        ];
        assert_eq!(
            free_ranges(&available, &reserved),
            vec![
                Range::new(6 * MIB + 0x800, 64 * MIB),
                Range::new(80 * MIB, 128 * MIB)
            ]
        );
    }

    #[test]
    fn overlapping_firmware_ranges_are_merged() {
        let available = [
            Range::new(MIB, 8 * MIB),
            Range::new(4 * MIB, 16 * MIB),
            Range::new(0x1001, 0x1fff),
        ];
        assert_eq!(
            free_ranges(&available, &[]),
            vec![Range::new(MIB, 16 * MIB)]
        );
    }

    #[test]
    fn first_fit_skips_what_is_below_the_floor_or_too_small() {
        let available = [
            Range::new(0, 0x9f000),
            Range::new(MIB, 20 * MIB),
            Range::new(64 * MIB, 128 * MIB),
        ];
        assert_eq!(
            first_fit(&available, 6 * MIB + 1, 16 * MIB, 1 << 32),
            Some(Range::new(64 * MIB, 80 * MIB))
        );
        assert_eq!(
            first_fit(&available, 2 * MIB, 16 * MIB, 1 << 32),
            Some(Range::new(2 * MIB, 18 * MIB))
        );
        assert_eq!(
            first_fit(&available, 0, 16 * MIB, 16 * MIB),
            None,
            "limit respected"
        );
    }

    #[test]
    fn take_respects_size_and_limit() {
        let mut free = vec![Range::new(MIB, 2 * MIB), Range::new(8 * MIB, 64 * MIB)];
        assert_eq!(
            take(&mut free, 4 * MIB, 1 << 32),
            Some(Range::new(8 * MIB, 12 * MIB))
        );
        assert_eq!(
            free,
            vec![Range::new(MIB, 2 * MIB), Range::new(12 * MIB, 64 * MIB)]
        );
        assert_eq!(take(&mut free, 100 * MIB, 1 << 32), None);
        assert_eq!(
            take(&mut free, MIB, 13 * MIB),
            Some(Range::new(MIB, 2 * MIB))
        );
        assert_eq!(free, vec![Range::new(12 * MIB, 64 * MIB)]);
    }
}
