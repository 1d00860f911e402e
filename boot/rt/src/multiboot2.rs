//! Reader for the multiboot2 boot information (Multiboot2 Specification 2.0, §3.6), into the
//! same [`MultibootInfo`] the multiboot1 reader fills.
//!
//! GRUB enters through multiboot2 on BIOS and on UEFI. It is the only path that hands over the
//! ACPI RSDP (tags 14/15, a copy of the structure): under UEFI there is none in the BIOS area.
//! The information comes from firmware: every tag size is checked against `total_size`
//! before anything inside the tag is read.
use crate::multiboot::{BootMemory, MemoryRegion, Module, MultibootError, MultibootInfo};
use crate::multiboot::{RegionKind, MAX_MODULES};

/// The value in EAX when a multiboot2 loader enters us (§3.3).
pub const BOOTLOADER_MAGIC: u32 = 0x36D7_6289;

/// Larger information than this is taken as corrupt (GRUB's is a few KiB).
const MAX_TOTAL_SIZE: u32 = 1 << 20;

const TAG_END: u32 = 0;
const TAG_CMDLINE: u32 = 1;
const TAG_MODULE: u32 = 3;
const TAG_MMAP: u32 = 6;
const TAG_ACPI_OLD: u32 = 14;
const TAG_ACPI_NEW: u32 = 15;
const TAG_EFI_BS: u32 = 18;

impl MultibootInfo {
    /// Reads multiboot2 information at physical address `addr` from identity-mapped memory.
    ///
    /// # Safety
    /// `addr..addr+total_size` must be readable (identity-mapped), as it is when a multiboot2
    /// loader has just entered us.
    pub unsafe fn read_v2(addr: u64) -> Result<MultibootInfo, MultibootError> {
        Self::read_v2_from(&crate::multiboot::IdentityMapped, addr)
    }

