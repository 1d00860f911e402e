//! The I/O permission map (APM vol. 2 §15.10.1) and the MSR permission map (§15.11). A set bit
//! intercepts. Both start with every bit set; [`IoPermissionMap::allow`] and
//! [`MsrPermissionMap::allow`] open single ports / MSRs, and refuse the ones a guest must never
//! reach directly (PCI configuration ports, EFER, the SVM MSRs).
use core::fmt;

/// 12 KiB: one bit per port for 64 Ki ports, plus room for an access that runs past 0xFFFF.
pub const IOPM_SIZE: usize = 12 * 1024;
/// 8 KiB: two bits per MSR for three ranges of 8 Ki MSRs, and a reserved quarter.
pub const MSRPM_SIZE: usize = 8 * 1024;

/// Ports that stay intercepted: PCI configuration address (0xCF8) and data (0xCFC–0xCFF) are
/// answered by the virtual PCI bus.
pub const PCI_CONFIG_PORTS: core::ops::RangeInclusive<u16> = 0xCF8..=0xCFF;

/// MSRs a guest never reaches directly (§15.30, §15.5.1): EFER (SVME), VM_CR, VM_HSAVE_PA,
/// SYSCFG, APIC_BASE.
pub const PROTECTED_MSRS: [u32; 5] = [0xC000_0080, 0xC001_0114, 0xC001_0117, 0xC001_0010, 0x1B];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PermissionError {
    /// The port is one the virtual PCI bus answers.
    PciConfigPort(u16),
    /// The MSR is host state or SVM control.
    ProtectedMsr(u32),
    /// The MSR has no bits in the map: it is always intercepted.
    MsrOutsideMap(u32),
}

impl fmt::Display for PermissionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PermissionError::PciConfigPort(p) => write!(
                f,
                "port {p:#x} is PCI configuration space and stays intercepted"
            ),
            PermissionError::ProtectedMsr(m) => {
                write!(f, "MSR {m:#x} is host or SVM state and stays intercepted")
            }
            PermissionError::MsrOutsideMap(m) => {
                write!(f, "MSR {m:#x} lies outside the MSR permission map's ranges")
            }
        }
    }
}

/// The I/O permission map; page-aligned so it can be handed to the CPU where it lies.
#[repr(C, align(4096))]
pub struct IoPermissionMap {
    bits: [u8; IOPM_SIZE],
}

impl IoPermissionMap {
    pub const fn intercept_all() -> IoPermissionMap {
        IoPermissionMap {
            bits: [0xFF; IOPM_SIZE],
        }
    }

    /// Lets the guest access `port` directly.
    pub fn allow(&mut self, port: u16) -> Result<(), PermissionError> {
        if PCI_CONFIG_PORTS.contains(&port) {
            return Err(PermissionError::PciConfigPort(port));
        }
        self.bits[usize::from(port / 8)] &= !(1 << (port % 8));
        Ok(())
    }

    /// Whether an access of `size` bytes at `port` exits: the CPU checks the bit of every
    /// byte the access touches (§15.10.1).
    pub fn intercepts(&self, port: u16, size: u8) -> bool {
        (0..usize::from(size.max(1))).any(|i| {
            let p = usize::from(port) + i;
            self.bits[p / 8] & (1 << (p % 8)) != 0
        })
    }

    pub fn as_bytes(&self) -> &[u8; IOPM_SIZE] {
        &self.bits
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrAccess {
    Read,
    Write,
}

/// The MSR permission map; page-aligned.
#[repr(C, align(4096))]
pub struct MsrPermissionMap {
    bits: [u8; MSRPM_SIZE],
}

/// The bit (counted from byte 0) for `msr`'s read access; its write bit is the next one.
/// Table 15-7: 0000_0000–0000_1FFF at bytes 0x000–0x7FF, C000_0000–C000_1FFF at 0x800–0xFFF,
/// C001_0000–C001_1FFF at 0x1000–0x17FF.
fn msr_bit(msr: u32) -> Option<usize> {
    let (base, offset) = match msr {
        0x0000_0000..=0x0000_1FFF => (0x000, msr),
        0xC000_0000..=0xC000_1FFF => (0x800, msr - 0xC000_0000),
        0xC001_0000..=0xC001_1FFF => (0x1000, msr - 0xC001_0000),
        _ => return None,
    };
    Some(base * 8 + offset as usize * 2)
}

impl MsrPermissionMap {
    pub const fn intercept_all() -> MsrPermissionMap {
        MsrPermissionMap {
            bits: [0xFF; MSRPM_SIZE],
        }
    }

    pub fn allow(&mut self, msr: u32, access: MsrAccess) -> Result<(), PermissionError> {
        if PROTECTED_MSRS.contains(&msr) {
            return Err(PermissionError::ProtectedMsr(msr));
        }
        let bit = msr_bit(msr).ok_or(PermissionError::MsrOutsideMap(msr))? + access as usize;
        self.bits[bit / 8] &= !(1 << (bit % 8));
        Ok(())
    }

    /// Whether the access exits (an MSR outside the three ranges always does).
    pub fn intercepts(&self, msr: u32, access: MsrAccess) -> bool {
        msr_bit(msr).is_none_or(|b| {
            let bit = b + access as usize;
            self.bits[bit / 8] & (1 << (bit % 8)) != 0
        })
    }

    pub fn as_bytes(&self) -> &[u8; MSRPM_SIZE] {
        &self.bits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_bits(bytes: &[u8]) -> Vec<usize> {
        (0..bytes.len() * 8)
            .filter(|b| bytes[b / 8] & (1 << (b % 8)) != 0)
            .collect()
    }

    #[test]
    fn io_map_starts_all_intercepted_and_allow_clears_exactly_the_ports_bit() {
        let mut m = Box::new(IoPermissionMap::intercept_all());
        assert_eq!(set_bits(m.as_bytes()).len(), IOPM_SIZE * 8);
        for port in [0u16, 7, 8, 0x60, 0x3F8, 0xCF7, 0xD00, 0xFFFF] {
            m.allow(port).unwrap();
        }
        // §15.10.1: "port n is bit (n mod 8) of byte (n / 8)", restated here.
        let clear: Vec<usize> = (0..IOPM_SIZE * 8)
            .filter(|b| m.as_bytes()[b / 8] & (1 << (b % 8)) == 0)
            .collect();
        assert_eq!(clear, vec![0, 7, 8, 0x60, 0x3F8, 0xCF7, 0xD00, 0xFFFF]);
        assert!(!m.intercepts(0x60, 1));
        assert!(m.intercepts(0x60, 2), "0x61 is still intercepted");
        assert!(
            m.intercepts(0xFFFF, 2),
            "the byte past 0xFFFF lies in the third page"
        );
    }

    #[test]
    fn pci_config_ports_stay_intercepted() {
        let mut m = Box::new(IoPermissionMap::intercept_all());
        for port in 0xCF8..=0xCFFu16 {
            assert_eq!(m.allow(port), Err(PermissionError::PciConfigPort(port)));
            assert!(m.intercepts(port, 1));
        }
        assert!(m.intercepts(0xCFC, 4));
    }

    #[test]
    fn msr_map_bits_follow_table_15_7() {
        let mut m = Box::new(MsrPermissionMap::intercept_all());
        let cases = [
            (0x0000_0010u32, MsrAccess::Read),
            (0x0000_1FFF, MsrAccess::Write),
            (0xC000_0100, MsrAccess::Read),
            (0xC000_0081, MsrAccess::Write),
            (0xC001_0015, MsrAccess::Read),
            (0xC001_1FFF, MsrAccess::Write),
        ];
        for (msr, access) in cases {
            m.allow(msr, access).unwrap();
        }
        // Written independently from the APM: byte offset = range base + (msr - range start)
        // * 2 / 8; the read bit is 2 * (msr mod 4), the write bit the one above it.
        let expected: Vec<usize> = {
            let mut v: Vec<usize> = cases
                .iter()
                .map(|&(msr, access)| {
                    let (range_byte, first) = match msr >> 16 {
                        0x0000 => (0x000, 0x0000_0000),
                        0xC000 => (0x800, 0xC000_0000),
                        _ => (0x1000, 0xC001_0000),
                    };
                    let n = (msr - first) as usize;
                    let byte = range_byte + n / 4;
                    let bit = 2 * (n % 4) + usize::from(access == MsrAccess::Write);
                    byte * 8 + bit
                })
                .collect();
            v.sort();
            v
        };
        let clear: Vec<usize> = (0..MSRPM_SIZE * 8)
            .filter(|b| m.as_bytes()[b / 8] & (1 << (b % 8)) == 0)
            .collect();
        assert_eq!(clear, expected);
        assert!(!m.intercepts(0xC000_0100, MsrAccess::Read));
        assert!(m.intercepts(0xC000_0100, MsrAccess::Write));
        assert!(
            m.intercepts(0x4000_0000, MsrAccess::Read),
            "outside the map always exits"
        );
    }

    #[test]
    fn protected_and_unmapped_msrs_are_refused() {
        let mut m = Box::new(MsrPermissionMap::intercept_all());
        for msr in PROTECTED_MSRS {
            assert_eq!(
                m.allow(msr, MsrAccess::Read),
                Err(PermissionError::ProtectedMsr(msr))
            );
            assert!(m.intercepts(msr, MsrAccess::Read) && m.intercepts(msr, MsrAccess::Write));
        }
        assert_eq!(
            m.allow(0xC002_0000, MsrAccess::Read),
            Err(PermissionError::MsrOutsideMap(0xC002_0000))
        );
        assert_eq!(set_bits(m.as_bytes()).len(), MSRPM_SIZE * 8);
    }
}
