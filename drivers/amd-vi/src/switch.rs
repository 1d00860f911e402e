//! The invalidations an owner switch owes, and the order they must run in.
//!
//! A DTE change makes two caches stale (AMD IOMMU spec §2.4.2, §2.4.3): the cached DTE of the
//! DeviceID, and every IOTLB / page-directory entry tagged with the DomainID the old DTE
//! carried. The IOMMU "may execute commands in parallel and complete them in any order";
//! only a COMPLETION_WAIT orders them: it completes after every older command, and no
//! younger command starts before it (§2.4, §2.4.1). So a batch of DTE and page invalidations
//! without a fence may run the page invalidation first, and a DMA in between refills the
//! IOTLB through the still-cached old DTE, under the old DomainID — which is then handed to
//! another guest, or whose frames are freed. [`SwitchBatch::commands`] therefore emits
//! every INVALIDATE_DEVTAB_ENTRY, then an (unpolled) COMPLETION_WAIT fence, then the
//! INVALIDATE_IOMMU_PAGES; the caller appends the one COMPLETION_WAIT it polls.
//!
//! A device entering quarantine also has its interrupt remapping table blocked in memory; the
//! INVALIDATE_INTERRUPT_TABLE each of its DeviceIDs owes (§2.4.5) rides in the same batch,
//! after the fence (like [`crate::AmdViUnit::after_interrupt_dte_change`]: nothing is refilled
//! through a still-cached DTE), before the one polled COMPLETION_WAIT.
//!
//! The batch lives on the stack (owner switches run inside deassign and destroy, which must
//! not allocate). When it overflows it never drops a command: it degrades to
//! INVALIDATE_IOMMU_ALL (§2.4.8, EFR.IASup) or, without it, to every DTE / every DomainID.

use crate::command::{Command, PageScope};
use crate::device_table::DeviceTableEntry;

/// DeviceIDs a batch names one by one (a device, its phantom functions and bridge aliases).
pub const BATCH_DEVICES: usize = 32;
/// DomainIDs a batch names one by one.
pub const BATCH_DOMAINS: usize = 8;

/// The commands owed by a set of DTE changes, on the stack (no allocation: owner switches
/// run inside deassign/destroy).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SwitchBatch {
    devices: heapless::Vec<u16, BATCH_DEVICES>,
    domains: heapless::Vec<u16, BATCH_DOMAINS>,
    /// DeviceIDs whose interrupt remapping tables changed.
    interrupt_tables: heapless::Vec<u16, BATCH_DEVICES>,
    every_device: bool,
    every_domain: bool,
    every_interrupt_table: bool,
}

/// Whether a DTE can have filled the IOTLB: translation on (V = 1, TV = 1, Mode 1..=6).
/// Mode 0 and V = 0 requests are not translated, so nothing is cached under their DomainID.
fn translates(e: &DeviceTableEntry) -> bool {
    e.is_valid() && e.translation_valid() && e.levels().is_some()
}

impl SwitchBatch {
    pub fn new() -> SwitchBatch {
        SwitchBatch::default()
    }

    /// `device_id`'s DTE went from `old` to `new`: INVALIDATE_DEVTAB_ENTRY for it,
    /// INVALIDATE_IOMMU_PAGES (all pages) for old's DomainID when old translated.
    pub fn entry_changed(&mut self, device_id: u16, old: DeviceTableEntry, new: DeviceTableEntry) {
        if old == new {
            return;
        }
        self.device_changed(device_id);
        if translates(&old) {
            self.domain_retired(old.domain_id());
        }
    }

    /// `device_id`'s DTE changed (old entry unknown): INVALIDATE_DEVTAB_ENTRY only.
    pub fn device_changed(&mut self, device_id: u16) {
        if !self.every_device && !self.devices.contains(&device_id) {
            self.every_device = self.devices.push(device_id).is_err();
        }
    }

    /// Entries of the interrupt remapping table `device_id`'s DTE names changed (blocked on
    /// the way into quarantine): INVALIDATE_INTERRUPT_TABLE for it.
    pub fn interrupt_table_changed(&mut self, device_id: u16) {
        if !self.every_interrupt_table && !self.interrupt_tables.contains(&device_id) {
            self.every_interrupt_table = self.interrupt_tables.push(device_id).is_err();
        }
    }

