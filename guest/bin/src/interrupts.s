# The guest's interrupt and exception stubs (guest/bin/src/idt.rs loads the IDT that points
# here). Interrupts come only inside Platform::wait_for_interrupt's `sti; hlt; cli`, on the
# guest's one stack, in ring 0: no stack switch, so the asm! around HLT must leave the red
# zone alone (it does: no `nostack`). Every stub preserves every register it touches.
#
# Placeholders filled by global_asm!: {count}, {tsc}, {unexpected}, {edu_bar} (statics),
# {status}, {ack} (edu's IRQ_STATUS / IRQ_ACK offsets), {eoi} (X2APIC_EOI), {exception}
# (the Rust function that reports an exception and exits).

.section .text.interrupts, "ax"

# DMA_DONE_VECTOR: the TSC first (the latency figure ends here), then count, acknowledge edu
# (write back the causes it shows: edu lowers nothing else under MSI, but its status must be
# clear for the next DMA's cause to mean something), EOI, return.
.global dma_done_stub
dma_done_stub:
    push %rax
    push %rdx
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    mov %rax, {tsc}(%rip)
    push %rcx
    incq {count}(%rip)
    mov {edu_bar}(%rip), %rax
    test %rax, %rax
    jz 1f
    mov {status}(%rax), %ecx
    mov %ecx, {ack}(%rax)
1:  mov ${eoi}, %ecx
    xor %eax, %eax
    xor %edx, %edx
    wrmsr
    pop %rcx
    pop %rdx
    pop %rax
    iretq

# Any other vector from 32 on: Lazaret delivered something the guest never asked for. Count
# it (the good variant fails on a nonzero count), EOI so the vLAPIC is not left in service.
.global unexpected_stub
unexpected_stub:
    push %rax
    push %rcx
    push %rdx
    incq {unexpected}(%rip)
    mov ${eoi}, %ecx
    xor %eax, %eax
    xor %edx, %edx
    wrmsr
    pop %rdx
    pop %rcx
    pop %rax
    iretq

# SPURIOUS_VECTOR (X2APIC_SVR bits 7:0): a spurious interrupt sets no in-service bit, so it
# gets no EOI (SDM Vol. 3A §11.9) and counts as nothing.
.global spurious_stub
spurious_stub:
    iretq

# Exceptions 0-31: returning would repeat the faulting instruction forever, so each stub
# passes its vector to the Rust reporter, which prints it and exits (it never returns).
.irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
exception_\v:
    mov $\v, %edi
    jmp exception_common
.endr

exception_common:
    and $-16, %rsp
    call {exception}
2:  hlt
    jmp 2b

.section .rodata.interrupts, "a"
.balign 8
.global exception_stubs
exception_stubs:
.irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad exception_\v
.endr
