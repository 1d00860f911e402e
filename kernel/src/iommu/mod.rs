//! The IOMMU vendors behind [`crate::passthrough::iommu::Vendor`] — VT-d and AMD-Vi, each
//! with its own bring-up — and their discovery from the firmware's DMAR / IVRS tables.
pub mod amd;
pub mod discover;
pub mod vtd;
