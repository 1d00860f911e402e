//! The two capability lists: the one in the first 256 bytes (PCI Local Bus Spec 3.0 §6.7) and
//! the PCI Express extended list from offset 0x100 (PCIe Base §7.6). Both are linked lists in
//! device registers, so both walks share one guard against pointers into the header and loops.
use core::fmt;

use lazaret_types::Sbdf;

use crate::function::header_type;
use crate::regs;
use crate::{ConfigSpace, PciError};

/// Capabilities live between the 64-byte header and the end of the 256-byte space, dword
/// aligned, so at most (256 - 64) / 4 = 48 fit: a longer walk has met a loop (Linux's
/// `PCI_FIND_CAP_TTL`).
const MAX_CAPABILITIES: u16 = 48;
const FIRST_CAPABILITY: u16 = 0x40;
/// The two low bits of every capability pointer are reserved; software masks them (§6.7).
const POINTER_MASK: u8 = 0xfc;
/// Extended capabilities are at least 8 bytes, in 0x100..0x1000: at most 480 of them.
const MAX_EXTENDED_CAPABILITIES: u16 = (4096 - 256) / 8;

/// Which of the two lists a walk or an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapabilityList {
    Standard,
    Extended,
}

impl fmt::Display for CapabilityList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CapabilityList::Standard => "capability",
            CapabilityList::Extended => "extended capability",
        })
    }
}

/// One entry of the standard capability list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capability {
    pub id: u8,
    /// Offset of the capability in configuration space.
    pub offset: u8,
}

/// One entry of the extended capability list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtendedCapability {
    pub id: u16,
    pub version: u8,
    pub offset: u16,
}

/// The loop guard both walks share: the next offset, how many steps are left, and the lowest
/// offset a pointer may hold.
struct Cursor {
    function: Sbdf,
    list: CapabilityList,
    next: u16,
    budget: u16,
    floor: u16,
}

impl Cursor {
    /// The next offset to read, `None` at the end, or the error that ends a malformed list.
    fn advance(&mut self) -> Option<Result<u16, PciError>> {
        let offset = self.next;
        if offset == 0 {
            return None;
        }
        let (function, list) = (self.function, self.list);
        if offset < self.floor {
            self.next = 0;
            return Some(Err(PciError::CapabilityPointerOutOfRange {
                function,
                list,
                pointer: offset,
            }));
        }
        if self.budget == 0 {
            self.next = 0;
            return Some(Err(PciError::CapabilityLoop { function, list }));
        }
        self.budget -= 1;
        Some(Ok(offset))
    }
}

/// Walks a function's standard capability list; yields each capability, then at most one
/// error for a malformed list (a pointer into the header, or a loop), then stops.
pub struct Capabilities<'a, C: ConfigSpace + ?Sized> {
    cfg: &'a C,
    cursor: Cursor,
}

/// The standard capability list of `function`, empty when it has none (or is absent).
pub fn capabilities<C: ConfigSpace + ?Sized>(cfg: &C, function: Sbdf) -> Capabilities<'_, C> {
    let layout = header_type(cfg, function) & regs::HEADER_LAYOUT_MASK;
    Capabilities::new(cfg, function, layout)
}

/// Offset of the first capability with `id`, or `None` (also when the list is malformed
/// before reaching it).
pub fn find_capability<C: ConfigSpace + ?Sized>(cfg: &C, function: Sbdf, id: u8) -> Option<u8> {
    capabilities(cfg, function)
        .map_while(Result::ok)
        .find(|c| c.id == id)
        .map(|c| c.offset)
}

impl<'a, C: ConfigSpace + ?Sized> Capabilities<'a, C> {
    /// `layout` (Header Type bits 6:0) says where the list starts.
    pub(crate) fn new(cfg: &'a C, function: Sbdf, layout: u8) -> Self {
        let pointer_at = match layout {
            0 | 1 => Some(regs::CAPABILITY_POINTER),
            2 => Some(regs::CARDBUS_CAPABILITY_POINTER),
            _ => None,
        };
        let present = cfg.read16(function, regs::ID) != regs::VENDOR_ABSENT
            && cfg.read32(function, regs::COMMAND) & regs::STATUS_CAPABILITIES_LIST != 0;
        let next = match pointer_at {
            Some(at) if present => cfg.read8(function, at) & POINTER_MASK,
            _ => 0,
        };
        Capabilities {
            cfg,
            cursor: Cursor {
                function,
                list: CapabilityList::Standard,
                next: u16::from(next),
                budget: MAX_CAPABILITIES,
                floor: FIRST_CAPABILITY,
            },
        }
    }
}

