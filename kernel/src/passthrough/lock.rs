//! The one coarse device lock, and the proof of holding it.
//!
//! The lock owns the whole passthrough [`State`]: the registry, the domain arena and the
//! vendor's IOMMU. That state is reachable only through a [`DevicesGuard`], and the guard
//! lends the [`LockHeld`] proof only to the core (`split` is private to `passthrough`), so a
//! proof cannot be minted for some other lock and shown to this IOMMU: the vendor that the
//! proof unlocks lives inside the lock that lent it.
use spinning_top::guard::SpinlockGuard;
use spinning_top::Spinlock;

use super::iommu::Vendor;
use super::registry::State;
use crate::cmdline::QuarantineMode;

/// Proof that the device lock is held. It has no public constructor and cannot be copied
/// out: the only `&LockHeld` there is is borrowed from a live [`DevicesGuard`], inside the
/// core.
pub struct LockHeld {
    _private: (),
}

/// The device lock: guards every change of device ownership.
pub struct DeviceLock<V: Vendor> {
    state: Spinlock<State<V>>,
}

impl<V: Vendor> DeviceLock<V> {
    /// Takes the IOMMU (brought up, every entry blocking) into a fresh registry.
    pub fn new(vendor: V, mode: QuarantineMode) -> DeviceLock<V> {
        DeviceLock {
            state: Spinlock::new(State::new(vendor, mode)),
        }
    }

    pub fn lock(&self) -> DevicesGuard<'_, V> {
        DevicesGuard {
            guard: self.state.lock(),
            held: LockHeld { _private: () },
        }
    }
}

/// The held device lock. Dropping it releases the lock.
pub struct DevicesGuard<'a, V: Vendor> {
    guard: SpinlockGuard<'a, State<V>>,
    held: LockHeld,
}

impl<V: Vendor> DevicesGuard<'_, V> {
    /// The proof and the state at once: what vendor methods demand, and what they change.
    pub(super) fn split(&mut self) -> (&LockHeld, &mut State<V>) {
        (&self.held, &mut self.guard)
    }

    /// `intremap=off`: let `assign` give a device whose unit does not remap interrupts
    /// (it can then raise any host interrupt) — the default refuses it.
    pub fn require_interrupt_remapping(&mut self, required: bool) {
        self.guard.intremap_required = required;
    }

    /// Read-only view of the registry, the domains and the IOMMU.
    pub fn state(&self) -> &State<V> {
        &self.guard
    }
}
