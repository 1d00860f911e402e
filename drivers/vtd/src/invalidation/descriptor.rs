//! What to invalidate, and its two encodings: queued-invalidation descriptors (§6.5.2) and the
//! register-based CCMD / IOTLB commands (§10.4.7, §10.4.8). One enum, so the kernel's
//! invalidation rules do not depend on which interface the unit has.

use lazaret_types::{Bdf, PhysAddr};

use crate::regs::Capabilities;

/// Context-cache invalidation granularity (§6.5.2.1, §10.4.7 CIRG).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextScope {
    Global,
    Domain {
        did: u16,
    },
    /// Entries of one requester ID (and, with a non-zero function mask, of its siblings:
    /// FM masks 1–3 low bits of the function number) tagged with `did`.
    Device {
        did: u16,
        source_id: Bdf,
        function_mask: u8,
    },
}

/// IOTLB invalidation granularity (§6.5.2.3, §10.4.8 IIRG).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IotlbScope {
    Global,
    Domain {
        did: u16,
    },
    /// 2^order pages from `addr` (aligned to that size). `leaf_only` is the IH hint: only
    /// leaf entries changed, cached paging structures may stay.
    Page {
        did: u16,
        addr: u64,
        order: u8,
        leaf_only: bool,
    },
}

impl IotlbScope {
    /// Page-selective when the unit supports it for this size (CAP.PSI, CAP.MAMV), else the
    /// whole domain: never less than what was asked.
    pub const fn pages_or_domain(cap: Capabilities, did: u16, addr: u64, order: u8) -> IotlbScope {
        if cap.psi()
            && order <= cap.mamv()
            && order < 52
            && addr & ((1u64 << (12 + order as u32)) - 1) == 0
        {
            IotlbScope::Page {
                did,
                addr,
                order,
                leaf_only: false,
            }
        } else {
            IotlbScope::Domain { did }
        }
    }
}

/// Interrupt entry cache invalidation granularity (§6.5.2.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterruptScope {
    /// Every cached IRTE (required after GCMD.SIRTP).
    Global,
    /// 2^`index_mask` entries from `index` (aligned to that count): IIDX / IM.
    Entries { index: u16, index_mask: u8 },
}

/// One invalidation request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalidation {
    Context(ContextScope),
    /// Interrupt entry cache: queued invalidation only (IR implies QI; there is no register
    /// interface for it).
    InterruptEntry(InterruptScope),
    /// `drain_reads` / `drain_writes`: DR/DW, wait for in-flight DMA (only if CAP.DRD/DWD).
    Iotlb {
        scope: IotlbScope,
        drain_reads: bool,
        drain_writes: bool,
    },
}

const TYPE_CONTEXT: u64 = 0x1;
const TYPE_IOTLB: u64 = 0x2;
const TYPE_INTERRUPT_ENTRY: u64 = 0x4;
const TYPE_WAIT: u64 = 0x5;

/// Register-command bits (§10.4.7, §10.4.8.1).
pub const CCMD_ICC: u64 = 1 << 63;
pub const IOTLB_IVT: u64 = 1 << 63;

/// Granularity field value shared by both encodings: 1 global, 2 domain, 3 device / page.
const fn context_granularity(s: &ContextScope) -> u64 {
    match s {
        ContextScope::Global => 1,
        ContextScope::Domain { .. } => 2,
        ContextScope::Device { .. } => 3,
    }
}

/// (DID, SID, FM) of a context scope.
const fn context_fields(s: &ContextScope) -> (u64, u64, u64) {
    match *s {
        ContextScope::Global => (0, 0, 0),
        ContextScope::Domain { did } => (did as u64, 0, 0),
        ContextScope::Device {
            did,
            source_id,
            function_mask,
        } => (
            did as u64,
            source_id.requester_id() as u64,
            function_mask as u64 & 3,
        ),
    }
}

const fn iotlb_granularity(s: &IotlbScope) -> u64 {
    match s {
        IotlbScope::Global => 1,
        IotlbScope::Domain { .. } => 2,
        IotlbScope::Page { .. } => 3,
    }
}

