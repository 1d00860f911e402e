//! Reference walker: interprets root table → context entry → second-level tables from memory
//! the way §3.4–§3.7 and §9 say hardware does, and names the fault a request would raise
//! (§7.1.3 reason codes). Tests, the simulated unit's DMA path and the kernel's property tests
//! use it to prove isolation: what this walker cannot reach, the device cannot reach.
//!
//! It is a checker, so it shares nothing with what it checks: every bit position below is
//! written here from the spec (module [`spec`]), and nothing is imported from the table
//! builders (`context`, `pte`, `pagetable`, `levels`, `quarantine`). [`translate_programmed`]
//! starts from what the unit has programmed (RTADDR) and applies the unit's own CAP / ECAP.

use core::fmt;

use lazaret_types::{Bdf, Mmio, PhysAddr, PhysMem};

use crate::fault::fault_reason_text;
use crate::regs::{Capabilities, ExtCapabilities, CAP, ECAP, RTADDR};

/// Bit layouts, from the spec text (rev 4.x), for the walker alone.
pub mod spec {
    /// Root entry, legacy mode (§9.1): 0 P, 11:1 reserved, 63:12 CTP, 127:64 reserved.
    pub mod root {
        pub const PRESENT: u64 = 1 << 0;
        pub const RESERVED_LO: u64 = 0xffe;
        pub const POINTER: u64 = !0xfff;
    }
    /// Context entry, legacy mode (§9.3). Low qword: 0 P, 1 FPD, 3:2 TT, 11:4 reserved,
    /// 63:12 SLPTPTR. High qword: 2:0 AW, 6:3 ignored, 7 reserved, 23:8 DID, 63:24 reserved.
    pub mod context {
        pub const PRESENT: u64 = 1 << 0;
        pub const FPD: u64 = 1 << 1;
        pub const TT_SHIFT: u32 = 2;
        pub const TT_MASK: u64 = 0b11;
        pub const RESERVED_LO: u64 = 0xff0;
        pub const POINTER: u64 = !0xfff;
        pub const AW_MASK: u64 = 0b111;
        pub const RESERVED_HI: u64 = (1 << 7) | !0xff_ffff;
        pub const DID_SHIFT: u32 = 8;
        /// TT encodings: untranslated only, + device-TLB (needs ECAP.DT), pass-through
        /// (needs ECAP.PT), 11b reserved.
        pub const TT_UNTRANSLATED: u8 = 0;
        pub const TT_DEVICE_TLB: u8 = 1;
        pub const TT_PASS_THROUGH: u8 = 2;
    }
    /// Second-level paging entry (§9.8): 0 R, 1 W, 7 PS (in PDPE / PDE: maps a 1 GiB / 2 MiB
    /// page; reserved in PML5E / PML4E), 51:12 address.
    pub mod slpte {
        pub const READ: u64 = 1 << 0;
        pub const WRITE: u64 = 1 << 1;
        pub const PAGE_SIZE: u64 = 1 << 7;
        pub const ADDRESS: u64 = ((1 << 52) - 1) & !0xfff;
    }
    /// CAP (§10.4.2): 12:8 SAGAW, 21:16 MGAW - 1, 37:34 SLLPS.
    pub mod cap {
        pub const fn sagaw(cap: u64) -> u8 {
            ((cap >> 8) & 0x1f) as u8
        }
        pub const fn mgaw(cap: u64) -> u32 {
            ((cap >> 16) & 0x3f) as u32 + 1
        }
        pub const fn sllps(cap: u64) -> u8 {
            ((cap >> 34) & 0xf) as u8
        }
    }
    /// ECAP (§10.4.3): 2 DT (device-TLB), 6 PT (pass-through).
    pub mod ecap {
        pub const DEVICE_TLB: u64 = 1 << 2;
        pub const PASS_THROUGH: u64 = 1 << 6;
    }
    /// RTADDR (§10.4.6): 11:10 TTM (00b legacy), 63:12 root table address.
    pub mod rtaddr {
        pub const TTM_MASK: u64 = 0b11 << 10;
        pub const ADDRESS: u64 = !0xfff;
    }
}

/// The unit properties that change how a walk ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkerConfig {
    /// CAP.SAGAW: AW encodings the unit accepts.
    pub sagaw: u8,
    /// CAP.MGAW in bits.
    pub mgaw: u32,
    /// Host address width (DMAR table): address bits at and above it are reserved.
    pub haw: u32,
    /// CAP.SLLPS: bit 0 = 2 MiB, bit 1 = 1 GiB pages.
    pub sllps: u8,
    /// ECAP.PT: pass-through translation type allowed.
    pub pass_through: bool,
    /// ECAP.DT: TT = 01b (device-TLB) allowed.
    pub device_tlb: bool,
}

