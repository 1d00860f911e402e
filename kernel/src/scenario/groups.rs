//! Alias groups: conventional PCI functions behind a PCIe-to-PCI bridge all DMA with the
//! requester ID (secondary bus, 00.0) (PCIe-to-PCI/PCI-X Bridge Spec rev 1.0 §2.3; QEMU's
//! `pcie-pci-bridge` does exactly that), so the IOMMU cannot tell them apart: they are one
//! unit of isolation: in quarantine their DMA lands in the scratch page of the group's
//! *leader*, its lowest-SBDF function.
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
    /// The functions behind the bridge (bridges below it excluded), in SBDF order.
    pub members: Vec<Sbdf>,
}

impl AliasGroup {
    /// The lowest-SBDF function: the one whose scratch page the group's DMA lands in.
    pub fn leader(&self) -> Option<Sbdf> {
        self.members.first().copied()
    }
}

/// For a function in an alias group: the requester ID its DMA carries and the leader whose
/// scratch page that DMA reaches in quarantine. `None` for a device that DMAs as itself.
pub fn landing(pci: &Enumeration, sbdf: Sbdf) -> Option<(Sbdf, Sbdf)> {
    alias_groups(pci)
        .into_iter()
        .find(|g| g.members.contains(&sbdf))
        .and_then(|g| Some((g.requester, g.leader()?)))
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
            let mut members: Vec<Sbdf> = pci
                .functions
                .iter()
                .filter(|f| !matches!(f.header, HeaderKind::Bridge { .. }))
                .filter(|f| pci.ancestors(f.sbdf).any(|a| a.sbdf == b.sbdf))
                .map(|f| f.sbdf)
                .collect();
            members.sort_unstable();
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

/// One `alias-group` RESULT per group: every member and the bridge are in DomIO, the core
/// moves them as one group (the bridge carried), and (scratch mode) the shared requester ID
/// walks to the leader's scratch page.
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
            .chain([&group.bridge])
            .all(|m| state.owner_of(*m) == Some(dom_io));
        // The core must see the members as one group with the bridge in it (they move
        // together), and the shared requester ID must walk into the leader's quarantine.
        let core_group = group.members.first().map(|m| state.group_of(*m));
        let one_group = core_group.is_some_and(|cg| {
            group.members.iter().all(|m| cg.contains(m)) && cg.contains(&group.bridge)
        });
        let leader_page = group.leader().and_then(|l| state.scratch_page(l));
        let shared_walk = state.translate(group.requester, 0x1000, true).ok();
        drop(g);
        let to_leader = match (leader_page, shared_walk) {
            (Some(page), Some(walk)) => walk == page,
            // Basic / none: no scratch page, and the shared ID must not walk anywhere.
            (None, walk) => walk.is_none(),
            (Some(_), None) => false,
        };
        let together = registered && one_group && to_leader;
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
                    "quarantined as one group carrying the bridge; their DMA lands where the leader's does"
                } else if !registered {
                    "NOT all in DomIO"
                } else if !one_group {
                    "NOT one group with the bridge"
                } else {
                    "NOT quarantined as one: the shared ID does not walk to the leader's scratch page"
                }
            ),
        );
    }
}
