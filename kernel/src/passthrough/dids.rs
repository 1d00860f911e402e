//! Hardware domain IDs: a bitmap over the range the IOMMU allows.
use alloc::vec;
use alloc::vec::Vec;
use core::ops::Range;

pub struct DomainIds {
    range: Range<u32>,
    used: Vec<u64>,
}

impl DomainIds {
    pub fn new(range: Range<u32>) -> DomainIds {
        let words = (range.end.saturating_sub(range.start) as usize).div_ceil(64);
        DomainIds {
            range,
            used: vec![0; words],
        }
    }

    pub fn allocate(&mut self) -> Option<u16> {
        let n = self.range.end.saturating_sub(self.range.start) as usize;
        let i = (0..n).find(|i| self.used[i / 64] & (1 << (i % 64)) == 0)?;
        self.used[i / 64] |= 1 << (i % 64);
        u16::try_from(self.range.start as usize + i).ok()
    }

    pub fn release(&mut self, id: u16) {
        if let Some(i) = (id as u32)
            .checked_sub(self.range.start)
            .map(|i| i as usize)
        {
            if let Some(w) = self.used.get_mut(i / 64) {
                *w &= !(1 << (i % 64));
            }
        }
    }

    pub fn in_use(&self) -> usize {
        self.used.iter().map(|w| w.count_ones() as usize).sum()
    }
}

/// One domain ID from each allocator (a guest needs one per IOMMU unit), or none at all:
/// on exhaustion the IDs already taken are given back.
pub fn allocate_each<'a>(allocators: impl Iterator<Item = &'a mut DomainIds>) -> Option<Vec<u16>> {
    let mut taken: Vec<(&'a mut DomainIds, u16)> = Vec::new();
    for a in allocators {
        match a.allocate() {
            Some(id) => taken.push((a, id)),
            None => {
                for (a, id) in taken {
                    a.release(id);
                }
                return None;
            }
        }
    }
    Some(taken.into_iter().map(|(_, id)| id).collect())
}

/// Gives back what [`allocate_each`] took, allocator by allocator.
pub fn release_each<'a>(allocators: impl Iterator<Item = &'a mut DomainIds>, ids: &[u16]) {
    for (a, id) in allocators.zip(ids) {
        a.release(*id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_within_range_and_reuses_released_ids() {
        let mut d = DomainIds::new(1..4);
        assert_eq!(
            (d.allocate(), d.allocate(), d.allocate(), d.allocate()),
            (Some(1), Some(2), Some(3), None)
        );
        d.release(2);
        d.release(0);
        assert_eq!(d.in_use(), 2);
        assert_eq!(d.allocate(), Some(2));
    }

    #[test]
    fn allocate_each_is_all_or_nothing() {
        let mut units = [DomainIds::new(1..3), DomainIds::new(1..2)];
        assert_eq!(allocate_each(units.iter_mut()), Some(vec![1, 1]));
        assert_eq!(
            allocate_each(units.iter_mut()),
            None,
            "the second unit is full"
        );
        assert_eq!(units[0].in_use(), 1, "the first unit's ID was given back");
        release_each(units.iter_mut(), &[1, 1]);
        assert_eq!(units.iter().map(DomainIds::in_use).sum::<usize>(), 0);
    }
}