impl WalkerConfig {
    /// Accepts everything the architecture allows (3/4/5 levels, 57-bit MGAW, 52-bit HAW).
    pub const PERMISSIVE: WalkerConfig = WalkerConfig {
        sagaw: 0b1110,
        mgaw: 57,
        haw: 52,
        sllps: 0b11,
        pass_through: true,
        device_tlb: true,
    };

    /// From raw CAP / ECAP values, decoded with the walker's own [`spec`] layouts.
    pub const fn from_registers(cap: u64, ecap: u64, haw: u32) -> WalkerConfig {
        WalkerConfig {
            sagaw: spec::cap::sagaw(cap),
            mgaw: spec::cap::mgaw(cap),
            haw,
            sllps: spec::cap::sllps(cap),
            pass_through: ecap & spec::ecap::PASS_THROUGH != 0,
            device_tlb: ecap & spec::ecap::DEVICE_TLB != 0,
        }
    }

    pub const fn from_unit(cap: Capabilities, ecap: ExtCapabilities, haw: u32) -> WalkerConfig {
        WalkerConfig::from_registers(cap.0, ecap.0, haw)
    }

    /// Mask of the reserved address bits 51:HAW of an entry.
    const fn reserved_address_bits(&self) -> u64 {
        if self.haw >= 52 {
            0
        } else {
            ((1u64 << 52) - 1) & !((1u64 << self.haw) - 1)
        }
    }
}

/// Why a request was blocked, with the §7.1.3 reason code from [`Fault::reason_code`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 1h: the root entry of the bus is not present.
    RootNotPresent,
    /// 2h: the context entry of the function is not present.
    ContextNotPresent,
    /// 3h: the AW field names a depth the unit does not support.
    UnsupportedAddressWidth { aw: u8 },
    /// 3h: TT (raw 2-bit value) is reserved, or not offered by ECAP (PT, DT).
    UnsupportedTranslationType { tt: u8 },
    /// 4h: IOVA above 2^min(AGAW, MGAW) - 1.
    AddressBeyondWidth { iova: u64, width: u32 },
    /// 5h / 6h: an entry on the path has R = W = 0.
    PteNotPresent { level: u32, write: bool },
    /// 5h: write, and W is clear at `level`.
    WriteToReadOnly { level: u32 },
    /// 6h: read, and R is clear at `level`.
    ReadWithoutPermission { level: u32 },
    /// Ah: reserved bits set in the root entry (or RTADDR names a non-legacy table type).
    RootReserved,
    /// Bh: reserved bits set in the context entry.
    ContextReserved,
    /// Ch: reserved bits set in a second-level entry.
    PteReserved { level: u32 },
}

impl Fault {
    /// The fault reason the hardware would record (FR field, §7.1.3).
    pub const fn reason_code(&self) -> u8 {
        match self {
            Fault::RootNotPresent => 0x1,
            Fault::ContextNotPresent => 0x2,
            Fault::UnsupportedAddressWidth { .. } | Fault::UnsupportedTranslationType { .. } => 0x3,
            Fault::AddressBeyondWidth { .. } => 0x4,
            Fault::PteNotPresent { write: true, .. } | Fault::WriteToReadOnly { .. } => 0x5,
            Fault::PteNotPresent { write: false, .. } | Fault::ReadWithoutPermission { .. } => 0x6,
            Fault::RootReserved => 0xA,
            Fault::ContextReserved => 0xB,
            Fault::PteReserved { .. } => 0xC,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fault {:#x} ({}): {:?}",
            self.reason_code(),
            fault_reason_text(self.reason_code()),
            self
        )
    }
}

/// What a valid, present context entry tells the hardware (the value a context cache holds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context {
    pub domain_id: u16,
    /// FPD: faults of this function are not recorded.
    pub fault_processing_disabled: bool,
    pub mode: ContextMode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextMode {
    /// TT = 10b: IOVA = host physical address.
    PassThrough,
    /// Walk `levels` levels of second-level tables from `table`.
    Translated { table: PhysAddr, levels: u32 },
}

/// The end of a successful second-level walk (the value an IOTLB entry holds): a page of
/// 2^`page_bits` bytes and the permissions of the whole path (R / W ANDed over every level).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    pub page: PhysAddr,
    pub page_bits: u32,
    pub readable: bool,
    pub writable: bool,
}

impl Leaf {
    pub const fn address(&self, iova: u64) -> PhysAddr {
        PhysAddr(self.page.0 | (iova & ((1u64 << self.page_bits) - 1)))
    }

    pub const fn allows(&self, write: bool) -> bool {
        if write {
            self.writable
        } else {
            self.readable
        }
    }
}

