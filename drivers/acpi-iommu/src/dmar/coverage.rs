//! Which DRHD translates a given device (VT-d spec §8.3, "INCLUDE_PCI_ALL"): a unit whose
//! device scopes name the device (or a bridge above it) wins; otherwise the segment's
//! INCLUDE_PCI_ALL unit. Scopes must be resolved against live PCI config space first (bridges'
//! bus numbers are assigned at run time), so this works on resolved scopes, not on table bytes.
extern crate alloc;

use alloc::vec::Vec;
use core::ops::RangeInclusive;

use lazaret_types::{Bdf, Sbdf};

use super::scope::{DeviceScope, ScopeType};
use super::structures::Drhd;

/// A device scope resolved to the functions it covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResolvedScope {
    /// Exactly this function (endpoint, IOAPIC, HPET or ACPI device scope).
    Function(Bdf),
    /// A bridge: the bridge itself and every function on the buses below it.
    Bridge {
        bridge: Bdf,
        /// Secondary through subordinate bus number.
        buses: RangeInclusive<u8>,
    },
}

impl ResolvedScope {
    /// Resolves `scope`; `bridge_buses` reads a bridge's (secondary, subordinate) bus numbers
    /// (config offsets 0x19 and 0x1a of a type-1 header). `None` when the path cannot be
    /// walked or the final bridge cannot be read.
    pub fn resolve(
        scope: &DeviceScope<'_>,
        mut bridge_buses: impl FnMut(Bdf) -> Option<(u8, u8)>,
    ) -> Option<ResolvedScope> {
        let target =
            scope.resolve(|bridge| bridge_buses(bridge).map(|(secondary, _)| secondary))?;
        if scope.scope_type != ScopeType::PciSubHierarchy {
            return Some(ResolvedScope::Function(target));
        }
        let (secondary, subordinate) = bridge_buses(target)?;
        Some(ResolvedScope::Bridge {
            bridge: target,
            buses: secondary..=subordinate,
        })
    }

    /// True when this scope covers `device`.
    pub fn covers(&self, device: Bdf) -> bool {
        match self {
            ResolvedScope::Function(bdf) => *bdf == device,
            ResolvedScope::Bridge { bridge, buses } => {
                *bridge == device || buses.contains(&device.bus())
            }
        }
    }
}

/// What the lookup needs of one DRHD: its segment, its INCLUDE_PCI_ALL flag and its resolved
/// scopes. One per DRHD, in table order.
#[derive(Clone, Copy, Debug)]
pub struct UnitScopes<'r> {
    pub segment: u16,
    pub include_pci_all: bool,
    pub scopes: &'r [ResolvedScope],
}

/// A DRHD with its device scopes resolved against live PCI config space.
#[derive(Clone, Debug)]
pub struct ResolvedUnit<'a> {
    pub drhd: Drhd<'a>,
    pub scopes: Vec<ResolvedScope>,
    /// Scopes whose path could not be walked (a bridge on the way is absent, e.g. an empty
    /// hot-plug slot, or a hop is out of range). They cover nothing; a tool may warn.
    pub unresolved: Vec<DeviceScope<'a>>,
}

impl<'a> ResolvedUnit<'a> {
    /// Resolves every scope of `drhd`; `bridge_buses` as for [`ResolvedScope::resolve`].
    pub fn resolve(
        drhd: Drhd<'a>,
        mut bridge_buses: impl FnMut(Bdf) -> Option<(u8, u8)>,
    ) -> ResolvedUnit<'a> {
        let mut scopes = Vec::new();
        let mut unresolved = Vec::new();
        for scope in drhd.scopes {
            match ResolvedScope::resolve(&scope, &mut bridge_buses) {
                Some(resolved) => scopes.push(resolved),
                None => unresolved.push(scope),
            }
        }
        ResolvedUnit {
            drhd,
            scopes,
            unresolved,
        }
    }

    /// The view [`covering_unit`] works on.
    pub fn unit_scopes(&self) -> UnitScopes<'_> {
        UnitScopes {
            segment: self.drhd.segment,
            include_pci_all: self.drhd.include_pci_all(),
            scopes: &self.scopes,
        }
    }
}

