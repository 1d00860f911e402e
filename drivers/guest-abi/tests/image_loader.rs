//! The guest image loader against hand-built ELF files (fields placed from the gABI tables,
//! not from the loader's offsets) and against seeded random damage.
use lazaret_guest_abi::image::{load, ImageError, LoadedImage, MAX_LOAD_SEGMENTS};
use lazaret_guest_abi::layout::{DEFAULT_MEMORY_SIZE, IMAGE_BASE_GPA};
use proptest::prelude::*;

/// One program header: (p_type, p_flags, p_vaddr, file bytes, p_memsz).
#[derive(Clone)]
struct Seg {
    kind: u32,
    flags: u32,
    vaddr: u64,
    data: Vec<u8>,
    memsz: u64,
}

fn load_seg(flags: u32, vaddr: u64, data: &[u8], memsz: u64) -> Seg {
    Seg {
        kind: 1,
        flags,
        vaddr,
        data: data.to_vec(),
        memsz,
    }
}

/// ELF64 header (gABI "ELF Header": e_ident, e_type@16, e_machine@18, e_version@20,
/// e_entry@24, e_phoff@32, e_ehsize@52, e_phentsize@54, e_phnum@56), the program header
/// table right behind it, then each segment's bytes.
fn elf(entry: u64, segs: &[Seg]) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // ELFCLASS64
    f[5] = 1; // ELFDATA2LSB
    f[6] = 1; // EV_CURRENT
    f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[24..32].copy_from_slice(&entry.to_le_bytes());
    f[32..40].copy_from_slice(&64u64.to_le_bytes());
    f[52..54].copy_from_slice(&64u16.to_le_bytes());
    f[54..56].copy_from_slice(&56u16.to_le_bytes());
    f[56..58].copy_from_slice(&(segs.len() as u16).to_le_bytes());
    let mut data_at = 64 + 56 * segs.len();
    let mut body: Vec<u8> = Vec::new();
    for s in segs {
        let mut p = [0u8; 56];
        p[0..4].copy_from_slice(&s.kind.to_le_bytes());
        p[4..8].copy_from_slice(&s.flags.to_le_bytes());
        p[8..16].copy_from_slice(&(data_at as u64).to_le_bytes());
        p[16..24].copy_from_slice(&s.vaddr.to_le_bytes());
        p[24..32].copy_from_slice(&s.vaddr.to_le_bytes());
        p[32..40].copy_from_slice(&(s.data.len() as u64).to_le_bytes());
        p[40..48].copy_from_slice(&s.memsz.to_le_bytes());
        p[48..56].copy_from_slice(&4096u64.to_le_bytes());
        f.extend(p);
        body.extend(&s.data);
        data_at += s.data.len();
    }
    f.extend(body);
    f
}

/// A typical image: code (R-X), rodata (R--), data+bss (RW-).
fn typical() -> Vec<u8> {
    elf(
        IMAGE_BASE_GPA + 0x10,
        &[
            load_seg(5, IMAGE_BASE_GPA, &[0x90; 0x40], 0x40),
            load_seg(4, IMAGE_BASE_GPA + 0x1000, b"rodata", 6),
            load_seg(6, IMAGE_BASE_GPA + 0x2000, &[1, 2, 3, 4], 0x3000),
        ],
    )
}

/// Guest RAM as a sparse record of writes.
#[derive(Default)]
struct Ram {
    bytes: std::collections::BTreeMap<u64, u8>,
    writes: usize,
}

impl Ram {
    fn writer(&mut self) -> impl FnMut(u64, &[u8]) -> Result<(), &'static str> + '_ {
        move |gpa, data| {
            self.writes += 1;
            for (i, b) in data.iter().enumerate() {
                self.bytes.insert(gpa + i as u64, *b);
            }
            Ok(())
        }
    }
}

fn run(file: &[u8], memory: u64) -> (Result<LoadedImage, ImageError<&'static str>>, Ram) {
    let mut ram = Ram::default();
    let r = load(file, memory, &mut ram.writer());
    (r, ram)
}

#[test]
fn loads_segments_and_zero_fills_bss() {
    let (r, ram) = run(&typical(), DEFAULT_MEMORY_SIZE);
    assert_eq!(
        r,
        Ok(LoadedImage {
            entry: IMAGE_BASE_GPA + 0x10,
            lowest: IMAGE_BASE_GPA,
            highest: IMAGE_BASE_GPA + 0x5000,
        })
    );
    assert_eq!(ram.bytes[&IMAGE_BASE_GPA], 0x90);
    assert_eq!(ram.bytes[&(IMAGE_BASE_GPA + 0x1005)], b'a');
    assert_eq!(ram.bytes[&(IMAGE_BASE_GPA + 0x2003)], 4);
    let bss: Vec<u8> = (IMAGE_BASE_GPA + 0x2004..IMAGE_BASE_GPA + 0x5000)
        .map(|a| *ram.bytes.get(&a).expect("every bss byte written"))
        .collect();
    assert!(bss.iter().all(|b| *b == 0));
    assert_eq!(
        ram.bytes.len(),
        0x40 + 6 + 0x3000,
        "nothing written outside the segments"
    );
}

