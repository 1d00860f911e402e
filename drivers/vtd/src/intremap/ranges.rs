//! Which devices own which indices of a unit's interrupt remapping table: each device gets
//! an aligned power-of-two range when it is added, so one index-selective interrupt entry
//! cache descriptor (IIDX = first, IM = order, §6.5.2.7) covers all of its entries — the
//! single invalidation a quarantine (every entry blocked) owes.

use lazaret_types::Bdf;

use super::{IntRemapError, InterruptTable, SourceCheck, MAX_INTERRUPT_ENTRIES};
use crate::invalidation::InterruptScope;
use crate::table_memory::{CacheFlush, TableMemory};

/// Bitmap words covering [`MAX_INTERRUPT_ENTRIES`].
pub(super) const USED_WORDS: usize = MAX_INTERRUPT_ENTRIES as usize / 64;

/// 2^`order` consecutive entries from `first` (a multiple of their count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexRange {
    first: u16,
    order: u8,
}

impl IndexRange {
    pub const fn first(&self) -> u16 {
        self.first
    }

    pub const fn len(&self) -> u16 {
        1 << self.order
    }

    /// Never empty; for clippy's `len_without_is_empty`.
    pub const fn is_empty(&self) -> bool {
        false
    }

    /// The table index of the device's `entry`-th interrupt, if it has that many.
    pub const fn index(&self, entry: u16) -> Option<u16> {
        if entry < self.len() {
            Some(self.first + entry)
        } else {
            None
        }
    }

    /// The interrupt entry cache invalidation covering exactly this range.
    pub const fn scope(&self) -> InterruptScope {
        InterruptScope::Entries {
            index: self.first,
            index_mask: self.order,
        }
    }
}

impl InterruptTable {
    /// Reserves `count` (rounded up to a power of two) free, aligned entries, all blocked
    /// since they were last released; `None` when the table has no such run left.
    pub fn reserve(&mut self, count: u16) -> Option<IndexRange> {
        let len = u32::from(count.max(1)).next_power_of_two();
        if len > self.entries() {
            return None;
        }
        let order = len.trailing_zeros() as u8;
        let first = (0..self.entries())
            .step_by(len as usize)
            .find(|&f| (f..f + len).all(|i| !self.is_used(i)))?;
        (first..first + len).for_each(|i| self.set_used(i, true));
        Some(IndexRange {
            first: first as u16,
            order,
        })
    }

    /// Gives `range` back. Only after every entry was blocked and the range invalidated: the
    /// next owner's entries must not be reachable through stale cache entries.
    pub fn release(&mut self, range: IndexRange) {
        let first = u32::from(range.first);
        (first..first + u32::from(range.len())).for_each(|i| self.set_used(i, false));
    }

    /// Blocks every entry of `range` (each one atomic); never allocates. The caller then
    /// invalidates [`IndexRange::scope`].
    pub fn block_range<M, F>(
        &self,
        tm: TableMemory<'_, M, F>,
        range: IndexRange,
    ) -> Result<(), IntRemapError>
    where
        M: lazaret_types::PhysMem + ?Sized,
        F: CacheFlush + ?Sized,
    {
        (0..range.len()).try_for_each(|e| self.block(tm, range.first + e))
    }

    fn is_used(&self, index: u32) -> bool {
        self.used[index as usize / 64] & (1 << (index % 64)) != 0
    }

    fn set_used(&mut self, index: u32, used: bool) {
        let word = &mut self.used[index as usize / 64];
        if used {
            *word |= 1 << (index % 64);
        } else {
            *word &= !(1 << (index % 64));
        }
    }
}

