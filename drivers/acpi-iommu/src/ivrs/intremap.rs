//! Whether the IVRS lets an OS rely on an IOMMU's interrupt remapping.
//!
//! Interrupt remapping on AMD-Vi is not a bit in the IVRS: firmware shows it by naming the
//! IOAPICs whose interrupts pass through the IOMMU, as 48h special-device entries of
//! variety IOAPIC (AMD IOMMU spec rev 3.x §5.2.2.3, "IVHD Device Entries", special device
//! variety 01h; the handle is the IOAPIC ID of the MADT). An OS that turns remapping on
//! must program an IRTE for every IOAPIC interrupt, so without that entry it cannot: Linux
//! (`check_ioapic_information` in drivers/iommu/amd/init.c) then refuses AMD interrupt
//! remapping altogether, naming each MADT IOAPIC missing from the IVRS. QEMU's amd-iommu
//! writes the entry (IOAPIC 0 at 00:14.0) exactly when `intremap=on`, and with it off it
//! does not remap MSIs whatever the DTE says — so a unit whose IVHD names no IOAPIC is one
//! whose remapping cannot be relied on, on real firmware and on QEMU alike.
//!
//! The MADT check is platform-wide, as in Linux: on machines with several IOMMUs each IVHD
//! names the IOAPICs behind its own root complex (a Threadripper's second die lists only
//! its own), so an IOAPIC is covered when any IVHD names it.
use core::fmt;

use lazaret_types::Bdf;

use super::entry::{EntryDetail, SpecialVariety};
use super::ivhd::Ivhd;

/// Why an IOMMU's interrupt remapping cannot be relied on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemapDoubt {
    /// Its IVHD names no IOAPIC.
    NoIoapic,
    /// The MADT lists this IOAPIC (its ID), and no IVHD names it.
    IoapicNotListed { id: u8 },
}

impl fmt::Display for RemapDoubt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemapDoubt::NoIoapic => f.write_str("its IVRS lists no IOAPIC"),
            RemapDoubt::IoapicNotListed { id } => {
                write!(f, "the MADT's IOAPIC {id} is in no IVHD")
            }
        }
    }
}

impl Ivhd<'_> {
    /// The IOAPICs this IVHD names: (IOAPIC ID, requester ID its interrupts carry).
    pub fn ioapics(&self) -> impl Iterator<Item = (u8, Bdf)> + '_ {
        self.entries.iter().filter_map(|e| match e.detail {
            EntryDetail::Special {
                handle,
                source,
                variety: SpecialVariety::IoApic,
            } => Some((handle, source)),
            _ => None,
        })
    }
}

/// What stands against relying on `unit`'s interrupt remapping, `None` when nothing does.
/// `all` is every IVHD in use (one per IOMMU, `unit` among them); `madt_ioapics` the IOAPIC
/// IDs the MADT lists, `None` when unknown — then IOAPICs are assumed, as every PC has one.
pub fn remapping_doubt(
    unit: &Ivhd<'_>,
    all: &[&Ivhd<'_>],
    madt_ioapics: Option<&[u8]>,
) -> Option<RemapDoubt> {
    if madt_ioapics.is_some_and(|ids| ids.is_empty()) {
        return None;
    }
    if unit.ioapics().next().is_none() {
        return Some(RemapDoubt::NoIoapic);
    }
    let named = |id: u8| {
        all.iter()
            .any(|h| h.ioapics().any(|(handle, _)| handle == id))
    };
    madt_ioapics?
        .iter()
        .find(|id| !named(**id))
        .map(|&id| RemapDoubt::IoapicNotListed { id })
}