    /// Everything the unit may cache: every DTE, every DomainID and every interrupt table
    /// (bring-up, or after a flush that did not complete).
    pub fn invalidate_everything(&mut self) {
        self.every_device = true;
        self.every_domain = true;
        self.every_interrupt_table = true;
    }

    /// DomainID `did` will be handed out again: all its pages invalidated.
    pub fn domain_retired(&mut self, did: u16) {
        if !self.every_domain && !self.domains.contains(&did) {
            self.every_domain = self.domains.push(did).is_err();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
            && self.domains.is_empty()
            && self.interrupt_tables.is_empty()
            && !self.overflowed()
    }

    /// DeviceIDs named one by one (meaningless once [`Self::overflowed`]).
    pub fn devices(&self) -> &[u16] {
        &self.devices
    }

    /// DomainIDs named one by one (meaningless once [`Self::overflowed`]).
    pub fn domains(&self) -> &[u16] {
        &self.domains
    }

    /// DeviceIDs whose interrupt tables are named one by one (meaningless once
    /// [`Self::overflowed`]).
    pub fn interrupt_tables(&self) -> &[u16] {
        &self.interrupt_tables
    }

    /// More DeviceIDs or DomainIDs than the batch can name: it invalidates everything.
    pub fn overflowed(&self) -> bool {
        self.every_device || self.every_domain || self.every_interrupt_table
    }

    /// The commands in their safe order, without the final (polled) COMPLETION_WAIT.
    /// `invalidate_all`: EFR.IASup; `device_ids`: entries of the programmed device table,
    /// the DeviceIDs "every DTE" means without IASup.
    pub fn commands(
        &self,
        invalidate_all: bool,
        device_ids: u32,
    ) -> impl Iterator<Item = Command> + '_ {
        let all = invalidate_all && self.overflowed();
        let one_by_one = move |every: bool| !all && !every;
        let devices = self
            .devices
            .iter()
            .copied()
            .filter(move |_| one_by_one(self.every_device));
        // Empty ranges when not owed: a filtered range would still be walked, 64 Ki steps
        // inside every deassign.
        let every = move |owed: bool, n: u32| 0..if !all && owed { n } else { 0 };
        let every_device = every(self.every_device, device_ids).map(|id| id as u16);
        let dtes = devices
            .chain(every_device)
            .map(|device_id| Command::InvalidateDevtabEntry { device_id });
        let has_dtes = !all && (self.every_device || !self.devices.is_empty());
        let has_pages = !all && (self.every_domain || !self.domains.is_empty());
        let has_tables = !all && (self.every_interrupt_table || !self.interrupt_tables.is_empty());
        let fence = (has_dtes && (has_pages || has_tables)).then_some(Command::CompletionWait {
            store: None,
            interrupt: false,
        });
        let domains = self
            .domains
            .iter()
            .copied()
            .filter(move |_| one_by_one(self.every_domain));
        let every_domain = every(self.every_domain, 1 << 16).map(|id| id as u16);
        let pages = domains
            .chain(every_domain)
            .map(|domain_id| Command::InvalidateIommuPages {
                domain_id,
                scope: PageScope::All,
            });
        let tables = self
            .interrupt_tables
            .iter()
            .copied()
            .filter(move |_| one_by_one(self.every_interrupt_table));
        let every_table = every(self.every_interrupt_table, device_ids).map(|id| id as u16);
        let tables = tables
            .chain(every_table)
            .map(|device_id| Command::InvalidateInterruptTable { device_id });
        all.then_some(Command::InvalidateIommuAll)
            .into_iter()
            .chain(dtes)
            .chain(fence)
            .chain(pages)
            .chain(tables)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::levels::Levels;
    use crate::pagetable::TranslationRoot;
    use lazaret_types::PhysAddr;

    fn translated(did: u16) -> DeviceTableEntry {
        DeviceTableEntry::translated(TranslationRoot::new(PhysAddr(0x5000), Levels::FOUR), did)
    }

    const FENCE: Command = Command::CompletionWait {
        store: None,
        interrupt: false,
    };

    fn pages(domain_id: u16) -> Command {
        Command::InvalidateIommuPages {
            domain_id,
            scope: PageScope::All,
        }
    }

    #[test]
    fn dte_invalidations_are_fenced_before_page_invalidations() {
        let mut b = SwitchBatch::new();
        assert!(b.is_empty());
        b.entry_changed(0x10, translated(5), DeviceTableEntry::blocking(9));
        b.entry_changed(0x11, translated(5), DeviceTableEntry::blocking(9));
        let cmds: Vec<_> = b.commands(true, 256).collect();
        assert_eq!(
            cmds,
            [
                Command::InvalidateDevtabEntry { device_id: 0x10 },
                Command::InvalidateDevtabEntry { device_id: 0x11 },
                FENCE,
                pages(5),
            ]
        );
    }

    #[test]
    fn untranslated_old_entries_owe_no_page_invalidation_and_no_change_owes_nothing() {
        let mut b = SwitchBatch::new();
        b.entry_changed(3, translated(4), translated(4));
        assert!(b.is_empty());
        b.entry_changed(3, DeviceTableEntry::blocking(1), translated(4));
        let cmds: Vec<_> = b.commands(true, 256).collect();
        assert_eq!(cmds, [Command::InvalidateDevtabEntry { device_id: 3 }]);
        let mut r = SwitchBatch::new();
        r.domain_retired(7);
        r.domain_retired(7);
        assert_eq!(r.commands(false, 256).collect::<Vec<_>>(), [pages(7)]);
    }

    #[test]
    fn overflow_degrades_to_invalidate_all_or_everything() {
        let mut b = SwitchBatch::new();
        for id in 0..=BATCH_DEVICES as u16 {
            b.entry_changed(id, translated(2), DeviceTableEntry::blocking(1));
        }
        assert!(b.overflowed() && !b.is_empty());
        assert_eq!(
            b.commands(true, 256).collect::<Vec<_>>(),
            [Command::InvalidateIommuAll]
        );
        let without_ia: Vec<_> = b.commands(false, 256).collect();
        assert_eq!(without_ia.len(), 256 + 1 + 1);
        assert_eq!(
            without_ia[255],
            Command::InvalidateDevtabEntry { device_id: 255 }
        );
        assert_eq!(without_ia[256], FENCE);
        assert_eq!(without_ia[257], pages(2));

        let mut d = SwitchBatch::new();
        for did in 0..=BATCH_DOMAINS as u16 {
            d.domain_retired(did);
        }
        let every: Vec<_> = d.commands(false, 256).collect();
        assert_eq!(every.len(), 65536);
        assert_eq!(every[65535], pages(u16::MAX));
    }

    #[test]
    fn blocked_interrupt_tables_follow_the_fence_and_overflow_to_everything() {
        let mut b = SwitchBatch::new();
        b.interrupt_table_changed(0x10);
        assert!(!b.is_empty());
        b.entry_changed(0x10, translated(5), DeviceTableEntry::blocking(9));
        b.interrupt_table_changed(0x10);
        let table = Command::InvalidateInterruptTable { device_id: 0x10 };
        assert_eq!(
            b.commands(true, 256).collect::<Vec<_>>(),
            [
                Command::InvalidateDevtabEntry { device_id: 0x10 },
                FENCE,
                pages(5),
                table,
            ]
        );
        let mut alone = SwitchBatch::new();
        alone.interrupt_table_changed(0x10);
        assert_eq!(alone.commands(true, 256).collect::<Vec<_>>(), [table]);
        let mut full = SwitchBatch::new();
        for id in 0..=BATCH_DEVICES as u16 {
            full.interrupt_table_changed(id);
        }
        assert_eq!(
            full.commands(true, 256).collect::<Vec<_>>(),
            [Command::InvalidateIommuAll]
        );
        let every: Vec<_> = full.commands(false, 256).collect();
        assert_eq!(every.len(), 256);
        assert_eq!(
            every[255],
            Command::InvalidateInterruptTable { device_id: 255 }
        );
    }
}