/// [`translate_with`] under [`WalkerConfig::PERMISSIVE`].
pub fn translate<M: PhysMem + ?Sized>(
    mem: &M,
    root_table_addr: PhysAddr,
    bdf: Bdf,
    iova: u64,
    write: bool,
) -> Result<PhysAddr, Fault> {
    translate_with(
        &WalkerConfig::PERMISSIVE,
        mem,
        root_table_addr,
        bdf,
        iova,
        write,
    )
}

/// Translates a DMA the way the unit behind `regs` would if it had no caches: from the root
/// table RTADDR names (legacy mode only), under the unit's CAP.SAGAW / CAP.MGAW / CAP.SLLPS and
/// ECAP.PT / ECAP.DT. The host address width is taken as 52 bits (the DMAR table's HAW is not in
/// any register).
pub fn translate_programmed<M, R>(
    mem: &M,
    regs: &R,
    source_id: Bdf,
    iova: u64,
    write: bool,
) -> Result<PhysAddr, Fault>
where
    M: PhysMem + ?Sized,
    R: Mmio + ?Sized,
{
    let cfg = WalkerConfig::from_registers(regs.read64(CAP), regs.read64(ECAP), 52);
    let root = root_table_of(regs.read64(RTADDR))?;
    translate_with(&cfg, mem, root, source_id, iova, write)
}

/// The root table a raw RTADDR value names; only legacy mode (TTM = 00b) is understood.
pub const fn root_table_of(rtaddr: u64) -> Result<PhysAddr, Fault> {
    if rtaddr & spec::rtaddr::TTM_MASK != 0 {
        return Err(Fault::RootReserved);
    }
    Ok(PhysAddr(rtaddr & spec::rtaddr::ADDRESS))
}

/// Translates an untranslated DMA request from `bdf` for `iova` (read or write).
pub fn translate_with<M: PhysMem + ?Sized>(
    cfg: &WalkerConfig,
    mem: &M,
    root_table_addr: PhysAddr,
    bdf: Bdf,
    iova: u64,
    write: bool,
) -> Result<PhysAddr, Fault> {
    let ctx = read_context(cfg, mem, root_table_addr, bdf)?;
    match ctx.mode {
        ContextMode::PassThrough => Ok(PhysAddr(iova)),
        ContextMode::Translated { table, levels } => {
            walk(cfg, mem, table, levels, iova, write).map(|leaf| leaf.address(iova))
        }
    }
}

/// Root entry → context entry, with the present, reserved-bit, TT and AW checks of §9.1 and
/// §9.3 (what hardware checks before it may cache the entry).
pub fn read_context<M: PhysMem + ?Sized>(
    cfg: &WalkerConfig,
    mem: &M,
    root_table_addr: PhysAddr,
    bdf: Bdf,
) -> Result<Context, Fault> {
    use spec::{context as c, root};
    let entry = PhysAddr(root_table_addr.0 + u64::from(bdf.bus()) * 16);
    let root_lo = mem.read_u64(entry);
    let root_hi = mem.read_u64(PhysAddr(entry.0 + 8));
    if root_lo & root::PRESENT == 0 {
        return Err(Fault::RootNotPresent);
    }
    if root_lo & (root::RESERVED_LO | cfg.reserved_address_bits()) != 0 || root_hi != 0 {
        return Err(Fault::RootReserved);
    }
    let at = PhysAddr((root_lo & root::POINTER) + u64::from(bdf.devfn()) * 16);
    let lo = mem.read_u64(at);
    let hi = mem.read_u64(PhysAddr(at.0 + 8));
    if lo & c::PRESENT == 0 {
        return Err(Fault::ContextNotPresent);
    }
    if lo & (c::RESERVED_LO | cfg.reserved_address_bits()) != 0 || hi & c::RESERVED_HI != 0 {
        return Err(Fault::ContextReserved);
    }
    let tt = ((lo >> c::TT_SHIFT) & c::TT_MASK) as u8;
    let domain_id = (hi >> c::DID_SHIFT) as u16;
    let fault_processing_disabled = lo & c::FPD != 0;
    let context = |mode| Context {
        domain_id,
        fault_processing_disabled,
        mode,
    };
    match tt {
        c::TT_UNTRANSLATED => {}
        c::TT_DEVICE_TLB if cfg.device_tlb => {}
        c::TT_PASS_THROUGH if cfg.pass_through => return Ok(context(ContextMode::PassThrough)),
        _ => return Err(Fault::UnsupportedTranslationType { tt }),
    }
    // AW n (1, 2, 3) = 3, 4, 5 levels, valid only if SAGAW bit n is set (§9.3, §10.4.2).
    let aw = (hi & c::AW_MASK) as u8;
    if !(1..=3).contains(&aw) || cfg.sagaw & (1 << aw) == 0 {
        return Err(Fault::UnsupportedAddressWidth { aw });
    }
    Ok(context(ContextMode::Translated {
        table: PhysAddr(lo & c::POINTER),
        levels: u32::from(aw) + 2,
    }))
}