impl<C: ConfigSpace + ?Sized> Iterator for Capabilities<'_, C> {
    type Item = Result<Capability, PciError>;

    fn next(&mut self) -> Option<Self::Item> {
        let offset = match self.cursor.advance()? {
            Ok(offset) => offset,
            Err(error) => return Some(Err(error)),
        };
        let header = self.cfg.read16(self.cursor.function, offset);
        let id = header as u8;
        if id == 0xff {
            // All ones: the function stopped answering mid-walk (surprise removal).
            self.cursor.next = 0;
            return None;
        }
        self.cursor.next = u16::from((header >> 8) as u8 & POINTER_MASK);
        Some(Ok(Capability {
            id,
            offset: offset as u8,
        }))
    }
}

/// Walks a function's extended capability list (only meaningful for PCI Express functions
/// reached through ECAM; through port I/O it reads all ones and is empty).
pub struct ExtendedCapabilities<'a, C: ConfigSpace + ?Sized> {
    cfg: &'a C,
    cursor: Cursor,
}

/// The extended capability list of `function`.
pub fn extended_capabilities<C: ConfigSpace + ?Sized>(
    cfg: &C,
    function: Sbdf,
) -> ExtendedCapabilities<'_, C> {
    ExtendedCapabilities {
        cfg,
        cursor: Cursor {
            function,
            list: CapabilityList::Extended,
            next: regs::EXTENDED_CAPABILITIES,
            budget: MAX_EXTENDED_CAPABILITIES,
            floor: regs::EXTENDED_CAPABILITIES,
        },
    }
}

/// Offset of the first extended capability with `id`, or `None`.
pub fn find_extended_capability<C: ConfigSpace + ?Sized>(
    cfg: &C,
    function: Sbdf,
    id: u16,
) -> Option<u16> {
    extended_capabilities(cfg, function)
        .map_while(Result::ok)
        .find(|c| c.id == id)
        .map(|c| c.offset)
}

