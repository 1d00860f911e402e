//! Per-CPU ASID assignment (APM vol. 2 §15.16): every vCPU runs with an ASID of its own, so
//! guests never share TLB entries. ASIDs are handed out in order; when they run out, a new
//! generation starts, the whole TLB is flushed once, and every vCPU gets a fresh ASID on its
//! next entry. A freshly assigned ASID is always flushed before first use: it may hold
//! translations of a vCPU that had it in an earlier generation. The full flush of a new
//! generation stays owed until an entry really made it ([`AsidAllocator::entered`]): an entry
//! refused before VMRUN must not lose it.
use crate::vmcb::tlb_control;

/// The ASID a vCPU last ran with on this CPU, and in which generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AsidTag {
    pub asid: u32,
    pub generation: u64,
}

#[derive(Clone, Debug)]
pub struct AsidAllocator {
    nasid: u32,
    next: u32,
    generation: u64,
    flush_by_asid: bool,
    full_flush_owed: bool,
}

impl AsidAllocator {
    /// `nasid` from CPUID 8000_000A EBX (ASID 0 is the host's); `flush_by_asid` from EDX bit 6
    /// (without it only TLB_CONTROL 0 and 1 are valid).
    pub fn new(nasid: u32, flush_by_asid: bool) -> AsidAllocator {
        AsidAllocator {
            nasid,
            next: 1,
            generation: 1,
            flush_by_asid,
            full_flush_owed: false,
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The ASID for the next entry of the vCPU holding `tag`, and the TLB_CONTROL to enter with.
    pub fn assign(&mut self, tag: &mut Option<AsidTag>) -> (u32, u8) {
        let (asid, flush) = self.pick(tag);
        if self.full_flush_owed {
            (asid, tlb_control::FLUSH_ALL)
        } else {
            (asid, flush)
        }
    }

    /// Records that VMRUN ran with `tlb_control`: a full flush owed is then done.
    pub fn entered(&mut self, tlb_control: u8) {
        if tlb_control == tlb_control::FLUSH_ALL {
            self.full_flush_owed = false;
        }
    }

    fn pick(&mut self, tag: &mut Option<AsidTag>) -> (u32, u8) {
        if let Some(t) = tag {
            if t.generation == self.generation {
                return (t.asid, tlb_control::DO_NOTHING);
            }
        }
        let flush = if self.next >= self.nasid {
            self.generation += 1;
            self.next = 1;
            self.full_flush_owed = true;
            tlb_control::FLUSH_ALL
        } else if self.flush_by_asid {
            tlb_control::FLUSH_GUEST
        } else {
            tlb_control::FLUSH_ALL
        };
        let asid = self.next;
        self.next += 1;
        *tag = Some(AsidTag {
            asid,
            generation: self.generation,
        });
        (asid, flush)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asids_are_distinct_flushed_on_first_use_and_wrap_with_a_full_flush() {
        let mut a = AsidAllocator::new(4, true); // ASIDs 1, 2, 3
        let mut tags = [None; 4];
        let first: Vec<_> = (0..3).map(|i| a.assign(&mut tags[i])).collect();
        assert_eq!(first, vec![(1, 3), (2, 3), (3, 3)]);
        // Running again reuses the ASID without a flush.
        assert_eq!(a.assign(&mut tags[1]), (2, 0));
        // A fourth vCPU: no ASID left, new generation, flush everything.
        assert_eq!(a.assign(&mut tags[3]), (1, 1));
        a.entered(1);
        assert_eq!(a.generation(), 2);
        // vCPU 0 held ASID 1 in the old generation: it gets a new one, flushed.
        assert_eq!(a.assign(&mut tags[0]), (2, 3));
        assert_eq!(a.assign(&mut tags[3]), (1, 0));
        // The wrap's full flush stays owed until an entry reports it ran.
        let mut b = AsidAllocator::new(2, true); // ASID 1 only
        let mut t = [None; 3];
        assert_eq!(b.assign(&mut t[0]), (1, 3));
        assert_eq!(b.assign(&mut t[1]), (1, 1), "wrap");
        // That entry was refused before VMRUN: the next one, even a reuse, still flushes all.
        assert_eq!(b.assign(&mut t[1]), (1, 1));
        b.entered(1);
        assert_eq!(b.assign(&mut t[1]), (1, 0));
        let mut no_flush_by_asid = AsidAllocator::new(4, false);
        assert_eq!(no_flush_by_asid.assign(&mut None), (1, 1));
    }
}