#[test]
fn refuses_segments_outside_guest_ram() {
    let below = elf(
        IMAGE_BASE_GPA,
        &[load_seg(
            5,
            IMAGE_BASE_GPA - 0x1000,
            &[0x90; 0x2000],
            0x2000,
        )],
    );
    assert!(matches!(
        run(&below, DEFAULT_MEMORY_SIZE).0,
        Err(ImageError::OutsideRam { index: 0, .. })
    ));
    let past = elf(
        IMAGE_BASE_GPA,
        &[load_seg(5, IMAGE_BASE_GPA, &[0x90], DEFAULT_MEMORY_SIZE)],
    );
    assert!(matches!(
        run(&past, DEFAULT_MEMORY_SIZE).0,
        Err(ImageError::OutsideRam { .. })
    ));
    // Exactly filling RAM is fine.
    let fits = elf(
        IMAGE_BASE_GPA,
        &[load_seg(
            5,
            IMAGE_BASE_GPA,
            &[0x90],
            DEFAULT_MEMORY_SIZE - IMAGE_BASE_GPA,
        )],
    );
    assert!(run(&fits, DEFAULT_MEMORY_SIZE).0.is_ok());
    let wraps = elf(
        IMAGE_BASE_GPA,
        &[
            load_seg(5, IMAGE_BASE_GPA, &[0x90], 1),
            load_seg(6, u64::MAX - 0xfff, &[], 0x2000),
        ],
    );
    assert!(matches!(
        run(&wraps, u64::MAX).0,
        Err(ImageError::OutsideRam { index: 1, .. })
    ));
}

#[test]
fn refused_images_write_nothing() {
    let overlap = elf(
        IMAGE_BASE_GPA,
        &[
            load_seg(5, IMAGE_BASE_GPA, &[0x90; 16], 0x1000),
            load_seg(6, IMAGE_BASE_GPA + 0xfff, &[1], 1),
        ],
    );
    let (r, ram) = run(&overlap, DEFAULT_MEMORY_SIZE);
    assert_eq!(
        r,
        Err(ImageError::Overlap {
            first: 0,
            second: 1
        })
    );
    assert_eq!(ram.writes, 0);
}

#[test]
fn entry_must_be_in_loaded_code() {
    let in_data = elf(
        IMAGE_BASE_GPA + 0x1000,
        &[
            load_seg(5, IMAGE_BASE_GPA, &[0x90; 16], 16),
            load_seg(6, IMAGE_BASE_GPA + 0x1000, &[0; 16], 16),
        ],
    );
    assert_eq!(
        run(&in_data, DEFAULT_MEMORY_SIZE).0,
        Err(ImageError::BadEntry {
            entry: IMAGE_BASE_GPA + 0x1000
        })
    );
    let in_bss = elf(
        IMAGE_BASE_GPA + 16,
        &[load_seg(5, IMAGE_BASE_GPA, &[0x90; 16], 0x100)],
    );
    assert!(matches!(
        run(&in_bss, DEFAULT_MEMORY_SIZE).0,
        Err(ImageError::BadEntry { .. })
    ));
    let last_byte = elf(
        IMAGE_BASE_GPA + 15,
        &[load_seg(5, IMAGE_BASE_GPA, &[0x90; 16], 0x100)],
    );
    assert!(run(&last_byte, DEFAULT_MEMORY_SIZE).0.is_ok());
}

