//! The simulated unit's translation caches: a context cache keyed by source-id (each entry
//! holding the decoded context with its DID), an IOTLB tagged by (DID, page) and a
//! paging-structure cache of non-leaf entries tagged by (DID, level, IOVA range). Filled by
//! translations, consulted first, dropped only by the invalidations §6.5.1 / §6.5.2 say drop
//! them. Unbounded: real caches may evict, but a model that keeps every entry until it is
//! invalidated is the one that exposes a missing invalidation.
//!
//! Invalidation requests are decoded here from the spec's layouts (§6.5.2.1 / §6.5.2.3
//! descriptors, §10.4.7 / §10.4.8 registers), not with the driver's encoders.

use alloc::collections::BTreeMap;

use lazaret_types::{Bdf, PhysAddr, PhysMem};

use crate::walker::{self, Context, ContextMode, Fault, Leaf, TableStep, WalkStart, WalkerConfig};

/// One invalidation request as the hardware understands it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    ContextGlobal,
    ContextDomain {
        did: u16,
    },
    /// Source-id `sid` with `fm` low function bits masked (FM 0–3), tagged `did`.
    ContextDevice {
        did: u16,
        sid: u16,
        fm: u8,
    },
    IotlbGlobal,
    IotlbDomain {
        did: u16,
    },
    /// 2^am pages from `addr` (aligned down to that size), of `did`; `ih` (invalidation
    /// hint): only leaf entries changed, paging-structure caches may stay.
    IotlbPages {
        did: u16,
        addr: u64,
        am: u8,
        ih: bool,
    },
}

impl Request {
    /// A context-cache (type 1) or IOTLB (type 2) invalidation descriptor; `None` for a
    /// reserved granularity (the queue then reports IQE). Other types are not requests.
    pub fn from_descriptor(d: u128) -> Option<Request> {
        let lo = d as u64;
        let hi = (d >> 64) as u64;
        let g = (lo >> 4) & 3;
        let did = (lo >> 16) as u16;
        match (lo & 0xf, g) {
            (1, 1) => Some(Request::ContextGlobal),
            (1, 2) => Some(Request::ContextDomain { did }),
            (1, 3) => Some(Request::ContextDevice {
                did,
                sid: (lo >> 32) as u16,
                fm: ((lo >> 48) & 3) as u8,
            }),
            (2, 1) => Some(Request::IotlbGlobal),
            (2, 2) => Some(Request::IotlbDomain { did }),
            (2, 3) => Some(Request::IotlbPages {
                did,
                addr: hi & !0xfff,
                am: (hi & 0x3f) as u8,
                ih: hi & (1 << 6) != 0,
            }),
            _ => None,
        }
    }

    /// CCMD (§10.4.7): 62:61 CIRG, 33:32 FM, 31:16 SID, 15:0 DID.
    pub fn from_ccmd(v: u64) -> Option<Request> {
        let did = v as u16;
        match (v >> 61) & 3 {
            1 => Some(Request::ContextGlobal),
            2 => Some(Request::ContextDomain { did }),
            3 => Some(Request::ContextDevice {
                did,
                sid: (v >> 16) as u16,
                fm: ((v >> 32) & 3) as u8,
            }),
            _ => None,
        }
    }

    /// IOTLB register (§10.4.8.1): 61:60 IIRG, 47:32 DID; IVA (§10.4.8.2): 63:12 ADDR, 6 IH,
    /// 5:0 AM.
    pub fn from_iotlb_register(v: u64, iva: u64) -> Option<Request> {
        let did = (v >> 32) as u16;
        match (v >> 60) & 3 {
            1 => Some(Request::IotlbGlobal),
            2 => Some(Request::IotlbDomain { did }),
            3 => Some(Request::IotlbPages {
                did,
                addr: iva & !0xfff,
                am: (iva & 0x3f) as u8,
                ih: iva & (1 << 6) != 0,
            }),
            _ => None,
        }
    }
}

/// What the unit is programmed with: capabilities, the latched root, CAP.CM.
pub struct Programmed {
    pub cfg: WalkerConfig,
    pub root: PhysAddr,
    pub caching_mode: bool,
}

/// A cached context: its DID tag and what the entry said. Under CAP.CM a not-present or
/// faulting entry is cached too, tagged with DID 0 (§6.1).
type CachedContext = (u16, Result<Context, Fault>);

#[derive(Default)]
pub struct Caches {
    context: BTreeMap<u16, CachedContext>,
    /// (DID, page bits, IOVA >> page bits) → leaf.
    iotlb: BTreeMap<(u16, u32, u64), Leaf>,
    /// Paging-structure cache: (DID, level, IOVA >> bits one entry of that level maps) → the
    /// next table and the path's permissions.
    structures: BTreeMap<(u16, u32, u64), TableStep>,
}

