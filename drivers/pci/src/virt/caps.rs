//! The capability list as the guest sees it (PCI Local Bus Spec 3.0 §6.7): the device's, with
//! MSI-X (and any MSI capability after the first) unlinked and reading as zeros until MSI-X is
//! virtualised too, so an OS finds one MSI capability — the virtual one — and nothing else that
//! programs interrupts.
//!
//! The list is walked from the device on each access that can reach it (bounded like every
//! walk, see [`crate::capabilities`]): `VirtualBus::new` reads nothing, and the walk allocates
//! nothing.
use lazaret_types::Sbdf;

use super::msi::MsiLayout;
use crate::{cap_id, capabilities, regs, Capability, ConfigSpace};

/// As many entries as fit between the header and the end of the 256-byte space.
const MAX: usize = 48;
/// The first capability sits right after the 64-byte header.
const FIRST: u16 = 0x40;
/// MSI-X is three dwords: header and control, table, PBA (PCI Local Bus Spec 3.0 §6.8.2).
const MSIX_DWORDS: u16 = 3;

/// What one dword of a function's configuration space is, as far as capabilities go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    /// Not a capability register: the caller's rules apply.
    Other,
    /// The dword holding Capabilities Pointer (0x34): its low byte reads `first`.
    Pointer { first: u8 },
    /// Status is in the dword at 0x04: Capabilities List must read clear when nothing is left.
    Command { any_visible: bool },
    /// The header dword of a visible capability other than MSI: Next reads `next`.
    Header { next: u8 },
    /// A dword of the virtual MSI capability, `relative` bytes into it.
    Msi {
        layout: MsiLayout,
        relative: u16,
        next: u8,
    },
    /// A dword of a hidden capability: reads zero, writes dropped.
    Hidden,
}

/// The real capability list of `real`, without allocating.
struct Walk {
    entries: [Capability; MAX],
    len: usize,
    /// Index of the capability shown as the MSI capability.
    msi: Option<usize>,
}

impl Walk {
    fn new<C: ConfigSpace + ?Sized>(cfg: &C, real: Sbdf) -> Walk {
        let blank = Capability { id: 0, offset: 0 };
        let mut walk = Walk {
            entries: [blank; MAX],
            len: 0,
            msi: None,
        };
        for (slot, cap) in walk
            .entries
            .iter_mut()
            .zip(capabilities(cfg, real).map_while(Result::ok))
        {
            *slot = cap;
            walk.len += 1;
        }
        walk.msi = walk.caps().iter().position(|c| c.id == cap_id::MSI);
        walk
    }

    fn caps(&self) -> &[Capability] {
        self.entries.get(..self.len).unwrap_or(&[])
    }

    fn hidden(&self, n: usize) -> bool {
        self.caps()
            .get(n)
            .is_some_and(|c| c.id == cap_id::MSIX || (c.id == cap_id::MSI && Some(n) != self.msi))
    }

    /// The offset of the first visible capability at or after position `from`, or 0.
    fn visible_from(&self, from: usize) -> u8 {
        (from..self.len)
            .find(|&n| !self.hidden(n))
            .and_then(|n| self.caps().get(n))
            .map_or(0, |c| c.offset)
    }

    /// How many dwords the capability at position `n` spans, for those whose registers are
    /// virtual or hidden.
    fn dwords<C: ConfigSpace + ?Sized>(&self, cfg: &C, real: Sbdf, n: usize) -> u16 {
        match self.caps().get(n) {
            Some(c) if c.id == cap_id::MSIX => MSIX_DWORDS,
            Some(c) if c.id == cap_id::MSI => MsiLayout::read(cfg, real, c.offset).dwords(),
            _ => 1,
        }
    }
}

/// What dword `offset` of `real` is in the guest's capability list.
pub fn region<C: ConfigSpace + ?Sized>(cfg: &C, real: Sbdf, offset: u16) -> Region {
    if offset != regs::COMMAND && offset != regs::CAPABILITY_POINTER && offset < FIRST {
        return Region::Other;
    }
    let walk = Walk::new(cfg, real);
    match offset {
        regs::COMMAND => {
            return Region::Command {
                any_visible: walk.visible_from(0) != 0,
            }
        }
        regs::CAPABILITY_POINTER => {
            return Region::Pointer {
                first: walk.visible_from(0),
            }
        }
        _ => {}
    }
    for (n, cap) in walk.caps().iter().enumerate() {
        let start = u16::from(cap.offset);
        let span = walk.dwords(cfg, real, n) * 4;
        let Some(relative) = offset.checked_sub(start).filter(|&r| r < span) else {
            continue;
        };
        let next = walk.visible_from(n + 1);
        if walk.hidden(n) {
            return Region::Hidden;
        }
        if Some(n) == walk.msi {
            let layout = MsiLayout::read(cfg, real, cap.offset);
            return Region::Msi {
                layout,
                relative,
                next,
            };
        }
        if relative == 0 {
            return Region::Header { next };
        }
    }
    Region::Other
}
