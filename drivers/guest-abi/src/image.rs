//! The guest image loader: a static (ET_EXEC, non-PIE) x86_64 ELF64 file, its PT_LOAD
//! segments copied into guest RAM through a caller-supplied writer.
//!
//! Layouts are those of the System V gABI (ELF-64 Object File Format 1.5, "ELF Header" and
//! "Program Header") and the x86-64 psABI (EM_X86_64 = 62). The file comes from a multiboot
//! module, so every field is hostile: offsets and sizes are checked with checked arithmetic,
//! and the *whole* file is validated before the first byte is written, so a refused image
//! leaves guest RAM untouched.

use core::fmt;

use crate::layout::IMAGE_BASE_GPA;

const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EV_CURRENT: u8 = 1;
const ET_EXEC: u16 = 2;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const PF_X: u32 = 1;

/// More loadable segments than any sane static image has (ours has three or four).
pub const MAX_LOAD_SEGMENTS: usize = 16;

/// Where the image landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadedImage {
    /// The entry point's gpa (the guest's RIP at entry).
    pub entry: u64,
    /// The lowest gpa any segment occupies.
    pub lowest: u64,
    /// One past the highest gpa any segment occupies (bss included).
    pub highest: u64,
}

/// Why an image was refused. `E` is the writer's own error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError<E> {
    /// Shorter than the ELF header.
    Truncated {
        len: usize,
    },
    NotElf,
    /// Not ELFCLASS64 / ELFDATA2LSB / EV_CURRENT.
    WrongFormat {
        class: u8,
        data: u8,
        version: u8,
    },
    /// e_type is not ET_EXEC: a PIE or shared object needs relocation we do not do.
    NotStaticExecutable {
        e_type: u16,
    },
    WrongMachine {
        machine: u16,
    },
    /// e_phentsize is not 56, or the program header table is not inside the file.
    BadProgramHeaders {
        phoff: u64,
        phnum: u16,
        phentsize: u16,
    },
    /// PT_INTERP or PT_DYNAMIC: the image wants a dynamic loader.
    NotStatic {
        index: usize,
    },
    TooManySegments,
    NoLoadableSegment,
    /// The segment's file bytes are not inside the file, or filesz > memsz.
    BadSegment {
        index: usize,
    },
    /// The segment does not lie inside [IMAGE_BASE_GPA, memory_size).
    OutsideRam {
        index: usize,
        start: u64,
        end: u64,
    },
    /// Two segments share guest memory.
    Overlap {
        first: usize,
        second: usize,
    },
    /// The entry is not inside the file bytes of an executable loaded segment.
    BadEntry {
        entry: u64,
    },
    /// The writer refused bytes at `gpa`.
    Write {
        gpa: u64,
        error: E,
    },
}

impl<E: fmt::Display> fmt::Display for ImageError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::Truncated { len } => write!(f, "guest image of {len} bytes is truncated"),
            ImageError::NotElf => write!(f, "guest image is not an ELF file"),
            ImageError::WrongFormat { class, data, version } => write!(
                f,
                "guest image is not little-endian ELF64 (class {class}, data {data}, version {version})"
            ),
            ImageError::NotStaticExecutable { e_type } => {
                write!(f, "guest image type {e_type} is not a static executable")
            }
            ImageError::WrongMachine { machine } => {
                write!(f, "guest image machine {machine} is not x86_64")
            }
            ImageError::BadProgramHeaders { phoff, phnum, phentsize } => write!(
                f,
                "guest image program headers ({phnum} x {phentsize} at {phoff:#x}) out of bounds"
            ),
            ImageError::NotStatic { index } => {
                write!(f, "guest image segment {index} asks for a dynamic loader")
            }
            ImageError::TooManySegments => {
                write!(f, "guest image has more than {MAX_LOAD_SEGMENTS} loadable segments")
            }
            ImageError::NoLoadableSegment => write!(f, "guest image has no loadable segment"),
            ImageError::BadSegment { index } => {
                write!(f, "guest image segment {index} has bad file bounds")
            }
            ImageError::OutsideRam { index, start, end } => write!(
                f,
                "guest image segment {index} ({start:#x}..{end:#x}) is outside guest RAM"
            ),
            ImageError::Overlap { first, second } => {
                write!(f, "guest image segments {first} and {second} overlap")
            }
            ImageError::BadEntry { entry } => {
                write!(f, "guest image entry {entry:#x} is not in loaded code")
            }
            ImageError::Write { gpa, error } => {
                write!(f, "writing the guest image at {gpa:#x} failed: {error}")
            }
        }
    }
}

/// One validated PT_LOAD: file bytes `file`, placed at `start`, `memsz` bytes in memory.
#[derive(Clone, Copy, Default)]
struct Segment {
    index: usize,
    file_offset: usize,
    filesz: usize,
    start: u64,
    end: u64,
    executable: bool,
}

/// Copies bytes into guest RAM at a gpa, or says why it cannot.
pub type GuestWriter<'w, E> = dyn FnMut(u64, &[u8]) -> Result<(), E> + 'w;

