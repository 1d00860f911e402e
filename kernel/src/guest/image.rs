//! A guest's memory made ready to run, per the guest contract (`lazaret_guest_abi::layout`):
//! the BootInfo record, the command line, the GDT, the guest's own page tables, the ELF
//! image — and the long-mode entry state the vCPU starts from. Everything is checked before
//! it is written; nothing outside the guest's own RAM is touched.
use core::fmt;

use lazaret_guest_abi::layout::{
    BOOT_INFO_GPA, CMDLINE_GPA, GDT, GDT_GPA, GDT_LIMIT, MAX_CMDLINE, MMIO_WINDOW_GPA,
    MMIO_WINDOW_SIZE, PAGE_TABLES_GPA, PAGE_TABLES_SIZE, STACK_TOP_GPA,
};
use lazaret_guest_abi::{BootInfo, ImageError};
use lazaret_paging::PagingError;
use lazaret_types::PhysMem;

use super::memory_io::{self, OutsideGuest};
use crate::domain::{build_guest_tables, GuestLayout, GuestMemory};
use crate::vcpu::EntryState;

/// The contract's places, for the page-table builder.
pub const LAYOUT: GuestLayout = GuestLayout {
    page_tables_gpa: PAGE_TABLES_GPA,
    page_tables_len: PAGE_TABLES_SIZE,
    mmio_window_gpa: MMIO_WINDOW_GPA,
    mmio_window_size: MMIO_WINDOW_SIZE,
};

#[derive(Debug)]
pub enum PrepareError {
    CommandLineTooLong(usize),
    PageTables(PagingError),
    Image(ImageError<OutsideGuest>),
    Write(OutsideGuest),
}

impl fmt::Display for PrepareError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrepareError::CommandLineTooLong(n) => {
                write!(
                    f,
                    "the guest's command line has {n} bytes; at most {MAX_CMDLINE}"
                )
            }
            PrepareError::PageTables(e) => write!(f, "the guest's page tables: {e:?}"),
            PrepareError::Image(e) => write!(f, "the guest image: {e}"),
            PrepareError::Write(e) => write!(f, "{e}"),
        }
    }
}

/// A prepared guest: where its vCPU starts and where its image ends (its DMA buffers are
/// the two pages after it: `lazaret_guest::Scratch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prepared {
    pub entry: EntryState,
    pub image_end: u64,
}

