//! A read-only walk of 4-level x86-64 page tables (AMD APM vol. 2 §5.3, figure 5-17; nested
//! tables have the same format, §15.25.5): how the SVM backend finds the bytes of an exiting
//! instruction when the CPU has no decode assists — guest-virtual RIP through the guest's own
//! tables, each guest-physical address through the nested tables.
const PRESENT: u64 = 1 << 0;
/// PS in a PDPE (1 GiB page) or PDE (2 MiB page).
const PAGE_SIZE_BIT: u64 = 1 << 7;
/// Bits 51:12 of an entry: the next table or the page frame.
const ADDR: u64 = 0x000F_FFFF_FFFF_F000;

/// PWT and PCD of a leaf entry: the page is mapped write-through or uncached, which is how
/// nested paging maps device memory (BARs).
const CACHE_BITS: u64 = (1 << 3) | (1 << 4);

/// Where a translation ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    pub addr: u64,
    /// The leaf entry mapped PWT or PCD: device memory, which the host must not read as if
    /// it were RAM (a read can have side effects).
    pub uncached: bool,
}

/// Translates `addr` through the tables at `root`; `read` loads one 8-byte entry at a
/// physical address of the tables' space (`None` when that address is unreadable). `None`
/// when some level is not present.
pub fn translate(
    root: u64,
    addr: u64,
    read: &mut dyn FnMut(u64) -> Option<u64>,
) -> Option<Translation> {
    let mut table = root & ADDR;
    // Level shifts: PML4 39, PDPT 30, PD 21, PT 12.
    for shift in [39u32, 30, 21, 12] {
        let index = (addr >> shift) & 0x1FF;
        let entry = read(table + index * 8)?;
        if entry & PRESENT == 0 {
            return None;
        }
        let large = (shift == 30 || shift == 21) && entry & PAGE_SIZE_BIT != 0;
        if shift == 12 || large {
            let offset_mask = (1u64 << shift) - 1;
            return Some(Translation {
                addr: (entry & ADDR & !offset_mask) | (addr & offset_mask),
                uncached: entry & CACHE_BITS != 0,
            });
        }
        table = entry & ADDR;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn walks_4k_2m_and_1g_pages_and_stops_at_not_present() {
        let mut mem: HashMap<u64, u64> = HashMap::new();
        // PML4 at 0x1000: entry 0 -> PDPT at 0x2000.
        mem.insert(0x1000, 0x2000 | 3);
        // PDPT entry 0 -> PD at 0x3000; entry 1: a 1 GiB page at 0x1_4000_0000.
        mem.insert(0x2000, 0x3000 | 3);
        mem.insert(0x2008, 0x1_4000_0000 | 0x83);
        // PD entry 0 -> PT at 0x4000; entry 1: a 2 MiB page at 0x80_0000.
        mem.insert(0x3000, 0x4000 | 3);
        mem.insert(0x3008, 0x80_0000 | 0x83);
        // PT entry 5 -> 0x9000 (NX in bit 63 ignored by the address mask); entry 7 uncached.
        mem.insert(0x4028, 0x9000 | 3 | (1 << 63));
        mem.insert(0x4038, 0xF000_0000 | 3 | (1 << 4));
        let mut read = |pa: u64| Some(mem.get(&pa).copied().unwrap_or(0));
        let addr = |t: Option<Translation>| t.map(|t| t.addr);
        assert_eq!(
            translate(0x1000, 0x7008, &mut read),
            Some(Translation {
                addr: 0xF000_0008,
                uncached: true
            })
        );
        assert!(!translate(0x1000, 0x5123, &mut read).unwrap().uncached);
        assert_eq!(addr(translate(0x1000, 0x5123, &mut read)), Some(0x9123));
        assert_eq!(
            addr(translate(0x1000, 0x20_1234, &mut read)),
            Some(0x80_1234)
        );
        assert_eq!(
            addr(translate(0x1000, 0x4012_3456, &mut read)),
            Some(0x1_4012_3456)
        );
        assert_eq!(
            translate(0x1000, 0x6000, &mut read),
            None,
            "PT entry 6 absent"
        );
        assert_eq!(
            translate(0x1000, 0x80_0000_0000, &mut read),
            None,
            "PML4 entry 1 absent"
        );
        let mut unreadable = |_: u64| None;
        assert_eq!(translate(0x1000, 0x5123, &mut unreadable), None);
    }
}