/// Loads `elf` into guest RAM `[0, memory_size)` through `write(gpa, bytes)` (called with
/// the file bytes of each segment, then zeros for its bss) and returns where it landed.
pub fn load<E>(
    elf: &[u8],
    memory_size: u64,
    write: &mut GuestWriter<'_, E>,
) -> Result<LoadedImage, ImageError<E>> {
    let (entry, segments, count) = validate(elf, memory_size)?;
    let segments = &segments[..count];
    static ZEROS: [u8; 512] = [0; 512];
    for s in segments {
        let bytes = &elf[s.file_offset..s.file_offset + s.filesz];
        write(s.start, bytes).map_err(|error| ImageError::Write {
            gpa: s.start,
            error,
        })?;
        let mut gpa = s.start + s.filesz as u64;
        while gpa < s.end {
            let n = (s.end - gpa).min(ZEROS.len() as u64) as usize;
            write(gpa, &ZEROS[..n]).map_err(|error| ImageError::Write { gpa, error })?;
            gpa += n as u64;
        }
    }
    Ok(LoadedImage {
        entry,
        lowest: segments.iter().map(|s| s.start).min().unwrap_or(0),
        highest: segments.iter().map(|s| s.end).max().unwrap_or(0),
    })
}

type Validated = (u64, [Segment; MAX_LOAD_SEGMENTS], usize);

/// Every check, before anything is written.
fn validate<E>(elf: &[u8], memory_size: u64) -> Result<Validated, ImageError<E>> {
    let Some(ehdr) = elf.get(..EHDR_SIZE) else {
        return Err(ImageError::Truncated { len: elf.len() });
    };
    if ehdr[..4] != *b"\x7fELF" {
        return Err(ImageError::NotElf);
    }
    let (class, data, version) = (ehdr[4], ehdr[5], ehdr[6]);
    if (class, data, version) != (ELFCLASS64, ELFDATA2LSB, EV_CURRENT) {
        return Err(ImageError::WrongFormat {
            class,
            data,
            version,
        });
    }
    let e_type = u16_at(ehdr, 16);
    if e_type != ET_EXEC {
        return Err(ImageError::NotStaticExecutable { e_type });
    }
    let machine = u16_at(ehdr, 18);
    if machine != EM_X86_64 {
        return Err(ImageError::WrongMachine { machine });
    }
    let entry = u64_at(ehdr, 24);
    let phoff = u64_at(ehdr, 32);
    let phentsize = u16_at(ehdr, 54);
    let phnum = u16_at(ehdr, 56);
    let table = usize::try_from(phoff)
        .ok()
        .filter(|_| usize::from(phentsize) == PHDR_SIZE)
        .and_then(|start| Some((start, start.checked_add(usize::from(phnum) * PHDR_SIZE)?)))
        .and_then(|(start, end)| elf.get(start..end))
        .ok_or(ImageError::BadProgramHeaders {
            phoff,
            phnum,
            phentsize,
        })?;

    let mut segments = [Segment::default(); MAX_LOAD_SEGMENTS];
    let mut count = 0;
    for (index, phdr) in table.chunks_exact(PHDR_SIZE).enumerate() {
        match u32_at(phdr, 0) {
            PT_LOAD => {}
            PT_DYNAMIC | PT_INTERP => return Err(ImageError::NotStatic { index }),
            _ => continue,
        }
        let slot = segments.get_mut(count).ok_or(ImageError::TooManySegments)?;
        *slot = segment(elf, phdr, index, memory_size)?;
        count += 1;
    }
    let loaded = &segments[..count];
    if loaded.is_empty() {
        return Err(ImageError::NoLoadableSegment);
    }
    for (i, a) in loaded.iter().enumerate() {
        if let Some(b) = loaded[i + 1..]
            .iter()
            .find(|b| a.start < b.end && b.start < a.end)
        {
            return Err(ImageError::Overlap {
                first: a.index,
                second: b.index,
            });
        }
    }
    let entry_ok = loaded
        .iter()
        .any(|s| s.executable && entry >= s.start && entry < s.start + s.filesz as u64);
    if !entry_ok {
        return Err(ImageError::BadEntry { entry });
    }
    Ok((entry, segments, count))
}

/// One PT_LOAD header, checked against the file and guest RAM. Empty segments (memsz 0) are
/// accepted and occupy nothing.
fn segment<E>(
    elf: &[u8],
    phdr: &[u8],
    index: usize,
    memory_size: u64,
) -> Result<Segment, ImageError<E>> {
    let flags = u32_at(phdr, 4);
    let offset = u64_at(phdr, 8);
    let vaddr = u64_at(phdr, 16);
    let filesz = u64_at(phdr, 32);
    let memsz = u64_at(phdr, 40);
    let bad = || ImageError::BadSegment { index };
    let file_offset = usize::try_from(offset).map_err(|_| bad())?;
    let file_len = usize::try_from(filesz).map_err(|_| bad())?;
    let in_file = file_offset
        .checked_add(file_len)
        .is_some_and(|end| end <= elf.len());
    if !in_file || filesz > memsz {
        return Err(bad());
    }
    let end = vaddr.checked_add(memsz);
    let inside = end.is_some_and(|end| vaddr >= IMAGE_BASE_GPA && end <= memory_size);
    let Some(end) = end.filter(|_| inside) else {
        return Err(ImageError::OutsideRam {
            index,
            start: vaddr,
            end: vaddr.wrapping_add(memsz),
        });
    };
    Ok(Segment {
        index,
        file_offset,
        filesz: file_len,
        start: vaddr,
        end,
        executable: flags & PF_X != 0,
    })
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}
