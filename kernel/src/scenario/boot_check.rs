//! `scenario=boot`: did bring-up do what it claims? The firmware's ACPI tables say whether
//! there is an IOMMU; if there is, every PCI function but the IOMMU's own must be registered
//! and owned by DomIO, and each alias group must be quarantined as one.
use lazaret_types::Sbdf;

use super::checks::Checks;
use super::groups;
use crate::hypervisor::Hypervisor;
use crate::passthrough::iommu::Inspect;

/// PCI class 08h/06h: an IOMMU's own function (AMD-Vi), which is never quarantined.
fn is_iommu(f: &lazaret_pci::PciFunction) -> bool {
    f.class.base == 0x08 && f.class.sub == 0x06
}

pub fn run<V: Inspect>(hv: &mut Hypervisor<V>, checks: &mut Checks) {
    let firmware_iommu = crate::platform::acpi::discover(hv.options.acpi_rsdp).map(|p| {
        p.tables
            .iter()
            .any(|(sig, _, _)| sig == b"DMAR" || sig == b"IVRS")
    });
    let lock = match (firmware_iommu, hv.passthrough.as_ref()) {
        (Err(e), _) => {
            checks.check(
                "boot",
                false,
                format_args!("the ACPI tables could not be read again: {e}"),
            );
            return;
        }
        (Ok(false), None) => {
            checks.check(
                "boot",
                true,
                format_args!("all bring-up stages completed; the firmware describes no IOMMU (no DMAR or IVRS table), so no device is quarantined"),
            );
            return;
        }
        (Ok(true), None) => {
            checks.check(
                "boot",
                false,
                format_args!("IOMMU bring-up failed: the firmware describes an IOMMU but none is running, so no device is quarantined (see the iommu lines above)"),
            );
            return;
        }
        (Ok(_), Some(lock)) => lock,
    };
    let expected: alloc::vec::Vec<Sbdf> = hv
        .pci
        .functions
        .iter()
        .filter(|f| !is_iommu(f))
        .map(|f| f.sbdf)
        .collect();
    let (quarantined, missing) = {
        let g = lock.lock();
        let s = g.state();
        let in_dom_io = |sbdf: &Sbdf| s.owner_of(*sbdf) == Some(s.dom_io());
        let quarantined = expected.iter().filter(|f| in_dom_io(f)).count();
        (
            quarantined,
            expected.iter().copied().find(|f| !in_dom_io(f)),
        )
    };
    match missing {
        None => checks.check(
            "boot",
            true,
            format_args!(
                "all bring-up stages completed; all {quarantined} device(s) but the IOMMU's own function are quarantined in DomIO"
            ),
        ),
        Some(first) => checks.check(
            "boot",
            false,
            format_args!(
                "only {quarantined} of {} device(s) are quarantined in DomIO; {first} is not",
                expected.len()
            ),
        ),
    };
    groups::check_quarantined_together(&hv.pci, lock, checks);
}
