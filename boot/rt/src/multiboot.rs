//! Reader for the multiboot1 boot information (Multiboot Specification 0.6.96, §3.3).
//!
//! The loader reads it (or the multiboot2 information, [`crate::multiboot2`], into the same
//! [`MultibootInfo`]) to find the kernel module, the command lines and the memory map. The
//! kernel always receives multiboot1 information, rebuilt by the loader whatever the boot
//! path, and reads the memory map and modules again through hermit-entry's
//! `PlatformInfo::Multiboot`: one module interface for every boot path. The
//! structure comes from firmware (QEMU, iPXE, GRUB), so every count and length is bounded and
//! checked: a bad structure is an error, never a wild read loop.
use core::fmt;

/// The value in EAX when a multiboot1 loader enters us (§3.2).
pub const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;

/// At most this many memory-map entries and modules are kept.
pub const MAX_REGIONS: usize = 128;
pub const MAX_MODULES: usize = 8;
/// Command lines longer than this are refused rather than read without end.
pub const MAX_CMDLINE: usize = 4096;

const FLAG_CMDLINE: u32 = 1 << 2;
const FLAG_MODS: u32 = 1 << 3;
const FLAG_MMAP: u32 = 1 << 6;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MultibootError {
    BadMagic(u32),
    NullInfo,
    NoMemoryMap,
    /// An mmap entry's `size` field is below the 20 bytes an entry needs.
    BadMapEntry {
        offset: u32,
        size: u32,
    },
    /// A module's end lies before its start.
    BadModule {
        index: usize,
    },
    /// A string runs past [`MAX_CMDLINE`] without a NUL.
    StringTooLong {
        addr: u64,
    },
    /// A multiboot2 tag whose size is below its header or runs past `total_size`.
    BadTag {
        offset: u32,
        size: u32,
    },
    /// The multiboot2 `total_size` is below the 16 bytes of header and end tag, or absurd.
    BadTotalSize(u32),
    /// GRUB left EFI boot services running (tag 18): the memory map is not final.
    BootServicesActive,
}

impl fmt::Display for MultibootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MultibootError::BadMagic(m) => {
                write!(f, "not entered by a multiboot loader (EAX={m:#x}, expected {BOOTLOADER_MAGIC:#x} or multiboot2's {:#x})", crate::multiboot2::BOOTLOADER_MAGIC)
            }
            MultibootError::NullInfo => f.write_str("multiboot info pointer is null"),
            MultibootError::NoMemoryMap => {
                f.write_str("the boot loader gave no memory map (flag bit 6)")
            }
            MultibootError::BadMapEntry { offset, size } => {
                write!(f, "memory map entry at +{offset} has size {size} (< 20)")
            }
            MultibootError::BadModule { index } => {
                write!(f, "module {index} ends before it starts")
            }
            MultibootError::StringTooLong { addr } => {
                write!(
                    f,
                    "string at {addr:#x} has no NUL within {MAX_CMDLINE} bytes"
                )
            }
            MultibootError::BadTag { offset, size } => {
                write!(f, "multiboot2 tag at +{offset} has size {size}, outside the information")
            }
            MultibootError::BadTotalSize(n) => {
                write!(f, "multiboot2 information claims {n} bytes")
            }
            MultibootError::BootServicesActive => {
                f.write_str("EFI boot services were left running (multiboot2 tag 18); the loader needs them exited")
            }
        }
    }
}

/// What a memory-map entry says a range is (§3.3, `type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    Available,
    AcpiReclaimable,
    AcpiNvs,
    Defective,
    Reserved,
}

