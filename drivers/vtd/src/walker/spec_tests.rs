//! Tables written entry by entry from the spec's layouts (literal numbers, no builder), so a
//! builder bug cannot make these pass.
use super::*;
use lazaret_types::sim::{SimMemory, SimRegisters};

const ROOT: u64 = 0x10_0000;
const CONTEXT_TABLE: u64 = 0x11_0000;
const L4: u64 = 0x12_0000;
const L3: u64 = 0x13_0000;
const L2: u64 = 0x14_0000;
const L1: u64 = 0x15_0000;
const FRAME: u64 = 0x9_9000;
/// Bus 2, device 3, function 1.
const DEV: Bdf = Bdf::from_requester_id(0x0219);

/// CAP with SAGAW 4-level only (bit 2), MGAW 48, SLLPS 2 MiB; ECAP with PT.
const CAP_4LVL: u64 = (0b0100 << 8) | (47 << 16) | (1 << 34);
const ECAP_PT: u64 = 1 << 6;

/// Root entry for bus 2 → context table; context entry for devfn 0x19 with `lo` / `hi`;
/// a 4-level path for IOVA 0x1000 → FRAME read-write.
fn tables(mem: &SimMemory, ctx_lo: u64, ctx_hi: u64) {
    mem.write_u64(PhysAddr(ROOT + 2 * 16), CONTEXT_TABLE | 1);
    mem.write_u64(PhysAddr(ROOT + 2 * 16 + 8), 0);
    mem.write_u64(PhysAddr(CONTEXT_TABLE + 0x19 * 16), ctx_lo);
    mem.write_u64(PhysAddr(CONTEXT_TABLE + 0x19 * 16 + 8), ctx_hi);
    mem.write_u64(PhysAddr(L4), L3 | 3);
    mem.write_u64(PhysAddr(L3), L2 | 3);
    mem.write_u64(PhysAddr(L2), L1 | 3);
    mem.write_u64(PhysAddr(L1 + 8), FRAME | 3);
}

/// Present, TT 00b, SLPTPTR L4 / AW 2 (4-level), DID 0x42.
const GOOD_LO: u64 = L4 | 1;
const GOOD_HI: u64 = 2 | (0x42 << 8);

fn unit(cap: u64, ecap: u64) -> SimRegisters {
    let regs = SimRegisters::new();
    regs.set(CAP, cap);
    regs.set(ECAP, ecap);
    regs.set(RTADDR, ROOT);
    regs
}

#[test]
fn a_hand_built_path_translates_from_rtaddr() {
    let mem = SimMemory::new();
    tables(&mem, GOOD_LO, GOOD_HI);
    let regs = unit(CAP_4LVL, ECAP_PT);
    assert_eq!(
        translate_programmed(&mem, &regs, DEV, 0x1abc, true),
        Ok(PhysAddr(FRAME | 0xabc))
    );
    let cfg = WalkerConfig::from_registers(CAP_4LVL, ECAP_PT, 52);
    let ctx = read_context(&cfg, &mem, PhysAddr(ROOT), DEV).unwrap();
    assert_eq!(ctx.domain_id, 0x42);
    // RTADDR names another (empty) root table: the walk starts there, not at ROOT.
    regs.set(RTADDR, 0x50_0000);
    assert_eq!(
        translate_programmed(&mem, &regs, DEV, 0x1000, true),
        Err(Fault::RootNotPresent)
    );
    // Scalable-mode root table (TTM = 01b): not a legacy table.
    regs.set(RTADDR, ROOT | (1 << 10));
    assert_eq!(
        translate_programmed(&mem, &regs, DEV, 0x1000, true),
        Err(Fault::RootReserved)
    );
}

#[test]
fn aw_not_in_sagaw_is_refused() {
    let mem = SimMemory::new();
    // AW 1 (3-level) on a unit whose SAGAW has only 4-level.
    tables(&mem, GOOD_LO, 1 | (0x42 << 8));
    let regs = unit(CAP_4LVL, ECAP_PT);
    assert_eq!(
        translate_programmed(&mem, &regs, DEV, 0x1000, false),
        Err(Fault::UnsupportedAddressWidth { aw: 1 })
    );
    // AW 0 and AW 4 are reserved encodings whatever SAGAW says.
    for aw in [0, 4] {
        tables(&mem, GOOD_LO, aw | (0x42 << 8));
        let all = unit(CAP_4LVL | (0x1f << 8), ECAP_PT);
        assert_eq!(
            translate_programmed(&mem, &all, DEV, 0x1000, false),
            Err(Fault::UnsupportedAddressWidth { aw: aw as u8 })
        );
    }
}

#[test]
fn iova_above_mgaw_is_refused() {
    let mem = SimMemory::new();
    tables(&mem, GOOD_LO, GOOD_HI);
    // MGAW 39 with 4-level tables: bit 39 is beyond the width even though AGAW is 48.
    let regs = unit((0b0100 << 8) | (38 << 16), 0);
    assert_eq!(
        translate_programmed(&mem, &regs, DEV, 1 << 39, false),
        Err(Fault::AddressBeyondWidth {
            iova: 1 << 39,
            width: 39
        })
    );
    assert_eq!(
        translate_programmed(&mem, &regs, DEV, 0x1000, false),
        Ok(PhysAddr(FRAME))
    );
}

