//! Everything Lazaret writes into a fresh guest's RAM before its first entry, in one call:
//! the image, the guest's page tables, the GDT, the BootInfo and the command line. Inputs
//! are checked before anything is written, so a refused guest leaves its RAM untouched
//! except by a writer error mid-way (then the domain is destroyed anyway).

use core::fmt;

use crate::image::{load, GuestWriter, ImageError, LoadedImage};
use crate::layout::{BOOT_INFO_GPA, GDT, GDT_GPA, GDT_LIMIT, STACK_TOP_GPA};
use crate::page_tables::{build_page_tables, PageTableError};
use crate::{BootInfo, BootInfoError};

/// The register values of the contract's entry state that depend on what was loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestEntry {
    pub rip: u64,
    pub rsp: u64,
    /// The BootInfo gpa.
    pub rdi: u64,
    pub cr3: u64,
    pub gdt_base: u64,
    pub gdt_limit: u16,
    pub image: LoadedImage,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupError<E> {
    /// The memory size or the command line breaks the contract.
    BootInfo(BootInfoError),
    Image(ImageError<E>),
    PageTables(PageTableError<E>),
    /// The writer refused bytes at `gpa`.
    Write {
        gpa: u64,
        error: E,
    },
}

impl<E: fmt::Display> fmt::Display for SetupError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::BootInfo(e) => write!(f, "{e}"),
            SetupError::Image(e) => write!(f, "{e}"),
            SetupError::PageTables(PageTableError::BadMemorySize(m)) => {
                write!(f, "guest memory size {m:#x} cannot be mapped")
            }
            SetupError::PageTables(PageTableError::Write { gpa, error })
            | SetupError::Write { gpa, error } => {
                write!(f, "writing guest memory at {gpa:#x} failed: {error}")
            }
        }
    }
}

/// Loads `elf` and writes the contract's low memory for a guest of `memory_size` bytes with
/// command line `cmdline`.
pub fn prepare<E>(
    elf: &[u8],
    memory_size: u64,
    cmdline: &str,
    write: &mut GuestWriter<'_, E>,
) -> Result<GuestEntry, SetupError<E>> {
    let info = BootInfo::new(memory_size, cmdline.len() as u64);
    info.check().map_err(SetupError::BootInfo)?;
    let image = load(elf, memory_size, write).map_err(SetupError::Image)?;
    let tables = build_page_tables(memory_size, write).map_err(SetupError::PageTables)?;
    let mut gdt = [0u8; GDT.len() * 8];
    for (bytes, descriptor) in gdt.chunks_exact_mut(8).zip(GDT) {
        bytes.copy_from_slice(&descriptor.to_le_bytes());
    }
    let mut put = |gpa: u64, bytes: &[u8]| {
        write(gpa, bytes).map_err(|error| SetupError::Write { gpa, error })
    };
    put(GDT_GPA, &gdt)?;
    put(BOOT_INFO_GPA, &info.encode())?;
    put(info.cmdline_gpa, cmdline.as_bytes())?;
    Ok(GuestEntry {
        rip: image.entry,
        rsp: STACK_TOP_GPA,
        rdi: BOOT_INFO_GPA,
        cr3: tables.cr3,
        gdt_base: GDT_GPA,
        gdt_limit: GDT_LIMIT,
        image,
    })
}
