//! The IOMMU vendors behind [`crate::passthrough::iommu::Vendor`] — VT-d and AMD-Vi, each
//! with its own bring-up — and their discovery from the firmware's DMAR / IVRS tables.
pub mod amd;
pub mod discover;
pub mod vtd;

use lazaret_io_pagetable::QuarantineError;

use crate::passthrough::iommu::{IommuError, ReservedRange};

/// The core's error for a quarantine build the shared table code refused (both vendors build
/// with `lazaret_io_pagetable`): out of frames, or a reserved range it cannot map — reported
/// as the device's first range.
fn quarantine_error(e: QuarantineError, reserved: &[ReservedRange]) -> IommuError {
    match e {
        QuarantineError::OutOfFrames => IommuError::OutOfMemory,
        QuarantineError::BadRange { .. } => IommuError::BadReservedRange(
            reserved
                .first()
                .copied()
                .unwrap_or(ReservedRange::read_write(0, 0)),
        ),
    }
}
