//! Guest-physical layout (guest contract, issue 9). Guest RAM is gpa 0 .. `memory_size`; the
//! guest's IOMMU tables use IOVA = gpa, so every address here is also what its device sees.

/// Page 0 is never mapped in the guest's own page tables: a null dereference faults.
pub const NULL_GUARD_GPA: u64 = 0;
/// The [`crate::BootInfo`] record; the guest receives this address in RDI.
pub const BOOT_INFO_GPA: u64 = 0x1000;
/// The guest's command line: UTF-8, not NUL-terminated, at most [`MAX_CMDLINE`] bytes.
pub const CMDLINE_GPA: u64 = 0x2000;
/// The longest command line: the one page between [`CMDLINE_GPA`] and [`GDT_GPA`].
pub const MAX_CMDLINE: u64 = 0x1000;
/// The GDT Lazaret writes ([`GDT`]); GDTR.limit = [`GDT_LIMIT`].
pub const GDT_GPA: u64 = 0x3000;
/// 64 KiB for the guest's own page tables, which Lazaret builds; CR3 points here.
pub const PAGE_TABLES_GPA: u64 = 0x10000;
/// Size of the page-table area.
pub const PAGE_TABLES_SIZE: u64 = 0x10000;
/// Lowest address of the guest's stack.
pub const STACK_BOTTOM_GPA: u64 = 0x80000;
/// Initial RSP (the stack grows down from here to [`STACK_BOTTOM_GPA`]).
pub const STACK_TOP_GPA: u64 = 0x100000;
/// Where the guest ELF is linked (static, non-PIE); no loadable segment may start lower.
pub const IMAGE_BASE_GPA: u64 = 0x200000;
/// Where Lazaret places the guest's virtual BARs.
pub const MMIO_WINDOW_GPA: u64 = 0xC000_0000;
/// Size of the MMIO window.
pub const MMIO_WINDOW_SIZE: u64 = 0x1000_0000;
/// Guest RAM when the module string does not say otherwise.
pub const DEFAULT_MEMORY_SIZE: u64 = 8 << 20;
/// edu's 28-bit DMA mask: buffers the guest hands its device sit below this.
pub const DMA_LIMIT: u64 = 1 << 28;
/// Page size of every range above.
pub const PAGE_SIZE: u64 = 0x1000;

/// The guest's DMA buffers, source and destination: the two pages after its image (which
/// ends at `image_end`). Both sides use this one rule: the guest to place them, Lazaret to
/// read back what its device moved. `None` when the addresses overflow.
pub fn dma_buffers(image_end: u64) -> Option<(u64, u64)> {
    let source = image_end.checked_next_multiple_of(PAGE_SIZE)?;
    Some((source, source.checked_add(PAGE_SIZE)?))
}

/// Code segment selector (GDT entry 1).
pub const CODE_SELECTOR: u16 = 0x08;
/// Data segment selector for DS/ES/SS (GDT entry 2).
pub const DATA_SELECTOR: u16 = 0x10;
/// GDTR.limit: three 8-byte descriptors, minus one.
pub const GDT_LIMIT: u16 = 23;

/// The three descriptors at [`GDT_GPA`] (Intel SDM vol. 3A §3.4.5, AMD APM vol. 2 §4.8):
/// null; a present ring-0 code segment with L=1 (type 0xA, execute/read; base and limit are
/// ignored in 64-bit mode); a present ring-0 read/write data segment (type 0x2), G=1,
/// limit 0xFFFFF so it is also sane if loaded outside long mode.
pub const GDT: [u64; 3] = [0, 0x0020_9a00_0000_0000, 0x00cf_9200_0000_ffff];
