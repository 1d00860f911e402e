//! The IOMMU implementations behind [`crate::passthrough::iommu::Iommu`], and the domain-ID
//! allocator they share.
pub mod amd;
pub mod dids;
pub mod discover;
pub mod vtd;