#[test]
fn translation_types_follow_ecap() {
    let mem = SimMemory::new();
    let pass_through = GOOD_LO | (0b10 << 2);
    tables(&mem, pass_through, GOOD_HI);
    assert_eq!(
        translate_programmed(&mem, &unit(CAP_4LVL, ECAP_PT), DEV, 0x7777, true),
        Ok(PhysAddr(0x7777))
    );
    assert_eq!(
        translate_programmed(&mem, &unit(CAP_4LVL, 0), DEV, 0x7777, true),
        Err(Fault::UnsupportedTranslationType { tt: 2 })
    );
    tables(&mem, GOOD_LO | (0b01 << 2), GOOD_HI);
    assert_eq!(
        translate_programmed(&mem, &unit(CAP_4LVL, ECAP_PT), DEV, 0x1000, true),
        Err(Fault::UnsupportedTranslationType { tt: 1 }),
        "device-TLB translation type needs ECAP.DT"
    );
    tables(&mem, GOOD_LO | (0b11 << 2), GOOD_HI);
    assert_eq!(
        translate_programmed(&mem, &unit(CAP_4LVL, ECAP_PT | 4), DEV, 0x1000, true)
            .map_err(|f| f.reason_code()),
        Err(3)
    );
}

#[test]
fn reserved_bits_are_refused() {
    let mem = SimMemory::new();
    let regs = unit(CAP_4LVL, ECAP_PT);
    let refused = |mem: &SimMemory| translate_programmed(mem, &regs, DEV, 0x1000, false);
    // Context: bit 4 (low qword), bit 71 and bit 88 (high qword).
    for (lo, hi) in [
        (GOOD_LO | 1 << 4, GOOD_HI),
        (GOOD_LO, GOOD_HI | 1 << 7),
        (GOOD_LO, GOOD_HI | 1 << 24),
    ] {
        tables(&mem, lo, hi);
        assert_eq!(
            refused(&mem),
            Err(Fault::ContextReserved),
            "{lo:#x} {hi:#x}"
        );
    }
    // Root entry: bit 1, and the high qword.
    tables(&mem, GOOD_LO, GOOD_HI);
    mem.write_u64(PhysAddr(ROOT + 2 * 16), CONTEXT_TABLE | 3);
    assert_eq!(refused(&mem), Err(Fault::RootReserved));
    mem.write_u64(PhysAddr(ROOT + 2 * 16), CONTEXT_TABLE | 1);
    mem.write_u64(PhysAddr(ROOT + 2 * 16 + 8), 1);
    assert_eq!(refused(&mem), Err(Fault::RootReserved));
    // PS in a PML4E is reserved.
    tables(&mem, GOOD_LO, GOOD_HI);
    mem.write_u64(PhysAddr(L4), L3 | 3 | (1 << 7));
    assert_eq!(refused(&mem), Err(Fault::PteReserved { level: 4 }));
    // A 1 GiB page (PS at the PDPE) when SLLPS lists only 2 MiB.
    mem.write_u64(PhysAddr(L4), L3 | 3);
    mem.write_u64(PhysAddr(L3), 0x4000_0000 | 3 | (1 << 7));
    assert_eq!(refused(&mem), Err(Fault::PteReserved { level: 3 }));
    // Address bits above a 39-bit HAW.
    tables(&mem, GOOD_LO, GOOD_HI);
    mem.write_u64(PhysAddr(L1 + 8), (1 << 40) | 3);
    let haw39 = WalkerConfig::from_registers(CAP_4LVL, 0, 39);
    assert_eq!(
        translate_with(&haw39, &mem, PhysAddr(ROOT), DEV, 0x1000, false),
        Err(Fault::PteReserved { level: 1 })
    );
}

#[test]
fn permissions_and_superpages_from_the_entry_bits() {
    let mem = SimMemory::new();
    tables(&mem, GOOD_LO, GOOD_HI);
    let regs = unit(CAP_4LVL, ECAP_PT);
    // Read-only leaf (R only).
    mem.write_u64(PhysAddr(L1 + 8), FRAME | 1);
    assert_eq!(
        translate_programmed(&mem, &regs, DEV, 0x1000, true),
        Err(Fault::WriteToReadOnly { level: 1 })
    );
    // Write-only PDE above a read-write leaf: reads refused at level 2.
    mem.write_u64(PhysAddr(L1 + 8), FRAME | 3);
    mem.write_u64(PhysAddr(L2), L1 | 2);
    assert_eq!(
        translate_programmed(&mem, &regs, DEV, 0x1000, false),
        Err(Fault::ReadWithoutPermission { level: 2 })
    );
    // A 2 MiB page at the PDE for IOVA 0x20_0000.
    mem.write_u64(PhysAddr(L2 + 8), 0x8000_0000 | 3 | (1 << 7));
    let cfg = WalkerConfig::from_registers(CAP_4LVL, 0, 52);
    let leaf = walk(&cfg, &mem, PhysAddr(L4), 4, 0x23_4567, false).unwrap();
    assert_eq!(leaf.page_bits, 21);
    assert_eq!(leaf.address(0x23_4567), PhysAddr(0x8003_4567));
    // Misaligned 2 MiB page address.
    mem.write_u64(PhysAddr(L2 + 8), 0x8000_1000 | 3 | (1 << 7));
    assert_eq!(
        walk(&cfg, &mem, PhysAddr(L4), 4, 0x20_0000, false),
        Err(Fault::PteReserved { level: 2 })
    );
}
