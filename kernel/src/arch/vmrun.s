# lazaret_svm_run(frame: *mut RunFrame) — one guest entry and exit (AMD APM vol. 2 §15.5,
# §15.6). RunFrame (kernel/src/vcpu/svm.rs) holds the guest's GPRs (GuestRegs order: rax rbx
# rcx rdx rsi rdi rbp r8..r15, 8 bytes each at 0..120) then the physical addresses of the
# guest VMCB (120) and the host-state page (128) and pointers to the guest (136) and host
# (144) FXSAVE areas. RAX, RSP and RIP of the guest live in the VMCB.
#
# Order matters: GIF is cleared first, so no interrupt or NMI handler (Rust, free to use XMM)
# runs between the switch of FPU state and VMRUN, or between #VMEXIT and the host's FPU state
# coming back. VMRUN does not switch FS/GS/TR/LDTR, KernelGsBase or the SYSCALL/SYSENTER MSRs:
# VMSAVE/VMLOAD move them (host → its page, guest ← its VMCB, and back after the exit).
#
# Physical interrupts (APM vol. 2 §15.17, §15.21.1): the VMCB sets V_INTR_MASKING, so while the
# guest runs its own RFLAGS.IF masks only virtual interrupts and the host's IF *at VMRUN* decides
# whether physical ones are taken — i.e. exit with the INTR intercept. Lazaret runs with IF=0,
# so IF is set between CLGI and STGI: with GIF=0 no interrupt reaches the host there, and after
# #VMEXIT one that arrived stays pending at the local APIC (IF is cleared again before STGI)
# until the exit loop opens a window for it (`arch::idt::take_pending_interrupts`). QEMU's TCG
# does the same: helper_vmrun sets HF2_HIF from the host's IF when V_INTR_MASKING is on.
# Returns with IF clear.
.section .text
.balign 16
.global lazaret_svm_run
lazaret_svm_run:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    push rdi
    clgi
    # GIF=0 holds interrupts off; IF=1 makes VMRUN let physical ones exit the guest.
    sti
    mov rax, [rdi + 144]
    fxsave64 [rax]
    mov rax, [rdi + 136]
    fxrstor64 [rax]
    mov rax, [rdi + 128]
    vmsave rax
    mov rax, [rdi + 120]
    vmload rax
    mov rbx, [rdi + 8]
    mov rcx, [rdi + 16]
    mov rdx, [rdi + 24]
    mov rsi, [rdi + 32]
    mov rbp, [rdi + 48]
    mov r8, [rdi + 56]
    mov r9, [rdi + 64]
    mov r10, [rdi + 72]
    mov r11, [rdi + 80]
    mov r12, [rdi + 88]
    mov r13, [rdi + 96]
    mov r14, [rdi + 104]
    mov r15, [rdi + 112]
    mov rdi, [rdi + 40]
    vmrun rax
    # #VMEXIT: RSP, RIP (and RAX) are the host's again; every other GPR is the guest's.
    push rdi
    mov rdi, [rsp + 8]
    mov [rdi + 8], rbx
    mov [rdi + 16], rcx
    mov [rdi + 24], rdx
    mov [rdi + 32], rsi
    mov [rdi + 48], rbp
    mov [rdi + 56], r8
    mov [rdi + 64], r9
    mov [rdi + 72], r10
    mov [rdi + 80], r11
    mov [rdi + 88], r12
    mov [rdi + 96], r13
    mov [rdi + 104], r14
    mov [rdi + 112], r15
    pop qword ptr [rdi + 40]
    mov rax, [rdi + 120]
    vmsave rax
    mov rax, [rdi + 128]
    vmload rax
    mov rax, [rdi + 136]
    fxsave64 [rax]
    mov rax, [rdi + 144]
    fxrstor64 [rax]
    # An interrupt that ended the guest stays pending at the LAPIC: no host handler runs here.
    cli
    stgi
    pop rdi
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
