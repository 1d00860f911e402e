//! The kernel binary: only the entry, the allocator and the panic hook. Everything else is in
//! the library, where it is host-tested.
#![no_std]
#![no_main]

use hermit_entry::boot_info::RawBootInfo;

lazaret_rt::freestanding_runtime!();
hermit_entry::define_entry_version!();
core::arch::global_asm!(include_str!("entry.s"), options(att_syntax));

#[global_allocator]
static HEAP: lazaret_kernel::mm::heap::KernelHeap = lazaret_kernel::mm::heap::KernelHeap::new();

#[no_mangle]
extern "C" fn kernel_entry(raw: &'static RawBootInfo, cpu_id: u32, entry_tsc: u64) -> ! {
    lazaret_kernel::boot::start(raw, cpu_id, entry_tsc, &HEAP)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    lazaret_kernel::panic::report(info)
}