    /// Reads multiboot2 information at `addr` through `mem`. The RSDP from tag 15 (ACPI 2.0+)
    /// wins over tag 14 (ACPI 1.0), as the XSDT it names reaches 64-bit table addresses.
    pub fn read_v2_from(mem: &impl BootMemory, addr: u64) -> Result<MultibootInfo, MultibootError> {
        if addr == 0 {
            return Err(MultibootError::NullInfo);
        }
        let total = mem.u32(addr);
        if !(16..=MAX_TOTAL_SIZE).contains(&total) {
            return Err(MultibootError::BadTotalSize(total));
        }
        let mut info = MultibootInfo::empty();
        let (mut old_rsdp, mut new_rsdp, mut have_map) = (None, None, false);
        // Tags start at +8 and are 8-aligned (§3.6.2); the end tag closes the list.
        let mut offset = 8u32;
        loop {
            // A list that runs out before its end tag is as bad as a tag that overruns.
            if offset.checked_add(8).is_none_or(|e| e > total) {
                return Err(MultibootError::BadTag { offset, size: 0 });
            }
            let tag = addr + offset as u64;
            let (kind, size) = (mem.u32(tag), mem.u32(tag + 4));
            if size < 8 || offset.checked_add(size).is_none_or(|e| e > total) {
                return Err(MultibootError::BadTag { offset, size });
            }
            match kind {
                TAG_END => break,
                TAG_CMDLINE => info.cmdline = Some(tag + 8),
                TAG_MODULE if size >= 17 => {
                    let module = Module {
                        start: mem.u32(tag + 8) as u64,
                        end: mem.u32(tag + 12) as u64,
                        string: tag + 16,
                    };
                    if module.end < module.start {
                        return Err(MultibootError::BadModule {
                            index: info.module_count,
                        });
                    }
                    if info.module_count < MAX_MODULES {
                        info.modules[info.module_count] = module;
                        info.module_count += 1;
                    }
                }
                TAG_MMAP if size >= 16 => {
                    have_map = true;
                    let entry_size = mem.u32(tag + 8);
                    if entry_size < 24 {
                        return Err(MultibootError::BadMapEntry {
                            offset,
                            size: entry_size,
                        });
                    }
                    let mut e = 16u32;
                    while e.saturating_add(24) <= size {
                        let at = tag + e as u64;
                        info.push_region(MemoryRegion {
                            base: mem.u64(at),
                            len: mem.u64(at + 8),
                            kind: RegionKind::from_raw(mem.u32(at + 16)),
                        });
                        e = e.saturating_add(entry_size);
                    }
                }
                // The RSDP copy: 20 bytes (ACPI 1.0) or 36 (2.0+) after the 8-byte header.
                TAG_ACPI_OLD if size >= 8 + 20 => old_rsdp = Some(tag + 8),
                TAG_ACPI_NEW if size >= 8 + 36 => new_rsdp = Some(tag + 8),
                TAG_EFI_BS => return Err(MultibootError::BootServicesActive),
                _ => {}
            }
            // The next tag starts at the next 8-byte boundary.
            offset = match offset.checked_add(size).and_then(|o| o.checked_add(7)) {
                Some(o) => o & !7,
                None => return Err(MultibootError::BadTag { offset, size }),
            };
        }
        if !have_map {
            return Err(MultibootError::NoMemoryMap);
        }
        info.rsdp = new_rsdp.or(old_rsdp);
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::multiboot::Buffer;

    /// Builds multiboot2 information at 0x100 from (type, payload) tags, as §3.6 lays it out.
    fn info(tags: &[(u32, Vec<u8>)]) -> Buffer {
        let mut bytes = vec![0u8; 8];
        for (kind, payload) in tags.iter().chain([(TAG_END, vec![])].iter()) {
            bytes.extend(kind.to_le_bytes());
            bytes.extend((8 + payload.len() as u32).to_le_bytes());
            bytes.extend(payload);
            while !bytes.len().is_multiple_of(8) {
                bytes.push(0);
            }
        }
        let total = bytes.len() as u32;
        bytes[..4].copy_from_slice(&total.to_le_bytes());
        let mut m = Buffer(vec![0; 0x2000]);
        m.put(0x100, &bytes);
        m
    }

    fn mmap(entries: &[(u64, u64, u32)]) -> Vec<u8> {
        let mut p = 24u32.to_le_bytes().to_vec();
        p.extend(0u32.to_le_bytes());
        for (base, len, kind) in entries {
            p.extend(base.to_le_bytes());
            p.extend(len.to_le_bytes());
            p.extend(kind.to_le_bytes());
            p.extend(0u32.to_le_bytes());
        }
        p
    }

    fn module(start: u32, end: u32, s: &str) -> Vec<u8> {
        let mut p = start.to_le_bytes().to_vec();
        p.extend(end.to_le_bytes());
        p.extend(s.as_bytes());
        p.push(0);
        p
    }

    #[test]
    fn reads_cmdline_modules_map_and_prefers_the_new_rsdp() {
        let m = info(&[
            (TAG_CMDLINE, b"/boot/lazaret-boot log=debug\0".to_vec()),
            (TAG_MODULE, module(0x20_0000, 0x30_0000, "/boot/kernel")),
            (
                TAG_MODULE,
                module(0x30_0000, 0x30_1000, "guest tiny mem=2M"),
            ),
            (TAG_ACPI_OLD, vec![0; 20]),
            (
                TAG_MMAP,
                mmap(&[
                    (0, 0x9fc00, 1),
                    (0x10_0000, 0x7ee_0000, 1),
                    (0x7fe_0000, 0x2_0000, 3),
                ]),
            ),
            (TAG_ACPI_NEW, vec![0; 36]),
        ]);
        let got = MultibootInfo::read_v2_from(&m, 0x100).expect("valid information");
        // Tags: cmdline at +8 (36 bytes), module at +48 (29), module at +80 (34), ACPI old
        // at +120 (28), mmap at +152 (88), ACPI new at +240.
        assert_eq!(got.cmdline, Some(0x100 + 8 + 8));
        assert_eq!(
            got.modules(),
            &[
                Module {
                    start: 0x20_0000,
                    end: 0x30_0000,
                    string: 0x100 + 48 + 16
                },
                Module {
                    start: 0x30_0000,
                    end: 0x30_1000,
                    string: 0x100 + 80 + 16
                },
            ]
        );
        assert_eq!(got.regions().len(), 3);
        assert_eq!(got.regions()[2].kind, RegionKind::AcpiReclaimable);
        assert_eq!(got.top_of_ram(), 0x7fe_0000);
        assert_eq!(got.rsdp, Some(0x100 + 240 + 8));
    }

    #[test]
    fn the_old_rsdp_serves_when_it_is_the_only_one() {
        let m = info(&[
            (TAG_ACPI_OLD, vec![0; 20]),
            (TAG_MMAP, mmap(&[(0, 0x1000, 1)])),
        ]);
        let got = MultibootInfo::read_v2_from(&m, 0x100).expect("valid");
        assert_eq!(got.rsdp, Some(0x100 + 16));
        assert!(got.modules().is_empty());
    }

    #[test]
    fn refuses_tags_that_leave_the_information() {
        let mut m = info(&[
            (TAG_CMDLINE, b"x=1\0".to_vec()),
            (TAG_MMAP, mmap(&[(0, 0x1000, 1)])),
        ]);
        // The cmdline tag claims more than the whole information.
        m.put(0x100 + 12, &4096u32.to_le_bytes());
        assert_eq!(
            MultibootInfo::read_v2_from(&m, 0x100).err(),
            Some(MultibootError::BadTag {
                offset: 8,
                size: 4096
            })
        );
        // A tag smaller than its own header cannot advance.
        m.put(0x100 + 12, &4u32.to_le_bytes());
        assert_eq!(
            MultibootInfo::read_v2_from(&m, 0x100).err(),
            Some(MultibootError::BadTag { offset: 8, size: 4 })
        );
        m.put(0x100, &8u32.to_le_bytes());
        assert_eq!(
            MultibootInfo::read_v2_from(&m, 0x100).err(),
            Some(MultibootError::BadTotalSize(8))
        );
    }

    #[test]
    fn refuses_a_missing_map_running_boot_services_and_bad_modules() {
        let m = info(&[(TAG_CMDLINE, b"x=1\0".to_vec())]);
        assert_eq!(
            MultibootInfo::read_v2_from(&m, 0x100).err(),
            Some(MultibootError::NoMemoryMap)
        );
        let m = info(&[(TAG_EFI_BS, vec![]), (TAG_MMAP, mmap(&[(0, 0x1000, 1)]))]);
        assert_eq!(
            MultibootInfo::read_v2_from(&m, 0x100).err(),
            Some(MultibootError::BootServicesActive)
        );
        let m = info(&[
            (TAG_MODULE, module(0x2000, 0x1000, "k")),
            (TAG_MMAP, mmap(&[(0, 0x1000, 1)])),
        ]);
        assert_eq!(
            MultibootInfo::read_v2_from(&m, 0x100).err(),
            Some(MultibootError::BadModule { index: 0 })
        );
    }
}
