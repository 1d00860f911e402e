//! IVRS (AMD IOMMU spec rev 3.08, chapter 5). To be written.
