//! The owner-switch invalidation policy: which invalidations a set of context-entry changes
//! owes, collected on the stack so that deassign / destroy (which must not allocate) can use it.
//!
//! Rules (VT-d §6.5.3.3 "Guidance to Software for Invalidations", legacy mode):
//! * a present context entry modified or made not-present: context-cache device-selective
//!   with the OLD domain ID (cached entries are tagged with it), then IOTLB domain-selective
//!   for the old domain ID;
//! * not-present → present: nothing is cached unless CAP.CM = 1; with CM hardware may hold the
//!   not-present entry tagged with DID 0 (§6.1), so device-selective with DID 0 plus the new
//!   domain's IOTLB; with CM = 0 only the write buffer is owed (CAP.RWBF, §6.8);
//! * a domain ID that will be handed out again: context-cache domain-selective and IOTLB
//!   domain-selective for it, or a later owner tagged with it hits the earlier owner's entries.
//!
//! The context-cache invalidations must complete before the IOTLB ones take effect, or the
//! device can refill the IOTLB through a still-cached old context entry (descriptors between
//! fences complete in any order, §6.5.2.8): [`crate::VtdUnit::flush`] fences between them.
//! If a set overflows, the batch degrades to the global invalidation of that cache: always
//! safe, never a dropped invalidation.
//!
//! Interrupt remapping entries that were blocked with the switch (the device enters
//! quarantine) owe an interrupt entry cache invalidation (§6.5.2.7); it rides in the same
//! batch, behind the same final wait, so a deassign costs one doorbell and one status poll.
//! No order is owed between it and the DMA caches: the IEC is looked up by index alone.

use lazaret_types::Bdf;

use super::descriptor::{ContextScope, InterruptScope, Invalidation, IotlbScope};
use crate::context::ContextEntry;
use crate::regs::Capabilities;

/// Device-selective context invalidations one batch holds before degrading to global.
pub const SWITCH_DEVICES: usize = 16;
/// Domain IDs one batch holds (per cache) before degrading to global.
pub const SWITCH_DOMAINS: usize = 8;
/// Most context invalidations a batch turns into.
pub const MAX_CONTEXT_INVALIDATIONS: usize = SWITCH_DEVICES + SWITCH_DOMAINS;
/// Interrupt entry ranges one batch holds before degrading to a global IEC invalidation.
pub const SWITCH_INTERRUPTS: usize = 16;
/// Most IOTLB and interrupt entry cache invalidations a batch turns into (the last segment).
pub const MAX_LATE_INVALIDATIONS: usize = SWITCH_DOMAINS + SWITCH_INTERRUPTS;

/// A small set on the stack; `insert` reports overflow instead of dropping.
#[derive(Clone, Copy, Debug)]
struct StackSet<T, const N: usize> {
    items: [T; N],
    len: usize,
}

impl<T: Copy + PartialEq + Default, const N: usize> StackSet<T, N> {
    fn new() -> Self {
        StackSet {
            items: [T::default(); N],
            len: 0,
        }
    }

    /// `false` when `v` is new and there is no room.
    fn insert(&mut self, v: T) -> bool {
        if self.items[..self.len].contains(&v) {
            return true;
        }
        if self.len == N {
            return false;
        }
        self.items[self.len] = v;
        self.len += 1;
        true
    }

    fn as_slice(&self) -> &[T] {
        &self.items[..self.len]
    }
}

/// The invalidations owed by a set of context-entry changes, on the stack (owner switches run
/// inside deassign/destroy, which must not allocate).
#[derive(Clone, Copy, Debug)]
pub struct SwitchBatch {
    /// (DID, source-id) pairs for device-selective context-cache invalidation.
    devices: StackSet<(u16, Bdf), SWITCH_DEVICES>,
    context_domains: StackSet<u16, SWITCH_DOMAINS>,
    iotlb_domains: StackSet<u16, SWITCH_DOMAINS>,
    /// (first index, index mask) ranges of the interrupt remapping table.
    interrupts: StackSet<(u16, u8), SWITCH_INTERRUPTS>,
    global_context: bool,
    global_iotlb: bool,
    global_interrupts: bool,
    write_buffer: bool,
}

