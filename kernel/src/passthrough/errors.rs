//! Why the core refused or could not finish a request. A refusal changes nothing.
use core::fmt;

use lazaret_types::{Bdf, Sbdf};

use super::iommu::{IommuError, ReservedRange, MAX_REQUESTER_IDS};
use super::registry::MAX_GROUP;
use crate::domain::DomainId;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PassthroughError {
    UnknownDevice(Sbdf),
    DeviceExists(Sbdf),
    UnknownDomain(DomainId),
    NotAGuest(DomainId),
    AlreadyAssigned {
        sbdf: Sbdf,
        owner: DomainId,
    },
    NotOwner {
        sbdf: Sbdf,
        owner: DomainId,
    },
    /// Joining an alias group whose members are not all quarantined would hand this device's
    /// DMA to their owner.
    SharedAlias {
        sbdf: Sbdf,
        alias: Bdf,
        other: Sbdf,
    },
    /// Bridges forward other devices' DMA: one is never assigned or deassigned on its own;
    /// it moves only with the alias group that carries it.
    Bridge(Sbdf),
    /// The alias group would exceed what one switch moves without allocating.
    GroupTooLarge(Sbdf),
    /// Group members sit behind different IOMMU units: they cannot move in one switch.
    GroupSpansUnits {
        sbdf: Sbdf,
        other: Sbdf,
    },
    /// An earlier switch failed half-way: the device blocks all DMA until added again.
    Blocked(Sbdf),
    /// Another device's RMRR / unity range overlaps this one's.
    SharedReserved {
        sbdf: Sbdf,
        other: Sbdf,
    },
    /// A reserved range lies inside the guest's memory, where it would shadow guest pages.
    ReservedInGuestMemory {
        sbdf: Sbdf,
        range: ReservedRange,
    },
    /// More requester IDs than an owner switch handles without allocating.
    TooManyRequesterIds {
        sbdf: Sbdf,
        count: usize,
    },
    /// The device's IOMMU does not remap interrupts: assigned, it could raise any host
    /// interrupt (`intremap=off` on the command line allows it anyway).
    NoInterruptRemapping(Sbdf),
    /// The device has no interrupt entry `entry` (none reserved, or beyond its count).
    NoInterruptEntry {
        sbdf: Sbdf,
        entry: u16,
    },
    Iommu(IommuError),
}

impl fmt::Display for PassthroughError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use PassthroughError::*;
        match self {
            UnknownDevice(s) => write!(f, "there is no device {s}"),
            DeviceExists(s) => write!(f, "device {s} is already registered"),
            UnknownDomain(d) => write!(f, "domain {d} does not exist (destroyed or never created)"),
            NotAGuest(d) => write!(f, "domain {d} is a system domain, not a guest"),
            AlreadyAssigned { sbdf, owner } => {
                write!(f, "{sbdf} is already assigned to domain {owner}")
            }
            NotOwner { sbdf, owner } => {
                write!(f, "{sbdf} belongs to domain {owner}, not to the caller")
            }
            SharedAlias { sbdf, alias, other } => write!(
                f,
                "{sbdf} shares requester ID {alias} with {other}, which is not in quarantine"
            ),
            Bridge(s) => write!(
                f,
                "{s} is a bridge: it moves only with the alias group that carries it, never on its own"
            ),
            GroupTooLarge(s) => write!(f, "{s}'s alias group would exceed {MAX_GROUP} devices"),
            GroupSpansUnits { sbdf, other } => write!(
                f,
                "{sbdf} shares a requester ID with {other}, which sits behind another IOMMU unit"
            ),
            Blocked(s) => write!(f, "{s} is blocked after a failed switch"),
            SharedReserved { sbdf, other } => write!(
                f,
                "{sbdf} shares a reserved (RMRR/unity) range with {other}"
            ),
            ReservedInGuestMemory { sbdf, range } => write!(
                f,
                "{sbdf}'s reserved range {:#x}-{:#x} lies inside the guest's memory",
                range.start, range.end
            ),
            TooManyRequesterIds { sbdf, count } => write!(
                f,
                "{sbdf} carries {count} requester IDs; at most {MAX_REQUESTER_IDS} are supported"
            ),
            NoInterruptRemapping(s) => write!(
                f,
                "{s}'s IOMMU does not remap interrupts: assigned, it could raise any host interrupt (intremap=off allows it anyway)"
            ),
            NoInterruptEntry { sbdf, entry } => {
                write!(f, "{sbdf} has no interrupt entry {entry}")
            }
            Iommu(e) => write!(f, "IOMMU: {e}"),
        }
    }
}

impl From<IommuError> for PassthroughError {
    fn from(e: IommuError) -> Self {
        PassthroughError::Iommu(e)
    }
}
