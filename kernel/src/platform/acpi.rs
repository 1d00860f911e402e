//! ACPI through the `acpi` crate (5.2, no allocator): the RSDP (BIOS scan), MADT for the
//! CPUs and MCFG for ECAM; plus raw table bytes by signature, which DMAR and IVRS (unknown to
//! the crate) are parsed from by `acpi-iommu`. Tables come from firmware: every length is
//! checked and a malformed table is reported and skipped, never trusted.
use alloc::vec::Vec;
use core::ptr::NonNull;

use acpi::madt::{Madt, MadtEntry};
use acpi::mcfg::Mcfg;
use acpi::rsdp::Rsdp;
use acpi::{AcpiHandler, AcpiTables, PhysicalMapping};
use acpi_iommu::SdtHeader;

/// Physical memory is identity-mapped (arch::paging), so mapping a region is naming it.
#[derive(Clone, Copy, Debug)]
pub struct IdentityMapped;

impl AcpiHandler for IdentityMapped {
    unsafe fn map_physical_region<T>(
        &self,
        physical_address: usize,
        size: usize,
    ) -> PhysicalMapping<Self, T> {
        let ptr = NonNull::new(physical_address as *mut T).unwrap_or(NonNull::dangling());
        // SAFETY: identity mapping: the virtual address is the physical one and stays valid.
        unsafe { PhysicalMapping::new(physical_address, ptr, size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// One ECAM window (PCI Firmware Spec 3.2, MCFG).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EcamWindow {
    pub base: u64,
    pub segment: u16,
    pub bus_start: u8,
    pub bus_end: u8,
}

/// What the kernel learnt from ACPI.
pub struct Platform {
    pub rsdp: u64,
    pub revision: u8,
    pub oem_id: [u8; 6],
    pub cpus: Vec<u32>,
    pub ecam: Vec<EcamWindow>,
    /// (signature, physical address, length) of every valid table in the RSDT/XSDT.
    pub tables: Vec<([u8; 4], u64, usize)>,
}

#[derive(Debug)]
pub enum AcpiError {
    NoRsdp,
    Tables(acpi::AcpiError),
}

impl core::fmt::Display for AcpiError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AcpiError::NoRsdp => {
                f.write_str("no RSDP found in the BIOS areas (EBDA, 0xE0000-0xFFFFF)")
            }
            AcpiError::Tables(e) => write!(f, "RSDT/XSDT unusable: {e:?}"),
        }
    }
}

/// Upper bound on any table we read: bigger is taken as a corrupt length.
const MAX_TABLE: usize = 1 << 20;

pub fn discover() -> Result<Platform, AcpiError> {
    // SAFETY: the BIOS areas the scan reads are identity-mapped (arch::paging maps the
    // first MiB), and a found RSDP is checksum-validated by the crate.
    let rsdp =
        unsafe { Rsdp::search_for_on_bios(IdentityMapped) }.map_err(|_| AcpiError::NoRsdp)?;
    let rsdp_addr = rsdp.physical_start() as u64;
    let revision = rsdp.revision();
    // The XSDT field exists only from ACPI 2.0 (revision 2) on.
    let xsdt = if revision >= 2 {
        rsdp.xsdt_address()
    } else {
        0
    };
    let rsdt = rsdp.rsdt_address();
    let mut oem_id = [0u8; 6];
    oem_id.copy_from_slice(&rsdp.oem_id().as_bytes()[..6.min(rsdp.oem_id().len())]);
    // SAFETY: the mapping is a validated RSDP.
    let tables = unsafe { AcpiTables::from_validated_rsdp(IdentityMapped, rsdp) }
        .map_err(AcpiError::Tables)?;

    let mut cpus = Vec::new();
    match tables.find_table::<Madt>() {
        Ok(madt) => {
            for entry in madt.get().entries() {
                match entry {
                    MadtEntry::LocalApic(e) if e.flags & 1 != 0 => cpus.push(e.apic_id as u32),
                    MadtEntry::LocalX2Apic(e) if e.flags & 1 != 0 => cpus.push(e.x2apic_id),
                    _ => {}
                }
            }
        }
        Err(e) => log::warn!("acpi: no usable MADT ({e:?}); assuming one CPU"),
    }
    let mut ecam = Vec::new();
    match tables.find_table::<Mcfg>() {
        Ok(mcfg) => ecam.extend(mcfg.entries().iter().map(|e| EcamWindow {
            base: e.base_address,
            segment: e.pci_segment_group,
            bus_start: e.bus_number_start,
            bus_end: e.bus_number_end,
        })),
        Err(e) => log::warn!("acpi: no usable MCFG ({e:?}); PCI falls back to port 0xCF8"),
    }
    let (root, entry_size) = if xsdt != 0 {
        (xsdt, 8)
    } else {
        (rsdt as u64, 4)
    };
    Ok(Platform {
        rsdp: rsdp_addr,
        revision,
        oem_id,
        cpus,
        ecam,
        tables: list_tables(root, entry_size),
    })
}

/// Reads `len` bytes of firmware memory at `addr`.
fn firmware_bytes(addr: u64, len: usize) -> Option<&'static [u8]> {
    if addr == 0
        || len > MAX_TABLE
        || !crate::arch::paging::is_mapped(addr)
        || !crate::arch::paging::is_mapped(addr + len as u64 - 1)
    {
        return None;
    }
    // SAFETY: both ends are mapped and ACPI tables are contiguous firmware memory that nothing
    // writes after boot; the kernel never hands these ranges out.
    Some(unsafe { core::slice::from_raw_parts(addr as *const u8, len) })
}

/// A whole table at `addr`, header length and checksum checked.
fn table_at(addr: u64) -> Option<([u8; 4], &'static [u8])> {
    let header = firmware_bytes(addr, 36)?;
    let signature: [u8; 4] = header[..4].try_into().ok()?;
    let len = u32::from_le_bytes(header[4..8].try_into().ok()?) as usize;
    let bytes = firmware_bytes(addr, len.max(36))?;
    match SdtHeader::parse_table(bytes, &signature) {
        Ok(_) => Some((signature, bytes)),
        Err(e) => {
            log::warn!(
                "acpi: table {:?} at {addr:#x} rejected: {e}",
                acpi_iommu::reader::Ascii(&signature)
            );
            None
        }
    }
}

fn list_tables(root: u64, entry_size: usize) -> Vec<([u8; 4], u64, usize)> {
    let mut out = Vec::new();
    let Some((_, bytes)) = table_at(root) else {
        log::warn!("acpi: root table at {root:#x} unreadable");
        return out;
    };
    for chunk in bytes[36..].chunks_exact(entry_size) {
        let addr = chunk.iter().rev().fold(0u64, |a, b| (a << 8) | *b as u64);
        if let Some((sig, t)) = table_at(addr) {
            out.push((sig, addr, t.len()));
        }
    }
    out
}

impl Platform {
    /// The raw bytes of the first valid table named `signature` (e.g. `b"DMAR"`).
    pub fn raw_table(&self, signature: &[u8; 4]) -> Option<&'static [u8]> {
        let (_, addr, len) = self.tables.iter().find(|(s, _, _)| s == signature)?;
        firmware_bytes(*addr, *len)
    }
}
