//! Where the relocatable kernel is loaded.
//!
//! The kernel goes at the lowest 2 MiB-aligned address above everything already in memory
//! (this loader, the modules, the boot information) inside one available RAM region. The
//! kernel relies on that: it treats all memory below its own end as taken, so nothing the
//! loader or firmware left for it can be handed out as a free frame.

/// A half-open physical range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub start: u64,
    pub end: u64,
}

pub const KERNEL_ALIGN: u64 = 2 << 20;

/// The load address for an image of `size` bytes, given the available RAM ranges and the
/// ranges already occupied; `None` when no available range can hold it.
pub fn choose(available: &[Range], occupied: &[Range], size: u64) -> Option<u64> {
    let floor = occupied.iter().map(|r| r.end).max().unwrap_or(0);
    available
        .iter()
        .filter_map(|r| {
            let start = align_up(r.start.max(floor), KERNEL_ALIGN)?;
            let end = start.checked_add(size)?;
            (end <= r.end).then_some(start)
        })
        .min()
}

fn align_up(x: u64, align: u64) -> Option<u64> {
    Some(x.checked_add(align - 1)? & !(align - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn r(start: u64, end: u64) -> Range {
        Range { start, end }
    }

    #[test]
    fn goes_above_everything_occupied_and_aligned() {
        let ram = [r(0, 0x9f000), r(MIB, 512 * MIB)];
        let occupied = [
            r(MIB, MIB + 0x40000),
            r(0x141000, 0x2a5000),
            r(0x9000, 0xa000),
        ];
        assert_eq!(choose(&ram, &occupied, 3 * MIB), Some(4 * MIB));
    }

    #[test]
    fn skips_regions_too_small_and_reports_no_fit() {
        let ram = [r(MIB, 6 * MIB), r(64 * MIB, 128 * MIB)];
        let occupied = [r(MIB, 3 * MIB)];
        assert_eq!(choose(&ram, &occupied, 3 * MIB), Some(64 * MIB));
        assert_eq!(choose(&ram, &occupied, 100 * MIB), None);
        assert_eq!(
            choose(&[r(u64::MAX - MIB, u64::MAX)], &[], MIB),
            None,
            "no overflow"
        );
    }
}
