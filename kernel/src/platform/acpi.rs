//! ACPI through the `acpi` crate (5.2, no allocator): the RSDP, MADT for the CPUs and MCFG
//! for ECAM; plus raw table bytes by signature, which DMAR, IVRS and SPCR (unknown to the
//! crate) are parsed from by `acpi-iommu`. Tables come from firmware: every length is
//! checked and a malformed table is reported and skipped, never trusted.
//!
//! The RSDP comes from `acpi_rsdp=` on the command line, which the loader puts there from
//! the multiboot2 ACPI tag (GRUB, BIOS and UEFI) and a user may override. Only without it
//! (multiboot1: QEMU `-kernel`, BIOS iPXE) is the BIOS area scanned; under UEFI there is no
//! RSDP there (OVMF puts none).
use alloc::vec::Vec;
use core::ptr::NonNull;

use acpi::madt::{Madt, MadtEntry};
use acpi::mcfg::Mcfg;
use acpi::rsdp::Rsdp;
use acpi::{AcpiHandler, AcpiTables, PhysicalMapping};
use acpi_iommu::SdtHeader;
use core::fmt;

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

/// Where the RSDP was found, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RsdpSource {
    /// `acpi_rsdp=` (the loader's multiboot2 ACPI tag, or the user).
    CommandLine,
    /// The legacy BIOS-area scan (multiboot1 boots on BIOS machines).
    BiosScan,
}

impl fmt::Display for RsdpSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RsdpSource::CommandLine => "acpi_rsdp= (from the boot loader or the user)",
            RsdpSource::BiosScan => "BIOS-area scan",
        })
    }
}

/// What the kernel learnt from ACPI.
pub struct Platform {
    pub rsdp: u64,
    pub rsdp_source: RsdpSource,
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
    /// `acpi_rsdp=` names memory that is unmapped or holds no valid RSDP.
    BadGivenRsdp(u64, &'static str),
    Tables(acpi::AcpiError),
}

impl fmt::Display for AcpiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcpiError::NoRsdp => f.write_str(
                "no RSDP: the boot loader gave none (boot through GRUB's multiboot2 on UEFI) and the BIOS areas (EBDA, 0xE0000-0xFFFFF) hold none",
            ),
            AcpiError::BadGivenRsdp(a, why) => write!(f, "acpi_rsdp={a:#x}: {why}"),
            AcpiError::Tables(e) => write!(f, "RSDT/XSDT unusable: {e:?}"),
        }
    }
}

/// Upper bound on any table we read: bigger is taken as a corrupt length.
const MAX_TABLE: usize = 1 << 20;

/// The RSDP at `given` (checked mapped and valid before the crate reads it), else the BIOS
/// scan.
fn find_rsdp(
    given: Option<u64>,
) -> Result<(PhysicalMapping<IdentityMapped, Rsdp>, RsdpSource), AcpiError> {
    let Some(addr) = given else {
        // SAFETY: the BIOS areas the scan reads are identity-mapped (arch::paging maps the
        // first MiB), and a found RSDP is checksum-validated by the crate.
        let rsdp =
            unsafe { Rsdp::search_for_on_bios(IdentityMapped) }.map_err(|_| AcpiError::NoRsdp)?;
        return Ok((rsdp, RsdpSource::BiosScan));
    };
    let bad = |why| AcpiError::BadGivenRsdp(addr, why);
    // ACPI 6.5 §5.2.5.3: 20 bytes in revision 0, `length` (36) from revision 2; the crate's
    // validation reads `length` bytes, so bound it first.
    let v1 = firmware_bytes(addr, 20).ok_or(bad("unmapped"))?;
    if v1[15] >= 2 {
        let len = firmware_bytes(addr, 24)
            .map(|b| u32::from_le_bytes([b[20], b[21], b[22], b[23]]))
            .ok_or(bad("unmapped"))?;
        if !(36..=4096).contains(&len) || firmware_bytes(addr, len as usize).is_none() {
            return Err(bad("implausible RSDP length"));
        }
    }
    // SAFETY: identity-mapped, and the bytes validate() reads were checked mapped above.
    let rsdp = unsafe { IdentityMapped.map_physical_region::<Rsdp>(addr as usize, 36) };
    rsdp.validate()
        .map_err(|_| bad("no valid RSDP there (signature or checksum)"))?;
    Ok((rsdp, RsdpSource::CommandLine))
}

pub fn discover(given_rsdp: Option<u64>) -> Result<Platform, AcpiError> {
    let (rsdp, rsdp_source) = find_rsdp(given_rsdp)?;
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
        rsdp_source,
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
