# Multiboot1 and multiboot2 entry: 32-bit protected mode, paging off, EAX = magic, EBX =
# boot info (both protocols enter the same way; loader_main tells them apart by the magic).
# Builds identity page tables for the first 4 GiB (2 MiB pages), enables SSE (the prebuilt
# `core` uses it), enters long mode and calls loader_main(magic, info).
#
# Two headers: multiboot1 (QEMU -kernel, BIOS iPXE; within the first 8 KiB) and multiboot2
# (GRUB's `multiboot2` on BIOS and UEFI, the only path that hands over the ACPI RSDP; within
# the first 32 KiB, 8-aligned). Both describe the same load range and entry point, so the
# same ELF64 file boots unchanged under each.

.set MB_MAGIC, 0x1BADB002
.set MB_FLAGS, (1 << 0) | (1 << 1) | (1 << 16)   # page-align modules, memory map, a.out kludge

.section .multiboot, "a"
.balign 4
mb_header:
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)
    .long mb_header        # header_addr
    .long __load_start     # load_addr
    .long __load_end       # load_end_addr
    .long __bss_end        # bss_end_addr
    .long _start32         # entry_addr

# Multiboot2 Specification 2.0 §3.1: magic, architecture 0 (i386 protected mode), length,
# checksum; then 8-aligned tags: address (2), entry address (3), end (0). GRUB on UEFI exits
# boot services before entering us because no EFI tag asks otherwise.
.set MB2_MAGIC, 0xE85250D6
.balign 8
mb2_header:
    .long MB2_MAGIC
    .long 0
    .long mb2_header_end - mb2_header
    .long -(MB2_MAGIC + (mb2_header_end - mb2_header))
.balign 8
    .short 2, 0            # address tag, required
    .long 24
    .long mb2_header       # header_addr
    .long __load_start     # load_addr
    .long __load_end       # load_end_addr
    .long __bss_end        # bss_end_addr
.balign 8
    .short 3, 0            # entry address tag, required
    .long 12
    .long _start32
.balign 8
    .short 0, 0            # end tag
    .long 8
mb2_header_end:

.section .text.boot32, "ax"
.code32
.global _start32
_start32:
    cli
    cld
    mov $boot_stack_top, %esp
    mov %eax, %edi                  # first argument: magic
    mov %ebx, %esi                  # second argument: boot info

    # Long mode available? (CPUID 0x80000001 EDX bit 29)
    mov $0x80000000, %eax
    cpuid
    cmp $0x80000001, %eax
    jb no_long_mode
    mov $0x80000001, %eax
    cpuid
    test $(1 << 29), %edx
    jz no_long_mode

    # PML4[0] -> PDPT, PDPT[0..4] -> PD0..PD3, each PD entry a 2 MiB page (P|W|PS).
    # PML4[1] -> the same PDPT: the first 4 GiB again at 512 GiB (PHYS_ALIAS in main.rs), so
    # a module GRUB put at physical 0 can be read through a non-null pointer.
    mov $pdpt, %eax
    or $0x3, %eax
    mov %eax, pml4
    mov %eax, pml4+8
    xor %ecx, %ecx
1:  mov %ecx, %eax
    shl $12, %eax
    add $pd, %eax
    or $0x3, %eax
    mov %eax, pdpt(,%ecx,8)
    inc %ecx
    cmp $4, %ecx
    jb 1b
    xor %ecx, %ecx
2:  mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax
    mov %eax, pd(,%ecx,8)
    mov %ecx, %eax
    shr $11, %eax                   # high dword of (ecx << 21)
    mov %eax, pd+4(,%ecx,8)
    inc %ecx
    cmp $2048, %ecx
    jb 2b

    mov $pml4, %eax
    mov %eax, %cr3
    mov %cr4, %eax
    or $((1 << 5) | (1 << 9) | (1 << 10)), %eax    # PAE, OSFXSR, OSXMMEXCPT
    mov %eax, %cr4
    mov $0xC0000080, %ecx                           # EFER
    rdmsr
    or $((1 << 8) | (1 << 11)), %eax                # LME, NXE
    wrmsr
    mov %cr0, %eax
    and $~(1 << 2), %eax                            # EM off: SSE instructions allowed
    or $((1 << 31) | (1 << 1) | 1), %eax            # PG, MP, PE
    mov %eax, %cr0
    lgdt gdt64_ptr
    ljmp $0x08, $long_mode

no_long_mode:
    mov $no_lm_msg, %esi
    mov $0x3f8, %dx
3:  lodsb
    test %al, %al
    jz 4f
    out %al, %dx
    jmp 3b
4:  cli
    hlt
    jmp 4b

.code64
long_mode:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %ax, %ax
    mov %ax, %fs
    mov %ax, %gs
    mov $boot_stack_top, %rsp
    call loader_main
5:  cli
    hlt
    jmp 5b

.section .rodata
.balign 8
gdt64:
    .quad 0
    .quad 0x00af9a000000ffff        # 0x08: 64-bit code
    .quad 0x00cf92000000ffff        # 0x10: data
gdt64_end:
gdt64_ptr:
    .word gdt64_end - gdt64 - 1
    .quad gdt64
no_lm_msg:
    .asciz "lazaret-boot: error: this CPU has no long mode (x86_64); cannot continue\r\n"

.section .bss
.balign 4096
pml4: .skip 4096
pdpt: .skip 4096
pd:   .skip 4096 * 4
boot_stack: .skip 64 * 1024
boot_stack_top:
