use core::fmt;

/// A PCI bus/device/function: the 16-bit requester ID a function puts on its DMA requests.
///
/// Layout (PCI Express Base Spec, "Requester ID"): bus in bits 15:8, device in 7:3,
/// function in 2:0 — the same index both IOMMUs use for their context / device tables.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Bdf(u16);

impl Bdf {
    /// `None` when `device > 31` or `function > 7`.
    pub const fn new(bus: u8, device: u8, function: u8) -> Option<Bdf> {
        if device > 31 || function > 7 {
            return None;
        }
        Some(Bdf(((bus as u16) << 8)
            | ((device as u16) << 3)
            | function as u16))
    }

    pub const fn from_requester_id(rid: u16) -> Bdf {
        Bdf(rid)
    }

    pub const fn requester_id(self) -> u16 {
        self.0
    }

    pub const fn bus(self) -> u8 {
        (self.0 >> 8) as u8
    }

    pub const fn device(self) -> u8 {
        ((self.0 >> 3) & 0x1f) as u8
    }

    pub const fn function(self) -> u8 {
        (self.0 & 0x7) as u8
    }

    /// Device and function packed as one byte (the "devfn" of Linux and Xen).
    pub const fn devfn(self) -> u8 {
        (self.0 & 0xff) as u8
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02x}:{:02x}.{}",
            self.bus(),
            self.device(),
            self.function()
        )
    }
}

impl fmt::Debug for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bdf({self})")
    }
}

/// A PCI segment (PCI domain) plus [`Bdf`]: unique across the whole machine.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Sbdf {
    pub segment: u16,
    pub bdf: Bdf,
}

impl Sbdf {
    pub const fn new(segment: u16, bdf: Bdf) -> Sbdf {
        Sbdf { segment, bdf }
    }
}

impl fmt::Display for Sbdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{}", self.segment, self.bdf)
    }
}

impl fmt::Debug for Sbdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sbdf({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bdf_round_trips_and_formats() {
        let bdf = Bdf::new(0x3a, 0x1f, 7).expect("valid");
        assert_eq!(bdf.requester_id(), 0x3aff);
        assert_eq!((bdf.bus(), bdf.device(), bdf.function()), (0x3a, 0x1f, 7));
        assert_eq!(bdf.to_string(), "3a:1f.7");
        assert_eq!(Sbdf::new(1, bdf).to_string(), "0001:3a:1f.7");
    }

    #[test]
    fn bdf_rejects_out_of_range_fields() {
        assert_eq!(Bdf::new(0, 32, 0), None);
        assert_eq!(Bdf::new(0, 0, 8), None);
    }
}
