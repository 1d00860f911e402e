//! Interrupt delivery into a guest (issue 11 part 4, "the interrupt-delivery contract"): the
//! MSI message the payload asks its device for, and the x2APIC MSRs of the minimal virtual
//! LAPIC that takes it.
//!
//! The guest programs its device's (virtual) MSI capability with [`MSI_ADDRESS`] and
//! [`DMA_DONE_VECTOR`]. Lazaret never passes that message to the device: it reads it as a
//! request, programs a remapped host interrupt of its own, and injects [`DMA_DONE_VECTOR`]
//! into the guest when the host interrupt arrives. The guest acknowledges with
//! `wrmsr(X2APIC_EOI, 0)`.

/// The vector the payload puts in its device's MSI data (Message Data bits 7:0). Above the 32
/// exception vectors and in priority class 5, so TPR 0 never holds it back.
pub const DMA_DONE_VECTOR: u8 = 0x50;
// Vectors 0–31 are exceptions (SDM Vol. 3A §6.2): an MSI cannot use one.
const _: () = assert!(DMA_DONE_VECTOR >= 32);

/// The MSI address the payload programs: the LAPIC window 0xFEEx_xxxx with destination ID 0
/// (its one vCPU), physical destination mode, no redirection hint (Intel SDM Vol. 3A §11.11.1).
/// With the Message Data's delivery mode 000 (fixed) and edge trigger this is the plainest
/// interrupt there is. Exactly 0xFEE0_0000 also because QEMU 7.2's amd-iommu drops an MSI
/// whose address carries destination bits.
pub const MSI_ADDRESS: u32 = 0xFEE0_0000;

/// x2APIC MSRs the virtual LAPIC answers (Intel SDM Vol. 3A §11.12.1.2, table 11-6); every
/// other MSR still raises #GP.
///
/// IA32_APIC_BASE: bit 11 EN (APIC global enable), bit 10 EXTD (x2APIC mode), bit 8 BSP.
pub const IA32_APIC_BASE: u32 = 0x1B;
/// Local APIC ID (read-only): the vCPU's destination ID, 0 here.
pub const X2APIC_ID: u32 = 0x802;
/// Local APIC version (read-only).
pub const X2APIC_VERSION: u32 = 0x803;
/// Task priority: 0 lets every vector through.
pub const X2APIC_TPR: u32 = 0x808;
/// End of interrupt: the handler writes 0 here before IRET.
pub const X2APIC_EOI: u32 = 0x80B;
/// Spurious interrupt vector: bit 8 software-enables the APIC, bits 7:0 the spurious vector.
pub const X2APIC_SVR: u32 = 0x80F;

/// IA32_APIC_BASE bit 11: the APIC is globally enabled.
pub const APIC_BASE_ENABLE: u64 = 1 << 11;
/// IA32_APIC_BASE bit 10: x2APIC mode (needs [`APIC_BASE_ENABLE`]).
pub const APIC_BASE_X2APIC: u64 = 1 << 10;
/// X2APIC_SVR bit 8: APIC software enable; while clear, the LAPIC delivers no interrupt.
pub const SVR_APIC_ENABLE: u64 = 1 << 8;
/// The spurious vector the payload sets in X2APIC_SVR bits 7:0 (the conventional 0xFF).
pub const SPURIOUS_VECTOR: u8 = 0xFF;

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract's values, restated from the SDM: an MSI address is 0xFEE in bits 31:20,
    /// destination ID in 19:12, RH bit 3, DM bit 2.
    #[test]
    fn msi_address_is_the_lapic_window_with_destination_zero_physical_mode() {
        assert_eq!(MSI_ADDRESS >> 20, 0xFEE);
        assert_eq!((MSI_ADDRESS >> 12) & 0xFF, 0, "destination 0");
        assert_eq!(MSI_ADDRESS & 0b1100, 0, "RH = 0, DM = 0 (physical)");
        assert_eq!(
            [
                IA32_APIC_BASE,
                X2APIC_ID,
                X2APIC_VERSION,
                X2APIC_TPR,
                X2APIC_EOI,
                X2APIC_SVR
            ],
            [0x1B, 0x802, 0x803, 0x808, 0x80B, 0x80F]
        );
    }
}
