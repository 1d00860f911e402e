//! Platform discovery: ACPI (CPUs, ECAM, raw IOMMU tables) and PCI enumeration.
pub mod acpi;
pub mod pci;
pub mod quarantine;
