//! GDT and TSS. Every exception and interrupt runs on an IST stack: the prebuilt `core` uses
//! the red zone, which a handler running on the interrupted stack would clobber.
use core::ptr::addr_of;

use x86::bits64::task::TaskStateSegment;
use x86::dtables::{lgdt, DescriptorTablePointer};
use x86::segmentation::SegmentSelector;
use x86::Ring;

pub const KERNEL_CODE: u16 = 0x08;
pub const KERNEL_DATA: u16 = 0x10;
const TSS_SELECTOR: u16 = 0x18;

/// IST slots (1-based, as the IDT names them): exceptions, double fault, NMI / machine check.
pub const IST_EXCEPTION: u8 = 1;
pub const IST_DOUBLE_FAULT: u8 = 2;
pub const IST_NMI: u8 = 3;

const IST_STACK_SIZE: usize = 32 * 1024;

#[repr(C, align(16))]
struct Stack([u8; IST_STACK_SIZE]);

static mut IST_STACKS: [Stack; 3] = [const { Stack([0; IST_STACK_SIZE]) }; 3];
static mut TSS: TaskStateSegment = TaskStateSegment::new();
/// Null, code, data, then the 16-byte TSS descriptor.
static mut GDT: [u64; 5] = [
    0,
    0x00af_9a00_0000_ffff, // 64-bit code, DPL 0
    0x00cf_9200_0000_ffff, // data, DPL 0
    0,
    0,
];

/// Loads the GDT and TSS and reloads the segment registers. Call once, on the boot CPU.
pub fn init() {
    // SAFETY: runs once during single-threaded bring-up, before interrupts are enabled, so
    // nothing else reads these statics while they are written; the descriptors written are
    // valid 64-bit code/data/TSS descriptors for the tables they point to.
    unsafe {
        let tss = &mut *core::ptr::addr_of_mut!(TSS);
        let stacks = &*addr_of!(IST_STACKS);
        for (slot, stack) in stacks.iter().enumerate() {
            tss.set_ist(slot, stack.0.as_ptr_range().end as u64);
        }
        let gdt = &mut *core::ptr::addr_of_mut!(GDT);
        let (lo, hi) = tss_descriptor(
            addr_of!(TSS) as u64,
            core::mem::size_of::<TaskStateSegment>() as u64 - 1,
        );
        gdt[3] = lo;
        gdt[4] = hi;
        lgdt(&DescriptorTablePointer::new_from_slice(&gdt[..]));
        core::arch::asm!(
            "push {code}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ds, {data:x}",
            "mov es, {data:x}",
            "mov ss, {data:x}",
            code = const KERNEL_CODE as u64,
            data = in(reg) KERNEL_DATA as u64,
            tmp = out(reg) _,
        );
        x86::task::load_tr(SegmentSelector::new(TSS_SELECTOR >> 3, Ring::Ring0));
    }
}

/// An available 64-bit TSS descriptor (Intel SDM Vol. 3 §8.2.3), as two GDT slots.
fn tss_descriptor(base: u64, limit: u64) -> (u64, u64) {
    let lo = (limit & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | (0x89 << 40) // present, type 9 (available 64-bit TSS)
        | (((limit >> 16) & 0xf) << 48)
        | (((base >> 24) & 0xff) << 56);
    (lo, base >> 32)
}

#[cfg(test)]
mod tests {
    #[test]
    fn tss_descriptor_splits_base_and_limit() {
        let (lo, hi) = super::tss_descriptor(0xffff_8000_1234_5678, 0x67);
        assert_eq!(lo & 0xffff, 0x67);
        assert_eq!((lo >> 16) & 0xff_ffff, 0x34_5678);
        assert_eq!((lo >> 40) & 0xff, 0x89);
        assert_eq!(lo >> 56, 0x12);
        assert_eq!(hi, 0xffff_8000);
    }
}