const fn iotlb_did(s: &IotlbScope) -> u64 {
    match *s {
        IotlbScope::Global => 0,
        IotlbScope::Domain { did } | IotlbScope::Page { did, .. } => did as u64,
    }
}

/// ADDR | IH | AM: the upper descriptor half of §6.5.2.3 and the IVA register of §10.4.8.2
/// share this layout.
const fn iotlb_address(s: &IotlbScope) -> u64 {
    match *s {
        IotlbScope::Page {
            addr,
            order,
            leaf_only,
            ..
        } => (addr & !0xfff) | ((leaf_only as u64) << 6) | (order as u64 & 0x3f),
        _ => 0,
    }
}

impl Invalidation {
    /// The 128-bit queued-invalidation descriptor.
    pub const fn descriptor(&self) -> u128 {
        match self {
            Invalidation::Context(s) => {
                let (did, sid, fm) = context_fields(s);
                let lo = TYPE_CONTEXT
                    | (context_granularity(s) << 4)
                    | (did << 16)
                    | (sid << 32)
                    | (fm << 48);
                lo as u128
            }
            Invalidation::Iotlb {
                scope,
                drain_reads,
                drain_writes,
            } => {
                let lo = TYPE_IOTLB
                    | (iotlb_granularity(scope) << 4)
                    | ((*drain_writes as u64) << 6)
                    | ((*drain_reads as u64) << 7)
                    | (iotlb_did(scope) << 16);
                (lo as u128) | ((iotlb_address(scope) as u128) << 64)
            }
            // §6.5.2.7: 4 G (0 global, 1 index-selective), 31:27 IM, 47:32 IIDX.
            Invalidation::InterruptEntry(InterruptScope::Global) => TYPE_INTERRUPT_ENTRY as u128,
            Invalidation::InterruptEntry(InterruptScope::Entries { index, index_mask }) => {
                let lo = TYPE_INTERRUPT_ENTRY
                    | (1 << 4)
                    | ((*index_mask as u64 & 0x1f) << 27)
                    | ((*index as u64) << 32);
                lo as u128
            }
        }
    }

    /// The register-based command: `(CCMD value)` or `(IVA value, IOTLB value)`; `None` for
    /// the interrupt entry cache, which has no register interface.
    pub const fn register_command(&self) -> Option<RegisterCommand> {
        Some(match self {
            Invalidation::InterruptEntry(_) => return None,
            Invalidation::Context(s) => {
                let (did, sid, fm) = context_fields(s);
                RegisterCommand::Context(
                    CCMD_ICC | (context_granularity(s) << 61) | (fm << 32) | (sid << 16) | did,
                )
            }
            Invalidation::Iotlb {
                scope,
                drain_reads,
                drain_writes,
            } => RegisterCommand::Iotlb {
                iva: iotlb_address(scope),
                command: IOTLB_IVT
                    | (iotlb_granularity(scope) << 60)
                    | ((*drain_reads as u64) << 49)
                    | ((*drain_writes as u64) << 48)
                    | (iotlb_did(scope) << 32),
            },
        })
    }
}

/// A register-based invalidation (§6.5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterCommand {
    Context(u64),
    Iotlb { iva: u64, command: u64 },
}

/// Invalidation wait descriptor (§6.5.2.8) with SW = 1: hardware writes `data` (32 bits) to
/// `status` once every earlier descriptor has completed. FN = 1 so that later descriptors wait
/// for it too.
pub const fn wait_descriptor(status: PhysAddr, data: u32) -> u128 {
    const SW: u64 = 1 << 5;
    const FN: u64 = 1 << 6;
    let lo = TYPE_WAIT | SW | FN | ((data as u64) << 32);
    (lo as u128) | (((status.0 & !3) as u128) << 64)
}