/// Second-level walk (§3.7, §9.8) of a `levels`-deep tree from `table`: the IOVA must fit in
/// min(AGAW, MGAW) bits; every entry on the path must be present with no reserved bits; access
/// needs R (read) or W (write) at every level.
pub fn walk<M: PhysMem + ?Sized>(
    cfg: &WalkerConfig,
    mem: &M,
    table: PhysAddr,
    levels: u32,
    iova: u64,
    write: bool,
) -> Result<Leaf, Fault> {
    check_width(cfg, levels, iova)?;
    let start = WalkStart {
        table,
        level: levels,
        readable: true,
        writable: true,
    };
    walk_from(cfg, mem, start, iova, write, &mut |_| {})
}

/// The IOVA fits in min(AGAW of `levels`, MGAW) bits (fault 4h otherwise).
pub const fn check_width(cfg: &WalkerConfig, levels: u32, iova: u64) -> Result<(), Fault> {
    let agaw = 12 + 9 * levels;
    let width = if agaw < cfg.mgaw { agaw } else { cfg.mgaw };
    if width < 64 && iova >> width != 0 {
        return Err(Fault::AddressBeyondWidth { iova, width });
    }
    Ok(())
}

/// Where a walk starts: the top table, or (resuming from a paging-structure cache) a lower
/// table with the permissions of the entries above it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkStart {
    pub table: PhysAddr,
    /// The level of `table` (its entries are level-`level` entries).
    pub level: u32,
    pub readable: bool,
    pub writable: bool,
}

/// A non-leaf entry a walk went through: at `level`, pointing to the table `next`, with the
/// permissions of the path down to and including it (what a paging-structure cache holds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableStep {
    pub level: u32,
    pub next: PhysAddr,
    pub readable: bool,
    pub writable: bool,
}

/// The walk of [`walk`] from `start` (no width check), reporting every non-leaf entry used to
/// `observe`. The start permissions must allow the access.
pub fn walk_from<M: PhysMem + ?Sized>(
    cfg: &WalkerConfig,
    mem: &M,
    start: WalkStart,
    iova: u64,
    write: bool,
    observe: &mut dyn FnMut(TableStep),
) -> Result<Leaf, Fault> {
    use spec::slpte;
    let mut table = start.table;
    let (mut readable, mut writable) = (start.readable, start.writable);
    for level in (1..=start.level).rev() {
        let shift = 12 + 9 * (level - 1);
        let index = (iova >> shift) & 0x1ff;
        let e = mem.read_u64(PhysAddr(table.0 + index * 8));
        if e & (slpte::READ | slpte::WRITE) == 0 {
            return Err(Fault::PteNotPresent { level, write });
        }
        if e & cfg.reserved_address_bits() != 0 {
            return Err(Fault::PteReserved { level });
        }
        let address = e & slpte::ADDRESS;
        let large = level > 1 && e & slpte::PAGE_SIZE != 0;
        if large {
            // PS is reserved at PML4E/PML5E and for sizes SLLPS does not list; a large page's
            // address bits below its size are reserved (§9.8).
            let supported = level <= 3 && cfg.sllps & (1 << (level - 2)) != 0;
            if !supported || address & ((1u64 << shift) - 1) != 0 {
                return Err(Fault::PteReserved { level });
            }
        }
        if write && writable && e & slpte::WRITE == 0 {
            return Err(Fault::WriteToReadOnly { level });
        }
        if !write && readable && e & slpte::READ == 0 {
            return Err(Fault::ReadWithoutPermission { level });
        }
        readable &= e & slpte::READ != 0;
        writable &= e & slpte::WRITE != 0;
        if level == 1 || large {
            let leaf = Leaf {
                page: PhysAddr(address),
                page_bits: shift,
                readable,
                writable,
            };
            // Only reachable with start permissions that already denied the access.
            if !leaf.allows(write) {
                return Err(if write {
                    Fault::WriteToReadOnly { level: start.level }
                } else {
                    Fault::ReadWithoutPermission { level: start.level }
                });
            }
            return Ok(leaf);
        }
        observe(TableStep {
            level,
            next: PhysAddr(address),
            readable,
            writable,
        });
        table = PhysAddr(address);
    }
    // The loop returns at level 1 at the latest (or at once for a level-0 start).
    Err(Fault::PteNotPresent { level: 1, write })
}

/// Agreement with the table builders: what they build is what the walker reads.
#[cfg(test)]
mod builder_agreement;
/// The spec's refusals, each on a hand-built table.
#[cfg(test)]
mod spec_tests;
