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
use crate::hypervisor::Passthrough;
use crate::passthrough::iommu::Iommu;

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
pub fn check_quarantined_together(pci: &Enumeration, lock: &Passthrough, checks: &mut Checks) {
    for group in alias_groups(pci) {
        let g = lock.lock();
        let state = g.state();
        let dids: Vec<Option<u16>> = group
            .members
            .iter()
            .map(|m| state.devices.get(m).map(|d| d.quarantine.hw_domain_id))
            .collect();
        let pages: Vec<_> = group
            .members
            .iter()
            .map(|m| state.iommu.scratch_page(*m))
            .collect();
        let shared_walk = state.iommu.translate(group.requester, 0x1000, true).ok();
        drop(g);
        let registered = dids.iter().all(Option::is_some);
        let one_did = dids.windows(2).all(|w| w[0] == w[1]);
        let one_page = pages.windows(2).all(|w| w[0] == w[1])
            && pages.first().copied().flatten() == shared_walk;
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