/// Bits of IOVA one entry at `level` maps.
const fn entry_bits(level: u32) -> u32 {
    12 + 9 * (level - 1)
}

impl Caches {
    /// A translation through the caches, filling them on a miss.
    pub fn translate<M: PhysMem + ?Sized>(
        &mut self,
        mem: &M,
        unit: &Programmed,
        source_id: Bdf,
        iova: u64,
        write: bool,
    ) -> Result<PhysAddr, Fault> {
        let rid = source_id.requester_id();
        let (did, context) = match self.context.get(&rid) {
            Some(cached) => *cached,
            None => {
                let read = walker::read_context(&unit.cfg, mem, unit.root, source_id);
                let cached = match read {
                    Ok(c) => (c.domain_id, Ok(c)),
                    Err(f) if unit.caching_mode => (0, Err(f)),
                    Err(f) => return Err(f),
                };
                self.context.insert(rid, cached);
                cached
            }
        };
        let (table, levels) = match context?.mode {
            ContextMode::PassThrough => return Ok(PhysAddr(iova)),
            ContextMode::Translated { table, levels } => (table, levels),
        };
        for bits in [12, 21, 30] {
            if let Some(leaf) = self.iotlb.get(&(did, bits, iova >> bits)) {
                if leaf.allows(write) {
                    return Ok(leaf.address(iova));
                }
            }
        }
        walker::check_width(&unit.cfg, levels, iova)?;
        // Resume from the lowest cached non-leaf entry whose permissions allow the access.
        let cached = (2..=levels).find_map(|level| {
            let step = self
                .structures
                .get(&(did, level, iova >> entry_bits(level)))?;
            let allowed = if write { step.writable } else { step.readable };
            allowed.then_some(*step)
        });
        let start = match cached {
            Some(step) => WalkStart {
                table: step.next,
                level: step.level - 1,
                readable: step.readable,
                writable: step.writable,
            },
            None => WalkStart {
                table,
                level: levels,
                readable: true,
                writable: true,
            },
        };
        let structures = &mut self.structures;
        let leaf = walker::walk_from(&unit.cfg, mem, start, iova, write, &mut |step| {
            structures.insert((did, step.level, iova >> entry_bits(step.level)), step);
        })?;
        self.iotlb
            .insert((did, leaf.page_bits, iova >> leaf.page_bits), leaf);
        Ok(leaf.address(iova))
    }

    /// Drops exactly what `request` invalidates.
    pub fn invalidate(&mut self, request: Request) {
        match request {
            Request::ContextGlobal => self.context.clear(),
            Request::ContextDomain { did } => self.context.retain(|_, (d, _)| *d != did),
            Request::ContextDevice { did, sid, fm } => {
                // FM masks function-number bits: 1 → bit 2, 2 → bits 2:1, 3 → bits 2:0.
                let masked: u16 = [0, 0b100, 0b110, 0b111][usize::from(fm & 3)];
                self.context
                    .retain(|rid, (d, _)| !(*d == did && (rid ^ sid) & !masked == 0));
            }
            Request::IotlbGlobal => {
                self.iotlb.clear();
                self.structures.clear();
            }
            Request::IotlbDomain { did } => {
                self.iotlb.retain(|(d, _, _), _| *d != did);
                self.structures.retain(|(d, _, _), _| *d != did);
            }
            Request::IotlbPages { did, addr, am, ih } => {
                let size_bits = 12 + u32::from(am.min(52));
                let start = addr & !((1u64 << size_bits) - 1);
                let end = start.saturating_add(1u64 << size_bits);
                let overlaps = |d: u16, bits: u32, index: u64| {
                    let lo = index << bits;
                    let hi = lo.saturating_add(1u64 << bits);
                    d == did && lo < end && start < hi
                };
                self.iotlb
                    .retain(|&(d, bits, page), _| !overlaps(d, bits, page));
                // IH = 1: only leaves changed, cached non-leaf entries may stay (§6.5.2.3).
                if !ih {
                    self.structures
                        .retain(|&(d, level, index), _| !overlaps(d, entry_bits(level), index));
                }
            }
        }
    }

    pub fn contexts(&self) -> usize {
        self.context.len()
    }

    /// IOTLB entries tagged with `did`.
    #[cfg(test)]
    pub fn translations_of(&self, did: u16) -> usize {
        self.iotlb.keys().filter(|(d, _, _)| *d == did).count()
    }

    pub fn translations(&self) -> usize {
        self.iotlb.len()
    }
}