impl Default for SwitchBatch {
    fn default() -> Self {
        SwitchBatch::new()
    }
}

impl SwitchBatch {
    pub fn new() -> SwitchBatch {
        SwitchBatch {
            devices: StackSet::new(),
            context_domains: StackSet::new(),
            iotlb_domains: StackSet::new(),
            interrupts: StackSet::new(),
            global_context: false,
            global_iotlb: false,
            global_interrupts: false,
            write_buffer: false,
        }
    }

    /// `source_id`'s context entry went from `old` to `new` (VT-d §6.5.3.3 guidance for a
    /// modified present entry; under CAP.CM also not-present → present).
    pub fn entry_changed(
        &mut self,
        cap: Capabilities,
        source_id: Bdf,
        old: ContextEntry,
        new: ContextEntry,
    ) {
        if old == new {
            return;
        }
        if old.present {
            self.context_device(old.domain_id, source_id);
            self.iotlb_domain(old.domain_id);
        } else if new.present {
            if cap.caching_mode() {
                self.context_device(0, source_id);
                self.iotlb_domain(new.domain_id);
            } else if cap.rwbf() {
                self.write_buffer = true;
            }
        }
    }

    /// Domain `did` will be handed out again: every context-cache and IOTLB entry tagged with
    /// it must go.
    pub fn domain_retired(&mut self, did: u16) {
        if !self.context_domains.insert(did) {
            self.global_context = true;
        }
        self.iotlb_domain(did);
    }

    /// Interrupt remapping entries `scope` changed (blocked when the device entered
    /// quarantine): the interrupt entry cache may still hold them.
    pub fn interrupt_entries_changed(&mut self, scope: InterruptScope) {
        match scope {
            InterruptScope::Global => self.global_interrupts = true,
            InterruptScope::Entries { index, index_mask } => {
                if !self.interrupts.insert((index, index_mask)) {
                    self.global_interrupts = true;
                }
            }
        }
    }

    /// Everything the unit may cache: global context-cache, IOTLB and (when the unit remaps
    /// interrupts) interrupt entry cache invalidations — after a batch that did not complete,
    /// whose descriptors the unit may have dropped (§6.5.2.10: an invalid one is skipped).
    pub fn invalidate_everything(&mut self, interrupt_entries: bool) {
        self.global_context = true;
        self.global_iotlb = true;
        self.global_interrupts |= interrupt_entries;
    }

    pub fn is_empty(&self) -> bool {
        self.devices.len == 0
            && self.context_domains.len == 0
            && self.iotlb_domains.len == 0
            && self.interrupts.len == 0
            && !self.global_context
            && !self.global_iotlb
            && !self.global_interrupts
            && !self.write_buffer
    }

    /// Whether the unit's write buffer must be flushed (CM = 0, RWBF = 1, an entry became
    /// present).
    pub fn needs_write_buffer_flush(&self) -> bool {
        self.write_buffer
    }

    fn context_device(&mut self, did: u16, source_id: Bdf) {
        if !self.devices.insert((did, source_id)) {
            self.global_context = true;
        }
    }

    fn iotlb_domain(&mut self, did: u16) {
        if !self.iotlb_domains.insert(did) {
            self.global_iotlb = true;
        }
    }

    /// The context-cache invalidations, in `out`; returns how many.
    pub fn context_invalidations(
        &self,
        out: &mut [Invalidation; MAX_CONTEXT_INVALIDATIONS],
    ) -> usize {
        if self.global_context {
            out[0] = Invalidation::Context(ContextScope::Global);
            return 1;
        }
        let devices = self.devices.as_slice().iter().map(|&(did, source_id)| {
            Invalidation::Context(ContextScope::Device {
                did,
                source_id,
                function_mask: 0,
            })
        });
        let domains = self
            .context_domains
            .as_slice()
            .iter()
            .map(|&did| Invalidation::Context(ContextScope::Domain { did }));
        let mut n = 0;
        for (slot, inv) in out.iter_mut().zip(devices.chain(domains)) {
            *slot = inv;
            n += 1;
        }
        n
    }