#[test]
fn refuses_what_is_not_a_static_x86_64_executable() {
    let good = typical();
    let (r, _) = run(&good[..63], DEFAULT_MEMORY_SIZE);
    assert_eq!(r, Err(ImageError::Truncated { len: 63 }));
    let patched = |at: usize, bytes: &[u8]| {
        let mut f = good.clone();
        f[at..at + bytes.len()].copy_from_slice(bytes);
        run(&f, DEFAULT_MEMORY_SIZE).0
    };
    assert_eq!(patched(0, b"\x7fELG"), Err(ImageError::NotElf));
    assert!(matches!(
        patched(4, &[1]),
        Err(ImageError::WrongFormat { class: 1, .. })
    ));
    assert!(matches!(
        patched(5, &[2]),
        Err(ImageError::WrongFormat { data: 2, .. })
    ));
    assert_eq!(
        patched(16, &3u16.to_le_bytes()),
        Err(ImageError::NotStaticExecutable { e_type: 3 })
    );
    assert_eq!(
        patched(18, &3u16.to_le_bytes()),
        Err(ImageError::WrongMachine { machine: 3 })
    );
    assert!(matches!(
        patched(54, &32u16.to_le_bytes()),
        Err(ImageError::BadProgramHeaders { .. })
    ));
    assert!(matches!(
        patched(56, &200u16.to_le_bytes()),
        Err(ImageError::BadProgramHeaders { .. })
    ));
    assert!(matches!(
        patched(32, &u64::MAX.to_le_bytes()),
        Err(ImageError::BadProgramHeaders { .. })
    ));
    // Segment 0's p_type becomes PT_INTERP.
    assert_eq!(
        patched(64, &3u32.to_le_bytes()),
        Err(ImageError::NotStatic { index: 0 })
    );
    // Segment 1's p_filesz beyond the file, and above p_memsz.
    assert_eq!(
        patched(64 + 56 + 32, &0x10_0000u64.to_le_bytes()),
        Err(ImageError::BadSegment { index: 1 })
    );
    assert_eq!(
        patched(64 + 56 + 40, &2u64.to_le_bytes()),
        Err(ImageError::BadSegment { index: 1 })
    );
    // Segment 0's p_offset makes offset + filesz wrap.
    assert_eq!(
        patched(64 + 8, &u64::MAX.to_le_bytes()),
        Err(ImageError::BadSegment { index: 0 })
    );
    let none = elf(
        IMAGE_BASE_GPA,
        &[Seg {
            kind: 4,
            flags: 4,
            vaddr: 0,
            data: vec![],
            memsz: 0,
        }],
    );
    assert_eq!(
        run(&none, DEFAULT_MEMORY_SIZE).0,
        Err(ImageError::NoLoadableSegment)
    );
    let many: Vec<Seg> = (0..=MAX_LOAD_SEGMENTS as u64)
        .map(|i| load_seg(5, IMAGE_BASE_GPA + i * 0x1000, &[0x90], 1))
        .collect();
    assert_eq!(
        run(&elf(IMAGE_BASE_GPA, &many), DEFAULT_MEMORY_SIZE).0,
        Err(ImageError::TooManySegments)
    );
}

#[test]
fn writer_errors_stop_the_load_with_the_address() {
    let mut calls = 0;
    let r = load(&typical(), DEFAULT_MEMORY_SIZE, &mut |gpa, _| {
        calls += 1;
        if gpa >= IMAGE_BASE_GPA + 0x1000 {
            Err("no frame")
        } else {
            Ok(())
        }
    });
    assert_eq!(
        r,
        Err(ImageError::Write {
            gpa: IMAGE_BASE_GPA + 0x1000,
            error: "no frame"
        })
    );
    assert_eq!(calls, 2);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Random byte damage (headers included) and truncation: no panic, and whatever loads
    /// wrote only inside [IMAGE_BASE_GPA, memory_size) and has its entry in written code.
    #[test]
    fn damaged_images_never_escape_guest_ram(
        edits in prop::collection::vec((0usize..64 + 3 * 56 + 16, any::<u8>()), 1..6),
        cut in prop::option::of(any::<prop::sample::Index>()),
        memory_mib in 1u64..4,
    ) {
        let mut f = typical();
        for (at, value) in &edits {
            let i = *at % f.len();
            f[i] = *value;
        }
        if let Some(cut) = cut {
            f.truncate(cut.index(f.len() + 1));
        }
        let memory = memory_mib << 20;
        let mut written = Vec::new();
        let r = load(&f, memory, &mut |gpa, data| {
            written.push((gpa, data.len() as u64));
            Ok::<(), ()>(())
        });
        if let Ok(img) = r {
            prop_assert!(img.lowest >= IMAGE_BASE_GPA && img.highest <= memory);
            for (gpa, len) in written {
                prop_assert!(gpa >= img.lowest && gpa + len <= img.highest);
            }
            prop_assert!(img.entry >= img.lowest && img.entry < img.highest);
        }
    }

    /// Arbitrary header fields (e_phoff, e_phnum, p_vaddr, p_memsz): no panic, no overflow.
    #[test]
    fn random_headers_never_panic(
        phoff in any::<u64>(),
        phnum in any::<u16>(),
        vaddr in any::<u64>(),
        memsz in any::<u64>(),
        memory_mib in 0u64..4,
    ) {
        // Guest RAM stays small: a valid image is zero-filled up to its memsz.
        let memory = memory_mib << 20;
        let mut f = elf(vaddr, &[load_seg(5, vaddr, &[0x90; 8], memsz)]);
        if phoff % 3 == 0 {
            f[32..40].copy_from_slice(&phoff.to_le_bytes());
        }
        if phnum % 3 == 0 {
            f[56..58].copy_from_slice(&phnum.to_le_bytes());
        }
        let _ = load(&f, memory, &mut |_, _| Ok::<(), ()>(()));
    }
}
