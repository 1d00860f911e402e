//! The PCI Express capability (PCIe Base §7.5.3): the function's role in the hierarchy and
//! the reset and requester-ID facts the passthrough core needs.
use core::fmt;

use lazaret_types::Sbdf;

use crate::regs;
use crate::ConfigSpace;

/// Device/Port Type of the PCI Express Capabilities Register, bits 7:4 (PCIe Base §7.5.3.2).
/// The requester-ID alias rules depend on it: a PCIe-to-PCI bridge takes ownership of the
/// transactions of the conventional devices behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciePortType {
    Endpoint,
    LegacyEndpoint,
    RootPort,
    UpstreamSwitchPort,
    DownstreamSwitchPort,
    PcieToPciBridge,
    PciToPcieBridge,
    RcIntegratedEndpoint,
    RcEventCollector,
    Reserved(u8),
}

impl PciePortType {
    pub const fn from_field(field: u8) -> PciePortType {
        match field & 0xf {
            0b0000 => PciePortType::Endpoint,
            0b0001 => PciePortType::LegacyEndpoint,
            0b0100 => PciePortType::RootPort,
            0b0101 => PciePortType::UpstreamSwitchPort,
            0b0110 => PciePortType::DownstreamSwitchPort,
            0b0111 => PciePortType::PcieToPciBridge,
            0b1000 => PciePortType::PciToPcieBridge,
            0b1001 => PciePortType::RcIntegratedEndpoint,
            0b1010 => PciePortType::RcEventCollector,
            other => PciePortType::Reserved(other),
        }
    }
}

impl fmt::Display for PciePortType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            PciePortType::Endpoint => "endpoint",
            PciePortType::LegacyEndpoint => "legacy-endpoint",
            PciePortType::RootPort => "root-port",
            PciePortType::UpstreamSwitchPort => "upstream-port",
            PciePortType::DownstreamSwitchPort => "downstream-port",
            PciePortType::PcieToPciBridge => "pcie-to-pci-bridge",
            PciePortType::PciToPcieBridge => "pci-to-pcie-bridge",
            PciePortType::RcIntegratedEndpoint => "rc-endpoint",
            PciePortType::RcEventCollector => "rc-event-collector",
            PciePortType::Reserved(v) => return write!(f, "type{v:x}"),
        };
        f.write_str(name)
    }
}

/// What the PCI Express capability tells the passthrough core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PcieInfo {
    /// Offset of the PCI Express capability.
    pub offset: u8,
    pub port_type: PciePortType,
    /// Function Level Reset supported (Device Capabilities bit 28, PCIe Base §7.5.3.3).
    pub flr: bool,
    /// Phantom Functions Supported (Device Capabilities bits 4:3): how many high bits of the
    /// function number the function may borrow as extra tags, each a requester ID the IOMMU
    /// must translate like its own (PCIe Base §2.2.6.2).
    pub phantom_function_bits: u8,
}

impl PcieInfo {
    /// Reads the PCI Express capability found at `offset`.
    pub fn read<C: ConfigSpace + ?Sized>(cfg: &C, function: Sbdf, offset: u8) -> PcieInfo {
        let at = u16::from(offset);
        let capabilities = cfg.read16(function, at + regs::PCIE_CAPABILITIES);
        let devcap = cfg.read32(function, at + regs::PCIE_DEVICE_CAPABILITIES);
        PcieInfo {
            offset,
            port_type: PciePortType::from_field((capabilities >> 4) as u8),
            flr: devcap & regs::PCIE_DEVCAP_FLR != 0,
            phantom_function_bits: ((devcap & regs::PCIE_DEVCAP_PHANTOM) >> 3) as u8,
        }
    }

    /// The extra function numbers that function number `function` may put in its requester
    /// IDs: with `n` phantom bits a function `f < 8 >> n` also uses `f + k * (8 >> n)`. A
    /// function at or above that stride gets none, as in Xen's `phantom_stride`.
    pub fn phantom_functions(&self, function: u8) -> impl Iterator<Item = u8> {
        let stride = 8u8 >> self.phantom_function_bits.min(3);
        let count = if self.phantom_function_bits == 0 || function >= stride {
            0
        } else {
            8 / stride - 1
        };
        (1..=count).map(move |k| function + k * stride)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{FakeConfigSpace, FakeFunction};
    use alloc::vec::Vec;
    use lazaret_types::Bdf;

    fn at() -> Sbdf {
        Sbdf::new(0, Bdf::new(0, 2, 0).unwrap())
    }

    fn read(f: FakeFunction) -> PcieInfo {
        let mut cfg = FakeConfigSpace::new();
        cfg.insert(at(), f);
        PcieInfo::read(&cfg, at(), 0x40)
    }

    #[test]
    fn every_port_type_decodes() {
        let expected = [
            (0, PciePortType::Endpoint),
            (1, PciePortType::LegacyEndpoint),
            (4, PciePortType::RootPort),
            (5, PciePortType::UpstreamSwitchPort),
            (6, PciePortType::DownstreamSwitchPort),
            (7, PciePortType::PcieToPciBridge),
            (8, PciePortType::PciToPcieBridge),
            (9, PciePortType::RcIntegratedEndpoint),
            (10, PciePortType::RcEventCollector),
            (3, PciePortType::Reserved(3)),
        ];
        for (field, port_type) in expected {
            let info = read(FakeFunction::endpoint(0x8086, 1, 0x060400).pcie(field, false));
            assert_eq!((info.port_type, info.flr), (port_type, false));
        }
    }

    #[test]
    fn flr_and_phantom_functions_come_from_device_capabilities() {
        let info = read(FakeFunction::endpoint(0x8086, 1, 0x020000).pcie(0, true));
        assert!(info.flr);
        assert_eq!(info.phantom_function_bits, 0);
        assert_eq!(info.phantom_functions(0).count(), 0);

        let devcap = regs::PCIE_DEVCAP_FLR | (0b10 << 3);
        let info =
            read(FakeFunction::endpoint(0x8086, 1, 0x020000).capability(0x10, 0x0002, &[devcap]));
        assert_eq!(info.phantom_function_bits, 2);
        assert_eq!(info.phantom_functions(1).collect::<Vec<_>>(), vec![3, 5, 7]);
        assert_eq!(info.phantom_functions(2).count(), 0, "beyond the stride");

        let one_bit = PcieInfo {
            phantom_function_bits: 1,
            ..info
        };
        assert_eq!(one_bit.phantom_functions(3).collect::<Vec<_>>(), vec![7]);
        let all = PcieInfo {
            phantom_function_bits: 3,
            ..info
        };
        assert_eq!(
            all.phantom_functions(0).collect::<Vec<_>>(),
            (1..8).collect::<Vec<u8>>()
        );
    }
}
