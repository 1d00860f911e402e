//! DMAR, the DMA Remapping Reporting table (Intel VT-d spec rev 4.1, chapter 8 "BIOS
//! Considerations"): where the VT-d units are, which devices each translates, and which memory
//! devices must keep reaching (RMRRs).
//!
//! [`Dmar::parse`] checks the whole table once — header, every remapping structure, every
//! device scope — and returns a zero-copy view over the bytes. The iterators then re-read the
//! validated bytes and cannot fail. Scope paths are resolved later against live PCI config
//! space ([`DeviceScope::resolve`], [`Dmar::resolve_units`]), and [`covering_unit`] answers
//! "which DRHD translates this device".
extern crate alloc;

use alloc::vec::Vec;
use core::fmt;

use lazaret_types::Bdf;

use crate::reader::{ParseError, Reader};
use crate::sdt::SdtHeader;

mod coverage;
mod display;
mod flags;
mod scope;
mod structures;
mod walk;

pub use coverage::{covering_unit, ResolvedScope, ResolvedUnit, UnitScopes};
pub use flags::{AtsrFlags, DmarFlags, DrhdFlags, SatcFlags, ScopeFlags};
pub use scope::{DeviceScope, DeviceScopes, PathEntry, ScopeType};
pub use structures::{
    Andd, Atsr, Drhd, RemappingStructure, Rhsa, Rmrr, RmrrDefect, Satc, Sidp, UnknownStructure,
};

/// The table signature.
pub const DMAR_SIGNATURE: &[u8; 4] = b"DMAR";

/// A validated DMAR table.
#[derive(Clone, Copy, Debug)]
pub struct Dmar<'a> {
    pub header: SdtHeader,
    /// The raw field: the platform's DMA address width minus one (§8.1).
    pub host_address_width_field: u8,
    pub flags: DmarFlags,
    structures: Reader<'a>,
}

impl<'a> Dmar<'a> {
    /// Parses and validates `table`, the whole DMAR including its ACPI header.
    pub fn parse(table: &'a [u8]) -> Result<Dmar<'a>, ParseError> {
        let (header, mut body) = SdtHeader::parse_table(table, DMAR_SIGNATURE)?;
        let host_address_width_field = body.u8()?;
        let flags = DmarFlags(body.u8()?);
        body.skip(10)?;
        walk::validate(body, structures::parse_structure)?;
        Ok(Dmar {
            header,
            host_address_width_field,
            flags,
            structures: body,
        })
    }

    /// Maximum DMA physical address width in bits (§8.1: the field holds N-1).
    pub const fn host_address_width(&self) -> u32 {
        self.host_address_width_field as u32 + 1
    }

    pub const fn intr_remap(&self) -> bool {
        self.flags.contains(DmarFlags::INTR_REMAP)
    }

    pub const fn x2apic_opt_out(&self) -> bool {
        self.flags.contains(DmarFlags::X2APIC_OPT_OUT)
    }

    pub const fn dma_ctrl_platform_opt_in(&self) -> bool {
        self.flags.contains(DmarFlags::DMA_CTRL_PLATFORM_OPT_IN)
    }

    /// Every remapping structure, in table order.
    pub fn structures(&self) -> Structures<'a> {
        Structures {
            list: self.structures,
        }
    }

    /// The VT-d units, in table order.
    pub fn drhds(&self) -> impl Iterator<Item = Drhd<'a>> + Clone + 'a {
        self.structures().filter_map(|s| match s {
            RemappingStructure::Drhd(d) => Some(d),
            _ => None,
        })
    }

    pub fn rmrrs(&self) -> impl Iterator<Item = Rmrr<'a>> + Clone + 'a {
        self.structures().filter_map(|s| match s {
            RemappingStructure::Rmrr(r) => Some(r),
            _ => None,
        })
    }

    pub fn atsrs(&self) -> impl Iterator<Item = Atsr<'a>> + Clone + 'a {
        self.structures().filter_map(|s| match s {
            RemappingStructure::Atsr(a) => Some(a),
            _ => None,
        })
    }

    pub fn rhsas(&self) -> impl Iterator<Item = Rhsa> + Clone + 'a {
        self.structures().filter_map(|s| match s {
            RemappingStructure::Rhsa(r) => Some(r),
            _ => None,
        })
    }

    pub fn andds(&self) -> impl Iterator<Item = Andd<'a>> + Clone + 'a {
        self.structures().filter_map(|s| match s {
            RemappingStructure::Andd(a) => Some(a),
            _ => None,
        })
    }

    pub fn satcs(&self) -> impl Iterator<Item = Satc<'a>> + Clone + 'a {
        self.structures().filter_map(|s| match s {
            RemappingStructure::Satc(s) => Some(s),
            _ => None,
        })
    }

    pub fn sidps(&self) -> impl Iterator<Item = Sidp<'a>> + Clone + 'a {
        self.structures().filter_map(|s| match s {
            RemappingStructure::Sidp(s) => Some(s),
            _ => None,
        })
    }

    /// Every DRHD with its scopes resolved; `bridge_buses` reads a bridge's (secondary,
    /// subordinate) bus numbers. Feed the result to [`covering_unit`].
    pub fn resolve_units(
        &self,
        mut bridge_buses: impl FnMut(Bdf) -> Option<(u8, u8)>,
    ) -> Vec<ResolvedUnit<'a>> {
        self.drhds()
            .map(|drhd| ResolvedUnit::resolve(drhd, &mut bridge_buses))
            .collect()
    }

    /// Structures of types this parser does not know: worth a warning, not an error.
    pub fn unknown_structures(&self) -> impl Iterator<Item = UnknownStructure> + Clone + 'a {
        self.structures().filter_map(|s| match s {
            RemappingStructure::Unknown(u) => Some(u),
            _ => None,
        })
    }
}

/// Iterator over the remapping structures of a validated table.
#[derive(Clone, Copy, Debug)]
pub struct Structures<'a> {
    list: Reader<'a>,
}

impl<'a> Iterator for Structures<'a> {
    type Item = RemappingStructure<'a>;

    fn next(&mut self) -> Option<RemappingStructure<'a>> {
        walk::next_validated(&mut self.list, structures::parse_structure)
    }
}

impl fmt::Display for Dmar<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        display::table(f, self)
    }
}
