//! Where the kernel image lies and how every physical range is mapped (the input to
//! [`crate::arch::paging::init`]).
use alloc::vec::Vec;

use lazaret_rt::multiboot::{MemoryRegion, RegionKind};

use super::ranges::Range;
use crate::arch::paging::Kind;

pub const FOUR_GIB: u64 = 1 << 32;

extern "C" {
    static __kernel_start: u8;
    static __text_end: u8;
    static __rodata_end: u8;
    static __kernel_end: u8;
}

/// The kernel image's sections, as loaded (the kernel is relocated, so these are real
/// addresses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelLayout {
    pub start: u64,
    pub text_end: u64,
    pub rodata_end: u64,
    pub end: u64,
}

impl KernelLayout {
    /// The running kernel's layout, from its linker-script symbols.
    pub fn current() -> KernelLayout {
        KernelLayout {
            start: core::ptr::addr_of!(__kernel_start) as u64,
            text_end: core::ptr::addr_of!(__text_end) as u64,
            rodata_end: core::ptr::addr_of!(__rodata_end) as u64,
            end: core::ptr::addr_of!(__kernel_end) as u64,
        }
    }
}

/// How every range is mapped; later entries win where ranges overlap. RAM read/write; ACPI
/// memory read-only; firmware-reserved ranges below 4 GiB uncached read-only; the first MiB
/// read-only (the kernel never uses it, and a write through a null pointer must fault); the
/// kernel's text RX, rodata R, data RW.
pub fn page_map(regions: &[MemoryRegion], kernel: &KernelLayout) -> Vec<(Range, Kind)> {
    // Below 4 GiB, what the map does not name is firmware's too: BIOS iPXE's multiboot map
    // lists only usable RAM, leaving the ACPI tables in unnamed ranges.
    let mut map: Vec<(Range, Kind)> = Vec::from([(Range::new(0, FOUR_GIB), Kind::Firmware)]);
    map.extend(regions.iter().filter_map(|r| {
        let kind = match r.kind {
            RegionKind::Available => Kind::Ram,
            RegionKind::AcpiReclaimable | RegionKind::AcpiNvs => Kind::ReadOnly,
            _ if r.base < FOUR_GIB => Kind::Firmware,
            _ => return None,
        };
        Some((Range::new(r.base, r.end()), kind))
    }));
    map.push((Range::new(0, 1 << 20), Kind::Firmware));
    map.push((Range::new(kernel.start, kernel.text_end), Kind::Text));
    map.push((
        Range::new(kernel.text_end, kernel.rodata_end),
        Kind::ReadOnly,
    ));
    map.push((Range::new(kernel.rodata_end, kernel.end), Kind::Ram));
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_sections_and_the_first_mib_override_ram() {
        let regions = [
            MemoryRegion {
                base: 0,
                len: 0x9fc00,
                kind: RegionKind::Available,
            },
            MemoryRegion {
                base: 0x10_0000,
                len: 0x1ff0_0000,
                kind: RegionKind::Available,
            },
            MemoryRegion {
                base: 0xfffc_0000,
                len: 0x4_0000,
                kind: RegionKind::Reserved,
            },
            MemoryRegion {
                base: 0xfd_0000_0000,
                len: 0x3_0000_0000,
                kind: RegionKind::Reserved,
            },
        ];
        let k = KernelLayout {
            start: 0x20_0000,
            text_end: 0x23_0000,
            rodata_end: 0x24_0000,
            end: 0x29_0000,
        };
        let map = page_map(&regions, &k);
        assert_eq!(
            map[0],
            (Range::new(0, 0x1_0000_0000), Kind::Firmware),
            "first, so every named range wins over it"
        );
        assert_eq!(map[1], (Range::new(0, 0x9fc00), Kind::Ram));
        assert!(map.contains(&(Range::new(0xfffc_0000, 0x1_0000_0000), Kind::Firmware)));
        assert!(
            !map.iter().any(|(r, _)| r.start == 0xfd_0000_0000),
            "reserved space above 4 GiB stays unmapped"
        );
        let tail = &map[map.len() - 4..];
        assert_eq!(
            tail[0],
            (Range::new(0, 1 << 20), Kind::Firmware),
            "after RAM, so it wins"
        );
        assert_eq!(tail[1], (Range::new(0x20_0000, 0x23_0000), Kind::Text));
        assert_eq!(tail[2], (Range::new(0x23_0000, 0x24_0000), Kind::ReadOnly));
        assert_eq!(tail[3], (Range::new(0x24_0000, 0x29_0000), Kind::Ram));
    }
}
