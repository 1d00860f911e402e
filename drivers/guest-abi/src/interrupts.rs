//! PLACEHOLDER (lead): replaced by the guest helper's version at merge.
pub const DMA_DONE_VECTOR: u8 = 0x50;
pub const MSI_ADDRESS: u32 = 0xFEE0_0000;
pub const IA32_APIC_BASE: u32 = 0x1B;
pub const X2APIC_ID: u32 = 0x802;
pub const X2APIC_VERSION: u32 = 0x803;
pub const X2APIC_TPR: u32 = 0x808;
pub const X2APIC_EOI: u32 = 0x80B;
pub const X2APIC_SVR: u32 = 0x80F;
