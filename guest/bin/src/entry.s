# Guest entry (guest contract): 64-bit mode, RDI = BootInfo gpa, RSP = STACK_TOP_GPA,
# interrupts off, no IDT. The prebuilt `core` uses SSE, so before any Rust runs make sure
# CR0.EM is clear, CR0.MP set and CR4.OSFXSR|OSXMMEXCPT set. The entry state already says so;
# each register is written only if it differs, so a correct entry costs no CR-write exit.

.set CR0_MP, 1 << 1
.set CR0_EM, 1 << 2
.set CR4_SSE, (1 << 9) | (1 << 10)

.section .text.entry, "ax"
.global _start
_start:
    cld
    mov %cr0, %rax
    mov %rax, %rcx
    and $~CR0_EM, %rcx
    or $CR0_MP, %rcx
    cmp %rax, %rcx
    je 1f
    mov %rcx, %cr0
1:  mov %cr4, %rax
    mov %rax, %rcx
    or $CR4_SSE, %rcx
    cmp %rax, %rcx
    je 2f
    mov %rcx, %cr4
2:  and $-16, %rsp              # call below leaves RSP = 8 mod 16, as the SysV ABI expects
    call guest_main             # RDI (the BootInfo gpa) is its argument; it never returns
3:  hlt
    jmp 3b