    /// The IOTLB invalidations, with drain-reads / drain-writes as CAP.DRD / CAP.DWD allow
    /// (§6.5.2.3: draining makes earlier DMA reads / writes complete before the invalidation
    /// does, so nothing in flight still uses the old translation after the wait), then the
    /// interrupt entry cache invalidations: everything the final wait covers.
    pub fn late_invalidations(
        &self,
        cap: Capabilities,
        out: &mut [Invalidation; MAX_LATE_INVALIDATIONS],
    ) -> usize {
        let iotlbs = listed_or_global(
            self.iotlb_domains.as_slice(),
            self.global_iotlb,
            |did| IotlbScope::Domain { did },
            IotlbScope::Global,
        )
        .map(|scope| iotlb_drained(cap, scope));
        let interrupts = listed_or_global(
            self.interrupts.as_slice(),
            self.global_interrupts,
            |(index, index_mask)| InterruptScope::Entries { index, index_mask },
            InterruptScope::Global,
        )
        .map(Invalidation::InterruptEntry);
        let mut n = 0;
        for (slot, inv) in out.iter_mut().zip(iotlbs.chain(interrupts)) {
            *slot = inv;
            n += 1;
        }
        n
    }
}

/// `each` of `items`, or `all` alone once the set overflowed.
fn listed_or_global<'a, T: Copy, S: 'a>(
    items: &'a [T],
    global: bool,
    each: impl Fn(T) -> S + 'a,
    all: S,
) -> impl Iterator<Item = S> + 'a {
    items
        .iter()
        .filter(move |_| !global)
        .map(move |&t| each(t))
        .chain(global.then_some(all))
}

/// An IOTLB invalidation requesting every drain the unit supports.
pub const fn iotlb_drained(cap: Capabilities, scope: IotlbScope) -> Invalidation {
    Invalidation::Iotlb {
        scope,
        drain_reads: cap.drain_read(),
        drain_writes: cap.drain_write(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::levels::Levels;
    use lazaret_types::PhysAddr;

    const CM: Capabilities = Capabilities(1 << 7);
    const PLAIN: Capabilities = Capabilities(0);

    fn entry(did: u16) -> ContextEntry {
        ContextEntry::translated(PhysAddr(0x5000), Levels::Four, did)
    }

    fn lists(b: &SwitchBatch, cap: Capabilities) -> (Vec<Invalidation>, Vec<Invalidation>) {
        let mut c = [Invalidation::Context(ContextScope::Global); MAX_CONTEXT_INVALIDATIONS];
        let mut t = [Invalidation::Context(ContextScope::Global); MAX_LATE_INVALIDATIONS];
        let nc = b.context_invalidations(&mut c);
        let nt = b.late_invalidations(cap, &mut t);
        (c[..nc].to_vec(), t[..nt].to_vec())
    }

    #[test]
    fn a_modified_present_entry_owes_the_old_domain() {
        let dev = Bdf::from_requester_id(0x18);
        let mut b = SwitchBatch::new();
        assert!(b.is_empty());
        b.entry_changed(PLAIN, dev, entry(5), entry(9));
        b.entry_changed(PLAIN, dev, entry(5), entry(9));
        let (c, t) = lists(&b, PLAIN);
        assert_eq!(
            c,
            vec![Invalidation::Context(ContextScope::Device {
                did: 5,
                source_id: dev,
                function_mask: 0
            })]
        );
        assert_eq!(t, vec![iotlb_drained(PLAIN, IotlbScope::Domain { did: 5 })]);
        let mut gone = SwitchBatch::new();
        gone.entry_changed(PLAIN, dev, entry(5), ContextEntry::NOT_PRESENT);
        assert_eq!(lists(&gone, PLAIN), (c, t));
    }

    #[test]
    fn not_present_to_present_only_under_caching_mode() {
        let dev = Bdf::from_requester_id(0x20);
        let mut b = SwitchBatch::new();
        b.entry_changed(PLAIN, dev, ContextEntry::NOT_PRESENT, entry(3));
        assert!(b.is_empty());
        b.entry_changed(
            Capabilities(1 << 4),
            dev,
            ContextEntry::NOT_PRESENT,
            entry(3),
        );
        assert!(b.needs_write_buffer_flush() && !b.is_empty());
        let mut cm = SwitchBatch::new();
        cm.entry_changed(CM, dev, ContextEntry::NOT_PRESENT, entry(3));
        let (c, t) = lists(&cm, CM);
        assert_eq!(
            c,
            vec![Invalidation::Context(ContextScope::Device {
                did: 0,
                source_id: dev,
                function_mask: 0
            })]
        );
        assert_eq!(t, vec![iotlb_drained(CM, IotlbScope::Domain { did: 3 })]);
    }

    #[test]
    fn retired_domains_and_drains() {
        let drains = Capabilities((1 << 54) | (1 << 55));
        let mut b = SwitchBatch::new();
        b.domain_retired(7);
        let (c, t) = lists(&b, drains);
        assert_eq!(
            c,
            vec![Invalidation::Context(ContextScope::Domain { did: 7 })]
        );
        assert_eq!(
            t,
            vec![Invalidation::Iotlb {
                scope: IotlbScope::Domain { did: 7 },
                drain_reads: true,
                drain_writes: true
            }]
        );
    }

    #[test]
    fn overflow_degrades_to_global_never_drops() {
        let mut b = SwitchBatch::new();
        for rid in 0..=SWITCH_DEVICES as u16 {
            b.entry_changed(
                PLAIN,
                Bdf::from_requester_id(rid),
                entry(rid + 1),
                entry(99),
            );
        }
        let (c, t) = lists(&b, PLAIN);
        assert_eq!(c, vec![Invalidation::Context(ContextScope::Global)]);
        assert_eq!(t, vec![iotlb_drained(PLAIN, IotlbScope::Global)]);
        let mut d = SwitchBatch::new();
        for did in 0..=SWITCH_DOMAINS as u16 {
            d.domain_retired(did);
        }
        let (c, t) = lists(&d, PLAIN);
        assert_eq!(c, vec![Invalidation::Context(ContextScope::Global)]);
        assert_eq!(t, vec![iotlb_drained(PLAIN, IotlbScope::Global)]);
    }

    #[test]
    fn blocked_interrupt_entries_ride_behind_the_iotlb_and_overflow_to_global() {
        let dev = Bdf::from_requester_id(0x18);
        let mut b = SwitchBatch::new();
        let range = InterruptScope::Entries {
            index: 8,
            index_mask: 2,
        };
        b.interrupt_entries_changed(range);
        assert!(!b.is_empty());
        b.entry_changed(PLAIN, dev, entry(5), entry(9));
        b.interrupt_entries_changed(range);
        let (c, t) = lists(&b, PLAIN);
        assert_eq!(c.len(), 1);
        assert_eq!(
            t,
            vec![
                iotlb_drained(PLAIN, IotlbScope::Domain { did: 5 }),
                Invalidation::InterruptEntry(range)
            ]
        );
        let mut full = SwitchBatch::new();
        for index in 0..=SWITCH_INTERRUPTS as u16 {
            full.interrupt_entries_changed(InterruptScope::Entries {
                index,
                index_mask: 0,
            });
        }
        assert_eq!(
            lists(&full, PLAIN).1,
            vec![Invalidation::InterruptEntry(InterruptScope::Global)]
        );
    }
}