/// Index (in `units`, table order) of the DRHD that translates `device`: the first unit of the
/// device's segment with a scope covering it, else the first INCLUDE_PCI_ALL unit of that
/// segment, else `None` (no IOMMU translates the device). Explicit scopes win regardless of
/// table order, as in Linux's `dmar_find_matched_drhd_unit` (the spec asks firmware to list
/// the INCLUDE_PCI_ALL unit last, and not every firmware does).
///
/// With [`ResolvedUnit`]s: `covering_unit(units.iter().map(ResolvedUnit::unit_scopes), sbdf)`.
pub fn covering_unit<'r, I>(units: I, device: Sbdf) -> Option<usize>
where
    I: IntoIterator<Item = UnitScopes<'r>>,
    I::IntoIter: Clone,
{
    let units = units.into_iter();
    let in_segment = || {
        units
            .clone()
            .enumerate()
            .filter(move |(_, unit)| unit.segment == device.segment)
    };
    in_segment()
        .find(|(_, unit)| unit.scopes.iter().any(|s| s.covers(device.bdf)))
        .or_else(|| in_segment().find(|(_, unit)| unit.include_pci_all))
        .map(|(index, _)| index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dmar::scope::DeviceScopes;
    use crate::reader::Reader;
    use std::vec::Vec;

    fn bdf(bus: u8, device: u8, function: u8) -> Bdf {
        Bdf::new(bus, device, function).unwrap()
    }

    #[test]
    fn explicit_scopes_beat_include_pci_all_whatever_the_order() {
        let gpu = [ResolvedScope::Function(bdf(0, 2, 0))];
        let ports = [ResolvedScope::Bridge {
            bridge: bdf(0, 0x1c, 0),
            buses: 2..=4,
        }];
        let units = [
            UnitScopes {
                segment: 0,
                include_pci_all: true,
                scopes: &[],
            },
            UnitScopes {
                segment: 0,
                include_pci_all: false,
                scopes: &gpu,
            },
            UnitScopes {
                segment: 0,
                include_pci_all: false,
                scopes: &ports,
            },
            UnitScopes {
                segment: 1,
                include_pci_all: true,
                scopes: &[],
            },
        ];
        let find = |segment, device| covering_unit(units, Sbdf::new(segment, device));
        assert_eq!(find(0, bdf(0, 2, 0)), Some(1));
        assert_eq!(
            find(0, bdf(0, 2, 1)),
            Some(0),
            "another function of the GPU's slot"
        );
        assert_eq!(find(0, bdf(0, 0x1c, 0)), Some(2), "the bridge itself");
        assert_eq!(find(0, bdf(3, 0, 0)), Some(2), "below the bridge");
        assert_eq!(find(0, bdf(5, 0, 0)), Some(0), "past the subordinate bus");
        assert_eq!(find(1, bdf(0, 2, 0)), Some(3), "segments are separate");
        assert_eq!(find(2, bdf(0, 2, 0)), None);
    }

    #[test]
    fn resolves_bridge_scopes_to_their_bus_range() {
        // Bridge scope 00:1c.0 -> 01:00.0 (a switch port) whose buses are 2..=5.
        let bytes = [
            2u8, 10, 0, 0, 0, 0, 0x1c, 0, 0, 0, 1, 8, 0, 0, 0, 0, 0x1f, 3,
        ];
        let scopes: Vec<_> = DeviceScopes::validate(Reader::new(&bytes, 0))
            .unwrap()
            .collect();
        let config = |b: Bdf| match (b.bus(), b.device()) {
            (0, 0x1c) => Some((1, 5)),
            (1, 0) => Some((2, 5)),
            _ => None,
        };
        assert_eq!(
            ResolvedScope::resolve(&scopes[0], config),
            Some(ResolvedScope::Bridge {
                bridge: bdf(1, 0, 0),
                buses: 2..=5
            })
        );
        assert_eq!(
            ResolvedScope::resolve(&scopes[1], config),
            Some(ResolvedScope::Function(bdf(0, 0x1f, 3)))
        );
        assert_eq!(
            ResolvedScope::resolve(&scopes[0], |_| None),
            None,
            "unreadable bridge"
        );
    }
}