/// The invalidations owed after moving `bdf` away from domain `old_did` (design §4; the spec's
/// "guidance to software for invalidations" for a modified present context entry): the
/// device's context-cache entries tagged with the old DID, then the old domain's IOTLB
/// entries. They must take effect in that order: submitting both in one unfenced batch is
/// unsafe (see the module docs) — use [`super::SwitchBatch`] and [`crate::VtdUnit::flush`].
pub const fn owner_switch(bdf: Bdf, old_did: u16) -> [Invalidation; 2] {
    [
        Invalidation::Context(ContextScope::Device {
            did: old_did,
            source_id: bdf,
            function_mask: 0,
        }),
        Invalidation::Iotlb {
            scope: IotlbScope::Domain { did: old_did },
            drain_reads: false,
            drain_writes: false,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: Bdf = Bdf::from_requester_id(0x0310);

    #[test]
    fn context_descriptor_and_register_agree_on_fields() {
        let inv = Invalidation::Context(ContextScope::Device {
            did: 0x42,
            source_id: DEV,
            function_mask: 1,
        });
        assert_eq!(inv.descriptor(), 0x1_0310_0042_0031);
        assert_eq!(
            inv.register_command(),
            Some(RegisterCommand::Context(
                CCMD_ICC | (3 << 61) | (1 << 32) | (0x0310 << 16) | 0x42
            ))
        );
        assert_eq!(
            Invalidation::Context(ContextScope::Global).descriptor(),
            0x11
        );
    }

    #[test]
    fn iotlb_descriptor_and_register_agree_on_fields() {
        let inv = Invalidation::Iotlb {
            scope: IotlbScope::Page {
                did: 7,
                addr: 0x12_3400_0000,
                order: 2,
                leaf_only: true,
            },
            drain_reads: true,
            drain_writes: false,
        };
        let d = inv.descriptor();
        assert_eq!(d as u64, 0x2 | (3 << 4) | (1 << 7) | (7 << 16));
        assert_eq!((d >> 64) as u64, 0x12_3400_0000 | (1 << 6) | 2);
        assert_eq!(
            inv.register_command(),
            Some(RegisterCommand::Iotlb {
                iva: 0x12_3400_0000 | (1 << 6) | 2,
                command: IOTLB_IVT | (3 << 60) | (1 << 49) | (7 << 32),
            })
        );
    }

    #[test]
    fn interrupt_entry_descriptor_layout() {
        let global = Invalidation::InterruptEntry(InterruptScope::Global);
        assert_eq!(global.descriptor(), 0x4);
        assert_eq!(global.register_command(), None);
        let one = Invalidation::InterruptEntry(InterruptScope::Entries {
            index: 0x1234,
            index_mask: 3,
        });
        assert_eq!(one.descriptor(), 0x1234_0000_0000 | (3 << 27) | 0x14);
    }

    #[test]
    fn wait_descriptor_layout() {
        let d = wait_descriptor(PhysAddr(0x5000_0008), 0xabcd);
        assert_eq!(d as u64, 0xabcd_0000_0000 | 0x65);
        assert_eq!((d >> 64) as u64, 0x5000_0008);
    }

    #[test]
    fn page_scope_falls_back_to_domain() {
        let psi = Capabilities((1 << 39) | (4 << 48));
        assert!(matches!(
            IotlbScope::pages_or_domain(psi, 1, 0x4000, 2),
            IotlbScope::Page { order: 2, .. }
        ));
        assert_eq!(
            IotlbScope::pages_or_domain(psi, 1, 0x1000, 2),
            IotlbScope::Domain { did: 1 }
        );
        assert_eq!(
            IotlbScope::pages_or_domain(psi, 1, 0, 5),
            IotlbScope::Domain { did: 1 }
        );
        assert_eq!(
            IotlbScope::pages_or_domain(Capabilities(0), 1, 0, 0),
            IotlbScope::Domain { did: 1 }
        );
    }

    #[test]
    fn owner_switch_targets_the_old_domain() {
        let [ctx, tlb] = owner_switch(DEV, 9);
        assert_eq!(
            ctx,
            Invalidation::Context(ContextScope::Device {
                did: 9,
                source_id: DEV,
                function_mask: 0
            })
        );
        assert!(matches!(
            tlb,
            Invalidation::Iotlb {
                scope: IotlbScope::Domain { did: 9 },
                ..
            }
        ));
    }
}
