//! Domains: the hypervisor itself, DomIO (owner of every quarantined device) and guests, in
//! one arena addressed by generation-checked [`DomainId`]s.
pub mod arena;
pub mod memory;
pub mod paging;

use alloc::string::String;
use arena::{Arena, Handle};
pub use memory::{GuestMemory, Run};
pub use paging::{build_guest_tables, build_nested_tables, GuestLayout, MmioMapping};

pub type DomainId = Handle<Domain>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainKind {
    Hypervisor,
    /// Owns quarantined devices. It has IOMMU contexts (per device) but no page-table root.
    DomIo,
    Guest,
}

/// A domain as the arena holds it. A guest's IOMMU tables and domain IDs are the passthrough
/// core's (`passthrough::registry::Guest`), kept beside the arena under the device lock.
pub struct Domain {
    pub kind: DomainKind,
    pub name: String,
    pub memory: GuestMemory,
}

pub struct Domains {
    arena: Arena<Domain>,
    pub hypervisor: DomainId,
    pub dom_io: DomainId,
}

impl Default for Domains {
    fn default() -> Self {
        Self::new()
    }
}

impl Domains {
    pub fn new() -> Domains {
        let mut arena = Arena::default();
        let system = |kind, name: &str| Domain {
            kind,
            name: name.into(),
            memory: GuestMemory::default(),
        };
        let hypervisor = arena.insert(system(DomainKind::Hypervisor, "hypervisor"));
        let dom_io = arena.insert(system(DomainKind::DomIo, "DomIO"));
        Domains {
            arena,
            hypervisor,
            dom_io,
        }
    }

    pub fn get(&self, id: DomainId) -> Option<&Domain> {
        self.arena.get(id)
    }

    pub fn get_mut(&mut self, id: DomainId) -> Option<&mut Domain> {
        self.arena.get_mut(id)
    }

    pub(crate) fn insert(&mut self, d: Domain) -> DomainId {
        self.arena.insert(d)
    }

    pub(crate) fn remove(&mut self, id: DomainId) -> Option<Domain> {
        self.arena.remove(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (DomainId, &Domain)> {
        self.arena.iter()
    }

    pub fn is_guest(&self, id: DomainId) -> bool {
        self.get(id).is_some_and(|d| d.kind == DomainKind::Guest)
    }
}
