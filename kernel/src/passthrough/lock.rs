//! The one coarse device lock, and the proof of holding it.
use spinning_top::guard::SpinlockGuard;
use spinning_top::Spinlock;

/// Proof that the device lock is held. It has no public constructor and cannot be copied
/// out: the only way to get a `&LockHeld` is to borrow it from a live [`DevicesGuard`].
pub struct LockHeld {
    _private: (),
}

/// The device lock: guards the registry, the domain arena, and the IOMMU, i.e. every change
/// of device ownership.
pub struct DeviceLock<S> {
    state: Spinlock<S>,
}

impl<S> DeviceLock<S> {
    pub const fn new(state: S) -> DeviceLock<S> {
        DeviceLock {
            state: Spinlock::new(state),
        }
    }

    pub fn lock(&self) -> DevicesGuard<'_, S> {
        DevicesGuard {
            guard: self.state.lock(),
            held: LockHeld { _private: () },
        }
    }
}

/// The held device lock. Dropping it releases the lock.
pub struct DevicesGuard<'a, S> {
    guard: SpinlockGuard<'a, S>,
    held: LockHeld,
}

impl<S> DevicesGuard<'_, S> {
    /// The proof of holding the lock, and the guarded state, at once (the proof is what
    /// IOMMU methods demand; the state is what they change).
    pub fn split(&mut self) -> (&LockHeld, &mut S) {
        (&self.held, &mut self.guard)
    }

    pub fn state(&self) -> &S {
        &self.guard
    }
}
