# Kernel entry (hermit-entry convention): RDI = &RawBootInfo, ESI = cpu id.
# Records the entry TSC, enables SSE (the prebuilt `core` uses it; we do not rely on the
# loader having done it) and moves to the kernel's own boot stack before any Rust runs.
.section .text._start, "ax"
.global _start
_start:
    cli
    cld
    mov %rdi, %r12
    mov %esi, %r13d
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    mov %rax, %rdx                  # third argument: TSC at entry
    mov %cr0, %rax
    and $~(1 << 2), %rax            # EM off
    or $(1 << 1), %rax              # MP on
    mov %rax, %cr0
    mov %cr4, %rax
    or $((1 << 9) | (1 << 10)), %rax  # OSFXSR, OSXMMEXCPT
    mov %rax, %cr4
    lea boot_stack_top(%rip), %rsp
    mov %r12, %rdi
    mov %r13d, %esi
    call kernel_entry
1:  cli
    hlt
    jmp 1b

.section .bss
.balign 16
boot_stack: .skip 256 * 1024
boot_stack_top:
