/// A function's Class Code register (PCI Code and ID Assignment Spec rev 1.x §1): what kind
/// of function it is, independent of vendor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ClassCode {
    pub base: u8,
    pub sub: u8,
    pub prog_if: u8,
}

impl ClassCode {
    /// From the dword at offset 0x08: class in bits 31:8, revision in 7:0.
    pub const fn from_class_revision(dword: u32) -> ClassCode {
        ClassCode {
            base: (dword >> 24) as u8,
            sub: (dword >> 16) as u8,
            prog_if: (dword >> 8) as u8,
        }
    }

    /// Host bridges (0600) keep memory decoding on during BAR sizing, as Linux does
    /// (`mmio_always_on`): on some chipsets turning it off cuts the CPU off from memory.
    pub const fn is_host_bridge(self) -> bool {
        self.base == 0x06 && self.sub == 0x00
    }

    /// A short lspci-style name for the common classes; the rest by base class.
    pub fn name(self) -> &'static str {
        match (self.base, self.sub, self.prog_if) {
            (0x00, 0x01, _) => "VGA-compatible unclassified device",
            (0x00, _, _) => "unclassified device",
            (0x01, 0x00, _) => "SCSI storage controller",
            (0x01, 0x01, _) => "IDE interface",
            (0x01, 0x06, 0x01) => "SATA controller (AHCI)",
            (0x01, 0x06, _) => "SATA controller",
            (0x01, 0x08, 0x02) => "NVMe controller",
            (0x01, _, _) => "mass storage controller",
            (0x02, 0x00, _) => "Ethernet controller",
            (0x02, _, _) => "network controller",
            (0x03, 0x00, _) => "VGA compatible controller",
            (0x03, _, _) => "display controller",
            (0x04, 0x03, _) => "audio device",
            (0x04, _, _) => "multimedia controller",
            (0x05, _, _) => "memory controller",
            (0x06, 0x00, _) => "host bridge",
            (0x06, 0x01, _) => "ISA bridge",
            (0x06, 0x04, _) => "PCI bridge",
            (0x06, 0x07, _) => "CardBus bridge",
            (0x06, _, _) => "bridge",
            (0x07, 0x00, _) => "serial controller",
            (0x07, _, _) => "communication controller",
            (0x08, 0x06, _) => "IOMMU",
            (0x08, _, _) => "system peripheral",
            (0x09, _, _) => "input device controller",
            (0x0b, _, _) => "processor",
            (0x0c, 0x03, _) => "USB controller",
            (0x0c, 0x05, _) => "SMBus",
            (0x0c, _, _) => "serial bus controller",
            (0x0d, _, _) => "wireless controller",
            (0x10, _, _) => "encryption controller",
            (0x11, _, _) => "signal processing controller",
            (0x12, _, _) => "processing accelerator",
            (0xff, _, _) => "unassigned class",
            _ => "other device",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_class_dword_and_names_q35_functions() {
        let ahci = ClassCode::from_class_revision(0x0106_0102);
        assert_eq!(
            ahci,
            ClassCode {
                base: 0x01,
                sub: 0x06,
                prog_if: 0x01
            }
        );
        assert_eq!(ahci.name(), "SATA controller (AHCI)");
        assert_eq!(
            ClassCode::from_class_revision(0x00ff_0010).name(),
            "unclassified device"
        );
        assert_eq!(ClassCode::from_class_revision(0x0806_0000).name(), "IOMMU");
        assert!(ClassCode::from_class_revision(0x0600_0002).is_host_bridge());
        assert!(!ClassCode::from_class_revision(0x0604_0000).is_host_bridge());
    }
}