impl SourceCheck {
    /// The check for a device whose interrupts may carry any of `rids` (its own ID first,
    /// then phantom functions and bridge aliases, as the device registry lists them): exact
    /// when there is one, else the bus range they span (SVT = 10b) — what a conventional PCI
    /// device behind a PCIe-to-PCI bridge needs, whose MSIs carry the bridge's secondary-bus
    /// alias. Every device on those buses then passes the check; they share the alias, so
    /// they are one isolation group anyway. `None` for an empty list.
    pub fn for_requester_ids(rids: &[Bdf]) -> Option<SourceCheck> {
        let (own, rest) = rids.split_first()?;
        if rest.iter().all(|r| r == own) {
            return Some(SourceCheck::RequesterId(*own));
        }
        let buses = rids.iter().map(|r| r.bus());
        let first = buses.clone().min()?;
        let last = buses.max()?;
        Some(SourceCheck::BusRange { first, last })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intremap::{Destination, Irte, MsiMessage};
    use crate::poll::StepClock;
    use crate::sim_device::tests::bring_up;
    use crate::sim_device::SimVtd;
    use lazaret_types::sim::{SimFrameAllocator, SimMemory};
    use lazaret_types::PhysAddr;

    fn bdf(rid: u16) -> Bdf {
        Bdf::from_requester_id(rid)
    }

    #[test]
    fn ranges_are_aligned_disjoint_and_reusable() {
        let mem = SimMemory::new();
        let mut alloc = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 2);
        let mut t =
            InterruptTable::new(TableMemory::coherent(&mem), &mut alloc, 16, false).unwrap();
        let a = t.reserve(1).unwrap();
        let b = t.reserve(3).unwrap();
        let c = t.reserve(2).unwrap();
        assert_eq!((a.first(), a.len()), (0, 1));
        assert_eq!((b.first(), b.len()), (4, 4), "rounded up and aligned");
        assert_eq!((c.first(), c.len()), (2, 2));
        assert_eq!(b.index(3), Some(7));
        assert_eq!(b.index(4), None);
        assert_eq!(
            b.scope(),
            InterruptScope::Entries {
                index: 4,
                index_mask: 2
            }
        );
        assert_eq!(t.reserve(16), None);
        let d = t.reserve(8).unwrap();
        assert_eq!(d.first(), 8);
        assert_eq!(t.reserve(1).map(|r| r.first()), Some(1));
        assert_eq!(t.reserve(1), None, "full");
        t.release(b);
        assert_eq!(t.reserve(4).map(|r| r.first()), Some(4));
    }

    #[test]
    fn requester_id_lists_become_exact_or_bus_range_checks() {
        let own = bdf(0x0318);
        assert_eq!(
            SourceCheck::for_requester_ids(&[own]),
            Some(SourceCheck::RequesterId(own))
        );
        assert_eq!(
            SourceCheck::for_requester_ids(&[own, own]),
            Some(SourceCheck::RequesterId(own))
        );
        // Behind a PCIe-to-PCI bridge with secondary bus 5: own 05:03.0, alias 05:00.0.
        assert_eq!(
            SourceCheck::for_requester_ids(&[bdf(0x0518), bdf(0x0500)]),
            Some(SourceCheck::BusRange { first: 5, last: 5 })
        );
        assert_eq!(
            SourceCheck::for_requester_ids(&[bdf(0x0600), bdf(0x0300)]),
            Some(SourceCheck::BusRange { first: 3, last: 6 })
        );
        assert_eq!(SourceCheck::for_requester_ids(&[]), None);
    }

    #[test]
    fn blocking_a_range_takes_one_invalidation_and_spares_the_neighbours() {
        let sim = SimVtd::new();
        let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 64);
        let clock = StepClock::default();
        let (mut unit, _root) = bring_up(&sim, &mut alloc);
        let tm = TableMemory::coherent(&*sim.mem);
        let mut t = InterruptTable::new(tm, &mut alloc, 16, false).unwrap();
        unit.enable_interrupt_remapping(&*sim.mem, &t, &clock)
            .unwrap();
        let (dev, other) = (bdf(0x0318), bdf(0x0320));
        let mine = t.reserve(4).unwrap();
        let theirs = t.reserve(4).unwrap();
        for (range, sid) in [(mine, dev), (theirs, other)] {
            for e in 0..range.len() {
                let irte = Irte {
                    vector: 0x40 + e as u8,
                    destination: Destination::Xapic(1),
                    source: SourceCheck::RequesterId(sid),
                };
                t.program(tm, range.first() + e, irte).unwrap();
            }
        }
        unit.invalidate_interrupt_entries(&*sim.mem, InterruptScope::Global, &clock)
            .unwrap();
        let msi = |sid, index| {
            let m = MsiMessage::remappable(index);
            sim.msi(sid, m.address, m.data).map(|i| i.vector)
        };
        for e in 0..4 {
            assert_eq!(msi(dev, mine.first() + e), Ok(0x40 + e as u8));
            assert_eq!(msi(other, theirs.first() + e), Ok(0x40 + e as u8));
        }
        let descriptors = sim.consumed.borrow().len();
        t.block_range(tm, mine).unwrap();
        unit.invalidate_interrupt_entries(&*sim.mem, mine.scope(), &clock)
            .unwrap();
        assert_eq!(
            sim.consumed.borrow().len(),
            descriptors + 2,
            "one IEC, one wait"
        );
        for e in 0..4 {
            assert_eq!(msi(dev, mine.first() + e).map_err(|f| f.reason), Err(0x22));
            assert_eq!(msi(other, theirs.first() + e), Ok(0x40 + e as u8));
        }
    }
}