/// Fills the guest's memory and returns where its vCPU starts. The memory is the guest's
/// alone (freshly allocated, zeroed frames): nothing else runs in it yet.
pub fn prepare(
    mem: &(impl PhysMem + ?Sized),
    memory: &GuestMemory,
    elf: &[u8],
    cmdline: &str,
) -> Result<Prepared, PrepareError> {
    if cmdline.len() as u64 > MAX_CMDLINE {
        return Err(PrepareError::CommandLineTooLong(cmdline.len()));
    }
    // The image first: it is the hostile part, and it is checked whole before a byte moves.
    let loaded = lazaret_guest_abi::load(elf, memory.size(), &mut |gpa, bytes| {
        memory_io::write(mem, memory, gpa, bytes)
    })
    .map_err(PrepareError::Image)?;
    let put =
        |gpa, bytes: &[u8]| memory_io::write(mem, memory, gpa, bytes).map_err(PrepareError::Write);
    put(
        BOOT_INFO_GPA,
        &BootInfo::new(memory.size(), cmdline.len() as u64).encode(),
    )?;
    put(CMDLINE_GPA, cmdline.as_bytes())?;
    let mut gdt = [0u8; 24];
    for (slot, entry) in gdt.chunks_exact_mut(8).zip(GDT) {
        slot.copy_from_slice(&entry.to_le_bytes());
    }
    put(GDT_GPA, &gdt)?;
    let tables = build_guest_tables(mem, memory, &LAYOUT).map_err(PrepareError::PageTables)?;
    let entry = EntryState {
        rip: loaded.entry,
        rsp: STACK_TOP_GPA,
        rdi: BOOT_INFO_GPA,
        cr3: tables.root().0,
        gdt_base: GDT_GPA,
        gdt_limit: GDT_LIMIT,
    };
    Ok(Prepared {
        entry,
        image_end: loaded.highest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lazaret_guest_abi::layout::IMAGE_BASE_GPA;
    use lazaret_types::sim::{SimFrameAllocator, SimMemory};

    /// A minimal static ELF64: one PT_LOAD of `code` at IMAGE_BASE_GPA, entry at its start.
    fn elf(code: &[u8]) -> Vec<u8> {
        let mut e = vec![0u8; 64 + 56];
        e[..4].copy_from_slice(b"\x7fELF");
        e[4] = 2; // ELFCLASS64
        e[5] = 1; // little-endian
        e[6] = 1; // EV_CURRENT
        e[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        e[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        e[20..24].copy_from_slice(&1u32.to_le_bytes());
        e[24..32].copy_from_slice(&IMAGE_BASE_GPA.to_le_bytes()); // e_entry
        e[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        e[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        e[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        e[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        let ph = 64;
        e[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        e[ph + 4..ph + 8].copy_from_slice(&5u32.to_le_bytes()); // R+X
        e[ph + 8..ph + 16].copy_from_slice(&120u64.to_le_bytes()); // p_offset
        e[ph + 16..ph + 24].copy_from_slice(&IMAGE_BASE_GPA.to_le_bytes()); // p_vaddr
        e[ph + 24..ph + 32].copy_from_slice(&IMAGE_BASE_GPA.to_le_bytes()); // p_paddr
        e[ph + 32..ph + 40].copy_from_slice(&(code.len() as u64).to_le_bytes());
        e[ph + 40..ph + 48].copy_from_slice(&(code.len() as u64 + 0x100).to_le_bytes());
        e[ph + 48..ph + 56].copy_from_slice(&0x1000u64.to_le_bytes());
        e.extend_from_slice(code);
        e
    }

    fn guest(mem: &SimMemory, pages: usize) -> GuestMemory {
        let mut alloc = SimFrameAllocator::new(mem, lazaret_types::PhysAddr(0x100_0000), 4096);
        GuestMemory::allocate(&mut alloc, pages).unwrap()
    }

    fn read(mem: &SimMemory, memory: &GuestMemory, gpa: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0; len];
        memory_io::read(mem, memory, gpa, &mut b).unwrap();
        b
    }

    #[test]
    fn the_guest_starts_where_the_contract_says_with_everything_in_place() {
        let mem = SimMemory::new();
        let memory = guest(&mem, 2048);
        let p = prepare(&mem, &memory, &elf(&[0xf4, 0x90]), "variant=good").unwrap();
        assert_eq!(p.image_end, IMAGE_BASE_GPA + 2 + 0x100);
        let entry = p.entry;
        assert_eq!(entry.rip, IMAGE_BASE_GPA);
        assert_eq!(
            (entry.rsp, entry.rdi, entry.cr3),
            (STACK_TOP_GPA, BOOT_INFO_GPA, PAGE_TABLES_GPA)
        );
        assert_eq!((entry.gdt_base, entry.gdt_limit), (GDT_GPA, 23));
        assert_eq!(read(&mem, &memory, IMAGE_BASE_GPA, 2), [0xf4, 0x90]);
        assert_eq!(
            read(&mem, &memory, IMAGE_BASE_GPA + 2, 0x100),
            vec![0; 0x100],
            "bss zeroed"
        );
        assert_eq!(read(&mem, &memory, CMDLINE_GPA, 12), b"variant=good");
        let info = BootInfo::decode(&read(&mem, &memory, BOOT_INFO_GPA, 56)).unwrap();
        assert_eq!(info.memory_size, 8 << 20);
        assert_eq!(info.cmdline_len, 12);
        // The GDT's code descriptor is a 64-bit one (L bit 53, P bit 47, type execute/read).
        let code = u64::from_le_bytes(read(&mem, &memory, GDT_GPA + 8, 8).try_into().unwrap());
        assert!(code & (1 << 53) != 0 && code & (1 << 47) != 0 && code & (1 << 43) != 0);
        // The guest's own CR3 points at a present PML4 entry inside its memory.
        let pml4 = u64::from_le_bytes(read(&mem, &memory, PAGE_TABLES_GPA, 8).try_into().unwrap());
        assert_eq!(pml4 & 1, 1);
        assert!((pml4 & 0x000f_ffff_ffff_f000) < memory.size());
    }

    #[test]
    fn a_hostile_image_or_command_line_changes_nothing() {
        let mem = SimMemory::new();
        let memory = guest(&mem, 2048);
        let mut bad = elf(&[0xf4]);
        bad[18] = 3; // EM_386
        assert!(matches!(
            prepare(&mem, &memory, &bad, ""),
            Err(PrepareError::Image(_))
        ));
        assert!(matches!(
            prepare(&mem, &memory, &elf(&[0xf4]), &"x".repeat(5000)),
            Err(PrepareError::CommandLineTooLong(5000))
        ));
        let all = read(&mem, &memory, 0, memory.size() as usize);
        assert!(all.iter().all(|b| *b == 0), "nothing was written");
    }

    #[test]
    fn an_image_past_the_guests_memory_is_refused() {
        let mem = SimMemory::new();
        let memory = guest(&mem, 512); // 2 MiB: the image base is its end
        assert!(matches!(
            prepare(&mem, &memory, &elf(&[0xf4]), ""),
            Err(PrepareError::Image(_))
        ));
    }
}
