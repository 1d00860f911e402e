//! DMAR and IVRS, the ACPI tables through which firmware describes IOMMUs, SPCR, which
//! names the serial console, and the MADT's I/O APICs, which an IVRS must name.
//!
//! The `acpi` crate knows neither, and firmware gets both wrong often enough that nothing in a
//! table is trusted: every length and offset is checked against the bytes actually present
//! ([`reader::Reader`]), and a malformed table yields an error value, never a panic or an
//! out-of-bounds read. The hypervisor and the host pre-flight tool use exactly these parsers.
#![cfg_attr(not(test), no_std)]

pub mod dmar;
pub mod ivrs;
pub mod madt;
pub mod reader;
pub mod sdt;
pub mod spcr;

pub use dmar::{
    covering_unit, DeviceScope, Dmar, Drhd, RemappingStructure, ResolvedScope, ResolvedUnit, Rmrr,
    UnitScopes,
};
pub use ivrs::{Ivhd, Ivmd, Ivrs};
pub use reader::ParseError;
pub use sdt::SdtHeader;
pub use spcr::{Spcr, UartAddress};
pub mod defects;