impl RegionKind {
    /// Multiboot1 and multiboot2 number the kinds alike (mb2 §3.6.8).
    pub(crate) fn from_raw(t: u32) -> RegionKind {
        match t {
            1 => RegionKind::Available,
            3 => RegionKind::AcpiReclaimable,
            4 => RegionKind::AcpiNvs,
            5 => RegionKind::Defective,
            _ => RegionKind::Reserved,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    pub base: u64,
    pub len: u64,
    pub kind: RegionKind,
}

impl MemoryRegion {
    pub fn end(&self) -> u64 {
        self.base.saturating_add(self.len)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Module {
    pub start: u64,
    pub end: u64,
    /// Physical address of the module's NUL-terminated string (0 when none).
    pub string: u64,
}

/// The parts of the boot information Lazaret uses, copied out of firmware memory.
#[derive(Clone, Debug)]
pub struct MultibootInfo {
    /// Physical address of the loader's own NUL-terminated command line.
    pub cmdline: Option<u64>,
    pub(crate) modules: [Module; MAX_MODULES],
    pub(crate) module_count: usize,
    pub(crate) regions: [MemoryRegion; MAX_REGIONS],
    pub(crate) region_count: usize,
    /// Entries past [`MAX_REGIONS`] that were dropped.
    pub regions_dropped: usize,
    /// Physical address of a copy of the ACPI RSDP (multiboot2 tags 14/15); multiboot1 has
    /// none, and the kernel then scans the BIOS area.
    pub rsdp: Option<u64>,
}

impl MultibootInfo {
    pub(crate) fn empty() -> MultibootInfo {
        MultibootInfo {
            cmdline: None,
            modules: [Module {
                start: 0,
                end: 0,
                string: 0,
            }; MAX_MODULES],
            module_count: 0,
            regions: [MemoryRegion {
                base: 0,
                len: 0,
                kind: RegionKind::Reserved,
            }; MAX_REGIONS],
            region_count: 0,
            regions_dropped: 0,
            rsdp: None,
        }
    }

    /// Keeps a memory-map entry, or counts it as dropped past [`MAX_REGIONS`].
    pub(crate) fn push_region(&mut self, region: MemoryRegion) {
        if self.region_count < MAX_REGIONS {
            self.regions[self.region_count] = region;
            self.region_count += 1;
        } else {
            self.regions_dropped += 1;
        }
    }

    pub fn modules(&self) -> &[Module] {
        &self.modules[..self.module_count]
    }

    pub fn regions(&self) -> &[MemoryRegion] {
        &self.regions[..self.region_count]
    }

    /// Highest end address of any available region.
    pub fn top_of_ram(&self) -> u64 {
        self.regions()
            .iter()
            .filter(|r| r.kind == RegionKind::Available)
            .map(MemoryRegion::end)
            .max()
            .unwrap_or(0)
    }

    /// Reads the boot information at physical address `addr` from identity-mapped memory.
    ///
    /// # Safety
    /// `addr` and every address inside the structure must be readable (identity-mapped), as
    /// they are when a multiboot loader has just entered us.
    pub unsafe fn read(addr: u64) -> Result<MultibootInfo, MultibootError> {
        Self::read_from(&IdentityMapped, addr)
    }

    /// Reads the boot information at `addr` through `mem`.
    pub fn read_from(mem: &impl BootMemory, addr: u64) -> Result<MultibootInfo, MultibootError> {
        if addr == 0 {
            return Err(MultibootError::NullInfo);
        }
        let flags = mem.u32(addr);
        let mut info = MultibootInfo::empty();
        if flags & FLAG_CMDLINE != 0 {
            let p = mem.u32(addr + 16) as u64;
            info.cmdline = (p != 0).then_some(p);
        }
        if flags & FLAG_MODS != 0 {
            let (count, mods) = (mem.u32(addr + 20) as usize, mem.u32(addr + 24) as u64);
            for index in 0..count.min(MAX_MODULES) {
                let m = mods + 16 * index as u64;
                let module = Module {
                    start: mem.u32(m) as u64,
                    end: mem.u32(m + 4) as u64,
                    string: mem.u32(m + 8) as u64,
                };
                if module.end < module.start {
                    return Err(MultibootError::BadModule { index });
                }
                info.modules[index] = module;
                info.module_count += 1;
            }
        }
        if flags & FLAG_MMAP == 0 {
            return Err(MultibootError::NoMemoryMap);
        }
        let (len, map) = (mem.u32(addr + 44), mem.u32(addr + 48) as u64);
        let mut offset = 0u32;
        // Each entry is `size` (u32, not counting itself) followed by base, length and type.
        while offset.saturating_add(24) <= len {
            let e = map + offset as u64;
            let size = mem.u32(e);
            if size < 20 {
                return Err(MultibootError::BadMapEntry { offset, size });
            }
            info.push_region(MemoryRegion {
                base: mem.u64(e + 4),
                len: mem.u64(e + 12),
                kind: RegionKind::from_raw(mem.u32(e + 20)),
            });
            offset = offset.saturating_add(size).saturating_add(4);
        }
        Ok(info)
    }
}

/// A module's string without the image path or URI a boot loader may put first: QEMU
/// `-initrd` and iPXE do (`/srv/guest-tiny guest tiny`, `tftp://10.0.2.2/guest-tiny guest
/// tiny`), GRUB's `module2` does not (`guest tiny`). A first word is such a path when it
/// starts with `/` or contains `://`. The loader reads module 0's string through this, and
/// guest modules' strings (`guest NAME key=value…`) are read the same way.
pub fn without_image_path(s: &[u8]) -> &[u8] {
    let s = s.trim_ascii_start();
    let end = s
        .iter()
        .position(u8::is_ascii_whitespace)
        .unwrap_or(s.len());
    let first = &s[..end];
    if first.starts_with(b"/") || first.windows(3).any(|w| w == b"://") {
        s[end..].trim_ascii_start()
    } else {
        s
    }
}

/// The NUL-terminated string at `addr`, without the NUL.
///
/// # Safety
/// `addr` must be readable up to the NUL or [`MAX_CMDLINE`] bytes, and the bytes must stay
/// unchanged for `'static` (boot-loader memory the kernel never hands out).
pub unsafe fn c_string(addr: u64) -> Result<&'static [u8], MultibootError> {
    for len in 0..MAX_CMDLINE {
        // SAFETY: within the range the caller vouches for.
        if unsafe { (addr as *const u8).add(len).read() } == 0 {
            // SAFETY: `len` bytes before the NUL were just read; the caller keeps them alive.
            return Ok(unsafe { core::slice::from_raw_parts(addr as *const u8, len) });
        }
    }
    Err(MultibootError::StringTooLong { addr })
}

/// Where the boot information is read from: identity-mapped memory at boot, a buffer in tests.
pub trait BootMemory {
    fn u32(&self, addr: u64) -> u32;
    fn u64(&self, addr: u64) -> u64 {
        self.u32(addr) as u64 | ((self.u32(addr + 4) as u64) << 32)
    }
}

/// Physical memory read through the identity map the loader (and early kernel) run on.
pub struct IdentityMapped;

impl BootMemory for IdentityMapped {
    fn u32(&self, addr: u64) -> u32 {
        // SAFETY: an `IdentityMapped` reader is only used from `MultibootInfo::read`, whose
        // caller guarantees that the structure and everything it points to are readable.
        // Firmware does not align these fields, hence the unaligned read.
        unsafe { (addr as *const u32).read_unaligned() }
    }
}

/// Simulated low memory for host tests: addresses are offsets into the buffer.
#[cfg(test)]
pub(crate) struct Buffer(pub(crate) Vec<u8>);

#[cfg(test)]
impl BootMemory for Buffer {
    fn u32(&self, addr: u64) -> u32 {
        let a = addr as usize;
        u32::from_le_bytes(self.0[a..a + 4].try_into().expect("4 bytes"))
    }
}

#[cfg(test)]
impl Buffer {
    pub(crate) fn put(&mut self, addr: usize, bytes: &[u8]) {
        self.0[addr..addr + bytes.len()].copy_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(size: u32, base: u64, len: u64, kind: u32) -> Vec<u8> {
        let mut e = size.to_le_bytes().to_vec();
        e.extend(base.to_le_bytes());
        e.extend(len.to_le_bytes());
        e.extend(kind.to_le_bytes());
        e
    }

    /// Info at 0x100, module array at 0x200, map at 0x300, strings at 0x800 and 0x900.
    fn fixture(map: &[u8], flags: u32) -> Buffer {
        let mut m = Buffer(vec![0; 0x1000]);
        for (off, v) in [
            (0, flags),
            (16, 0x800),
            (20, 1),
            (24, 0x200),
            (44, map.len() as u32),
            (48, 0x300),
        ] {
            m.put(0x100 + off, &v.to_le_bytes());
        }
        for (off, v) in [(0, 0x20_0000u32), (4, 0x30_0000), (8, 0x900)] {
            m.put(0x200 + off, &v.to_le_bytes());
        }
        m.put(0x300, map);
        m.put(0x800, b"/boot/lazaret-boot log=debug\0");
        m.put(0x900, b"kernel quarantine=basic\0");
        m
    }

    #[test]
    fn rejects_null_and_missing_map() {
        let m = fixture(&[], FLAG_CMDLINE);
        assert_eq!(
            MultibootInfo::read_from(&m, 0).err(),
            Some(MultibootError::NullInfo)
        );
        assert_eq!(
            MultibootInfo::read_from(&m, 0x100).err(),
            Some(MultibootError::NoMemoryMap)
        );
    }

    #[test]
    fn reads_modules_and_map() {
        let mut map = entry(20, 0, 0x9fc00, 1);
        map.extend(entry(20, 0x10_0000, 0x7ee_0000, 1));
        map.extend(entry(20, 0xfffc_0000, 0x4_0000, 2));
        let m = fixture(&map, FLAG_CMDLINE | FLAG_MODS | FLAG_MMAP);
        let info = MultibootInfo::read_from(&m, 0x100).expect("valid info");
        assert_eq!(info.regions().len(), 3);
        assert_eq!(
            info.regions()[1],
            MemoryRegion {
                base: 0x10_0000,
                len: 0x7ee_0000,
                kind: RegionKind::Available
            }
        );
        assert_eq!(info.regions()[2].kind, RegionKind::Reserved);
        assert_eq!(info.top_of_ram(), 0x7fe_0000);
        assert_eq!(
            info.modules(),
            &[Module {
                start: 0x20_0000,
                end: 0x30_0000,
                string: 0x900
            }]
        );
        assert_eq!(info.cmdline, Some(0x800));
    }

    #[test]
    fn rejects_a_map_entry_too_small_to_advance() {
        let m = fixture(&entry(3, 0, 0x1000, 1), FLAG_MMAP);
        let r = MultibootInfo::read_from(&m, 0x100);
        assert_eq!(
            r.err(),
            Some(MultibootError::BadMapEntry { offset: 0, size: 3 })
        );
    }

    #[test]
    fn rejects_a_module_that_ends_before_it_starts() {
        let mut m = fixture(&entry(20, 0, 0x1000, 1), FLAG_MODS | FLAG_MMAP);
        m.put(0x204, &0x10u32.to_le_bytes());
        assert_eq!(
            MultibootInfo::read_from(&m, 0x100).err(),
            Some(MultibootError::BadModule { index: 0 })
        );
    }

    #[test]
    fn module_strings_lose_a_leading_path_or_uri_only() {
        assert_eq!(without_image_path(b"/srv/g guest tiny"), b"guest tiny");
        assert_eq!(
            without_image_path(b"  http://10.0.2.2:8080/g?v=1  guest tiny mem=2M"),
            b"guest tiny mem=2M"
        );
        assert_eq!(without_image_path(b"guest tiny"), b"guest tiny");
        assert_eq!(without_image_path(b"/only/a/path"), b"");
        assert_eq!(without_image_path(b"guest /x"), b"guest /x");
    }

    #[test]
    fn reads_c_strings_up_to_the_nul() {
        let s = b"log=debug\0".to_vec();
        // SAFETY: `s` is readable and NUL-terminated, and outlives the returned slice's use.
        let got = unsafe { c_string(s.as_ptr() as u64) }.expect("terminated");
        assert_eq!(got, b"log=debug");
        let long = vec![b'x'; MAX_CMDLINE + 1];
        // SAFETY: `long` is readable for MAX_CMDLINE bytes, all the function reads.
        assert!(unsafe { c_string(long.as_ptr() as u64) }.is_err());
    }
}
