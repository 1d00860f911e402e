//! Alias groups: conventional PCI functions behind a PCIe-to-PCI bridge all DMA with the
//! requester ID (secondary bus, 00.0) (PCIe-to-PCI/PCI-X Bridge Spec rev 1.0 §2.3; QEMU's
//! `pcie-pci-bridge` does exactly that), so the IOMMU cannot tell them apart: they are one
//! unit of isolation and must sit in one quarantine (one domain ID, one scratch page).
//!
//! The groups come from the PCI topology here, not from the core's requester-ID lists, so
//! the check can disagree with the core.
use alloc::vec::Vec;

use lazaret_pci::{Enumeration, HeaderKind, PciePortType};
use lazaret_types::{Bdf, Sbdf};

use super::checks::Checks;
use crate::passthrough::iommu::Inspect;
use crate::passthrough::DeviceLock;

pub struct AliasGroup {
    pub bridge: Sbdf,
    /// The ID every member's DMA carries.
    pub requester: Sbdf,
    pub members: Vec<Sbdf>,
}

/// One group per PCIe-to-PCI bridge with at least one function behind it.
pub fn alias_groups(pci: &Enumeration) -> Vec<AliasGroup> {
    pci.functions
        .iter()
        .filter(|b| b.pcie.as_ref().map(|p| p.port_type) == Some(PciePortType::PcieToPciBridge))
        .filter_map(|b| {
            let HeaderKind::Bridge { secondary_bus, .. } = b.header else {
                return None;
            };
            let members: Vec<Sbdf> = pci
                .functions
                .iter()
                .filter(|f| pci.ancestors(f.sbdf).any(|a| a.sbdf == b.sbdf))
                .map(|f| f.sbdf)
                .collect();
            let requester = Sbdf {
                segment: b.sbdf.segment,
                bdf: Bdf::new(secondary_bus, 0, 0)?,
            };
            (!members.is_empty()).then_some(AliasGroup {
                bridge: b.sbdf,
                requester,
                members,
            })
        })
        .collect()
}

/// One `alias-group` RESULT per group: every member is registered under one hardware domain
/// ID, and (scratch mode) has one scratch page, the page the shared requester ID walks to.
pub fn check_quarantined_together<V: Inspect>(
    pci: &Enumeration,
    lock: &DeviceLock<V>,
    checks: &mut Checks,
) {
    for group in alias_groups(pci) {
        let g = lock.lock();
        let state = g.state();
        let dom_io = state.dom_io();
        let registered = group
            .members
            .iter()
            .all(|m| state.owner_of(*m) == Some(dom_io));
        // The core must see the members as one group (they move together), and the shared
        // requester ID must walk into the quarantine of one of them — nowhere else.
        let core_group = group.members.first().map(|m| state.group_of(*m));
        let one_group = core_group.is_some_and(|cg| group.members.iter().all(|m| cg.contains(m)));
        let pages: Vec<_> = group
            .members
            .iter()
            .map(|m| state.scratch_page(*m))
            .collect();
        let shared_walk = state.translate(group.requester, 0x1000, true).ok();
        drop(g);
        let one_did = one_group;
        let one_page = shared_walk.is_none_or(|w| pages.contains(&Some(w)));
        let together = registered && one_did && one_page;
        let mut names = alloc::string::String::new();
        for (i, m) in group.members.iter().enumerate() {
            if i > 0 {
                names.push_str(", ");
            }
            let _ = core::fmt::write(&mut names, format_args!("{m}"));
        }
        checks.check(
            "alias-group",
            together,
            format_args!(
                "{names} behind bridge {} all DMA as {}: {}",
                group.bridge,
                group.requester.bdf,
                if together {
                    "quarantined together (one domain ID, one scratch page)"
                } else if !registered {
                    "NOT all registered"
                } else if !one_did {
                    "NOT quarantined together: each has its own domain ID"
                } else {
                    "NOT quarantined together: the shared ID walks to another member's scratch page"
                }
            ),
        );
    }
}