impl<C: ConfigSpace + ?Sized> Iterator for ExtendedCapabilities<'_, C> {
    type Item = Result<ExtendedCapability, PciError>;

    fn next(&mut self) -> Option<Self::Item> {
        let offset = match self.cursor.advance()? {
            Ok(offset) => offset,
            Err(error) => return Some(Err(error)),
        };
        // Header: ID 15:0, version 19:16, next offset 31:20 (low two bits reserved, §7.6.3).
        let header = self.cfg.read32(self.cursor.function, offset);
        if header == 0 || header == u32::MAX {
            // 0: no extended capabilities; all ones: no extended space (or the function left).
            self.cursor.next = 0;
            return None;
        }
        self.cursor.next = ((header >> 20) as u16) & !3;
        Some(Ok(ExtendedCapability {
            id: header as u16,
            version: ((header >> 16) & 0xf) as u8,
            offset,
        }))
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

    fn fake(f: FakeFunction) -> FakeConfigSpace {
        let mut cfg = FakeConfigSpace::new();
        cfg.insert(at(), f);
        cfg
    }

    fn walk(cfg: &FakeConfigSpace) -> Vec<Result<Capability, PciError>> {
        capabilities(cfg, at()).collect()
    }

    #[test]
    fn walks_the_list_and_finds_by_id() {
        let cfg = fake(
            FakeFunction::endpoint(0x8086, 0x10d3, 0x020000)
                .capability(0x01, 0x0003, &[0])
                .pcie(0, true)
                .capability(0x11, 0x0004, &[0, 0]),
        );
        let ids: Vec<_> = walk(&cfg)
            .into_iter()
            .map(|c| c.map(|c| (c.id, c.offset)))
            .collect();
        assert_eq!(
            ids,
            vec![Ok((0x01, 0x40)), Ok((0x10, 0x48)), Ok((0x11, 0x58))]
        );
        assert_eq!(find_capability(&cfg, at(), 0x11), Some(0x58));
        assert_eq!(find_capability(&cfg, at(), 0x05), None);
    }

    #[test]
    fn no_list_without_the_status_bit() {
        let cfg = fake(
            FakeFunction::endpoint(0x8086, 0x10d3, 0x020000)
                .raw(regs::CAPABILITY_POINTER, 0x40)
                .raw(0x40, 0x0001),
        );
        assert!(walk(&cfg).is_empty());
    }

    #[test]
    fn a_looping_list_ends_after_48_entries_with_an_error() {
        let cfg = fake(
            FakeFunction::endpoint(0x1234, 0x0bad, 0x00ff00)
                .capability(0x09, 0, &[])
                .capability(0x05, 0, &[])
                .capability_next(0x44, 0x40),
        );
        let found = walk(&cfg);
        assert_eq!(found.len(), 49);
        assert_eq!(
            found.last(),
            Some(&Err(PciError::CapabilityLoop {
                function: at(),
                list: CapabilityList::Standard
            }))
        );
        assert_eq!(find_capability(&cfg, at(), 0x10), None);
    }

    #[test]
    fn a_pointer_into_the_header_is_rejected_and_reserved_bits_masked() {
        let cfg = fake(
            FakeFunction::endpoint(0x1234, 0x0bad, 0x00ff00)
                .capability(0x09, 0, &[])
                .capability_next(0x40, 0x13),
        );
        assert_eq!(
            walk(&cfg),
            vec![
                Ok(Capability {
                    id: 0x09,
                    offset: 0x40
                }),
                Err(PciError::CapabilityPointerOutOfRange {
                    function: at(),
                    list: CapabilityList::Standard,
                    pointer: 0x10
                })
            ]
        );
    }

    /// Extended capability header: id, version 1, next.
    fn ext(id: u16, next: u16) -> u32 {
        u32::from(id) | (1 << 16) | (u32::from(next) << 20)
    }

    #[test]
    fn extended_list_is_walked_from_0x100() {
        let cfg = fake(
            FakeFunction::endpoint(0x8086, 0x10d3, 0x020000)
                .raw(0x100, ext(0x0001, 0x148))
                .raw(0x148, ext(0x000d, 0x160))
                .raw(0x160, ext(0x000e, 0)),
        );
        let found: Vec<_> = extended_capabilities(&cfg, at())
            .map(|c| c.map(|c| (c.id, c.version, c.offset)))
            .collect();
        assert_eq!(
            found,
            vec![
                Ok((0x1, 1, 0x100)),
                Ok((0xd, 1, 0x148)),
                Ok((0xe, 1, 0x160))
            ]
        );
        assert_eq!(find_extended_capability(&cfg, at(), 0x000d), Some(0x148));
        assert_eq!(find_extended_capability(&cfg, at(), 0x0010), None);
    }

    #[test]
    fn extended_list_is_empty_without_extended_space_and_guarded_against_loops() {
        let plain = fake(FakeFunction::endpoint(0x8086, 0x7010, 0x010180));
        assert_eq!(extended_capabilities(&plain, at()).count(), 0);
        let nobody = Sbdf::new(0, Bdf::new(0, 9, 0).unwrap());
        assert_eq!(extended_capabilities(&plain, nobody).count(), 0);

        let looping = fake(
            FakeFunction::endpoint(0x8086, 0x10d3, 0x020000)
                .raw(0x100, ext(0x0001, 0x140))
                .raw(0x140, ext(0x000d, 0x100)),
        );
        let found: Vec<_> = extended_capabilities(&looping, at()).collect();
        assert_eq!(found.len(), usize::from(MAX_EXTENDED_CAPABILITIES) + 1);
        assert_eq!(
            found.last(),
            Some(&Err(PciError::CapabilityLoop {
                function: at(),
                list: CapabilityList::Extended
            }))
        );

        let backwards =
            fake(FakeFunction::endpoint(0x8086, 0x10d3, 0x020000).raw(0x100, ext(0x0001, 0x0fc)));
        assert_eq!(
            extended_capabilities(&backwards, at()).last(),
            Some(Err(PciError::CapabilityPointerOutOfRange {
                function: at(),
                list: CapabilityList::Extended,
                pointer: 0xfc
            }))
        );
    }
}
