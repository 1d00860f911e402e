//! Checks that module 0 is a well-formed 64-bit ELF before hermit-entry parses it.
//!
//! `hermit_entry::elf::KernelObject::parse` indexes the file with the offsets the file itself
//! declares and panics when they are out of range; a truncated or wrong module must instead
//! give the user a clear message, so every table it will touch is bounds-checked here first.

const EHDR_LEN: usize = 64;
const PHDR_LEN: usize = 56;
const SHDR_LEN: usize = 64;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_NOTE: u32 = 4;

/// Why module 0 cannot be the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    TooShort,
    NotElf,
    Not64BitLittleEndianX86,
    TableOutOfBounds(&'static str),
    SegmentOutOfBounds { index: usize },
    NoLoadableSegment,
    NoNoteSegment,
}

impl core::fmt::Display for ElfError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ElfError::TooShort => f.write_str("shorter than an ELF header"),
            ElfError::NotElf => f.write_str("not an ELF file (bad magic)"),
            ElfError::Not64BitLittleEndianX86 => {
                f.write_str("not a 64-bit little-endian x86_64 ELF")
            }
            ElfError::TableOutOfBounds(t) => write!(f, "its {t} table lies outside the file"),
            ElfError::SegmentOutOfBounds { index } => {
                write!(f, "program header {index} points outside the file")
            }
            ElfError::NoLoadableSegment => f.write_str("no loadable segment"),
            ElfError::NoNoteSegment => {
                f.write_str("no note segment (the kernel must carry hermit's entry-version note)")
            }
        }
    }
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], off: usize) -> Option<usize> {
    usize::try_from(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?)).ok()
}

/// `true` when `[off, off + count * entry)` lies inside `len`.
fn table_fits(off: usize, count: usize, entry: usize, len: usize) -> bool {
    count
        .checked_mul(entry)
        .and_then(|n| n.checked_add(off))
        .is_some_and(|end| end <= len)
}

pub fn check(elf: &[u8]) -> Result<(), ElfError> {
    if elf.len() < EHDR_LEN {
        return Err(ElfError::TooShort);
    }
    if elf[..4] != *b"\x7fELF" {
        return Err(ElfError::NotElf);
    }
    // EI_CLASS 2 (64-bit), EI_DATA 1 (little endian), e_machine 62 (x86_64).
    if elf[4] != 2 || elf[5] != 1 || u16_at(elf, 18) != Some(62) {
        return Err(ElfError::Not64BitLittleEndianX86);
    }
    let bad = ElfError::TableOutOfBounds;
    let phoff = u64_at(elf, 32).ok_or(bad("program header"))?;
    let shoff = u64_at(elf, 40).ok_or(bad("section header"))?;
    let phnum = u16_at(elf, 56).ok_or(bad("program header"))? as usize;
    let shnum = u16_at(elf, 60).ok_or(bad("section header"))? as usize;
    if !table_fits(phoff, phnum, PHDR_LEN, elf.len()) {
        return Err(bad("program header"));
    }
    if !table_fits(shoff, shnum, SHDR_LEN, elf.len()) {
        return Err(bad("section header"));
    }
    let (mut loads, mut notes) = (0, 0);
    for index in 0..phnum {
        let ph = phoff + index * PHDR_LEN;
        let kind = u32_at(elf, ph).ok_or(ElfError::SegmentOutOfBounds { index })?;
        let offset = u64_at(elf, ph + 8).ok_or(ElfError::SegmentOutOfBounds { index })?;
        let filesz = u64_at(elf, ph + 32).ok_or(ElfError::SegmentOutOfBounds { index })?;
        if matches!(kind, PT_LOAD | PT_DYNAMIC | PT_NOTE)
            && !table_fits(offset, filesz, 1, elf.len())
        {
            return Err(ElfError::SegmentOutOfBounds { index });
        }
        loads += usize::from(kind == PT_LOAD);
        notes += usize::from(kind == PT_NOTE);
    }
    if loads == 0 {
        return Err(ElfError::NoLoadableSegment);
    }
    if notes == 0 {
        return Err(ElfError::NoNoteSegment);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 with one PT_LOAD and one PT_NOTE covering the first 64 bytes.
    fn minimal() -> Vec<u8> {
        let mut e = vec![0u8; EHDR_LEN + 2 * PHDR_LEN];
        e[..4].copy_from_slice(b"\x7fELF");
        e[4] = 2;
        e[5] = 1;
        e[18..20].copy_from_slice(&62u16.to_le_bytes());
        e[32..40].copy_from_slice(&(EHDR_LEN as u64).to_le_bytes());
        e[56..58].copy_from_slice(&2u16.to_le_bytes());
        for (i, kind) in [PT_LOAD, PT_NOTE].into_iter().enumerate() {
            let ph = EHDR_LEN + i * PHDR_LEN;
            e[ph..ph + 4].copy_from_slice(&kind.to_le_bytes());
            e[ph + 32..ph + 40].copy_from_slice(&64u64.to_le_bytes());
        }
        e
    }

    #[test]
    fn accepts_a_well_formed_file() {
        assert_eq!(check(&minimal()), Ok(()));
    }

    #[test]
    fn rejects_each_kind_of_damage() {
        assert_eq!(check(&minimal()[..10]), Err(ElfError::TooShort));
        let mut e = minimal();
        e[0] = 0;
        assert_eq!(check(&e), Err(ElfError::NotElf));
        let mut e = minimal();
        e[4] = 1;
        assert_eq!(check(&e), Err(ElfError::Not64BitLittleEndianX86));
        let mut e = minimal();
        e[56..58].copy_from_slice(&100u16.to_le_bytes());
        assert_eq!(check(&e), Err(ElfError::TableOutOfBounds("program header")));
        let mut e = minimal();
        e[EHDR_LEN + 32..EHDR_LEN + 40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(check(&e), Err(ElfError::SegmentOutOfBounds { index: 0 }));
        let mut e = minimal();
        e[EHDR_LEN + PHDR_LEN..EHDR_LEN + PHDR_LEN + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
        assert_eq!(check(&e), Err(ElfError::NoNoteSegment));
    }

    #[test]
    fn never_panics_on_truncations() {
        let e = minimal();
        for n in 0..e.len() {
            assert!(check(&e[..n]).is_err());
        }
    }
}
