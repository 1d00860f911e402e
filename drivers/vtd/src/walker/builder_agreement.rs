use super::*;
use crate::context::{ContextEntry, RootTable, TranslationType};
use crate::levels::Levels;
use crate::pagetable::{PageTable, Perms};
use crate::pte::{self, entry_addr, Pte};
use crate::table_memory::TableMemory;
use lazaret_types::sim::{SimFrameAllocator, SimMemory};

const DEV: Bdf = Bdf::from_requester_id(0x0310);

/// A root table with bus 3's context table, device 03:02.0 on a 4-level domain that maps
/// 0x1000 → 0x8000 read-only and 0x2000 → 0x9000 read-write.
fn setup(mem: &SimMemory) -> (RootTable, PageTable) {
    let tm = TableMemory::coherent(mem);
    let mut alloc = SimFrameAllocator::new(mem, PhysAddr(0x100_0000), 64);
    let mut rt = RootTable::new(tm, &mut alloc).unwrap();
    rt.ensure_bus(tm, &mut alloc, 3).unwrap();
    let mut pt = PageTable::new(tm, &mut alloc, Levels::Four).unwrap();
    pt.map(tm, &mut alloc, 0x1000, PhysAddr(0x8000), Perms::READ)
        .unwrap();
    pt.map(tm, &mut alloc, 0x2000, PhysAddr(0x9000), Perms::READ_WRITE)
        .unwrap();
    let ctx = ContextEntry::translated(pt.root(), Levels::Four, 5);
    rt.switch_context(tm, DEV, ContextEntry::NOT_PRESENT, ctx)
        .unwrap();
    (rt, pt)
}

#[test]
fn translates_with_offsets_and_permissions() {
    let mem = SimMemory::new();
    let (rt, _) = setup(&mem);
    let root = rt.address();
    assert_eq!(
        translate(&mem, root, DEV, 0x1234, false),
        Ok(PhysAddr(0x8234))
    );
    assert_eq!(
        translate(&mem, root, DEV, 0x1234, true),
        Err(Fault::WriteToReadOnly { level: 1 })
    );
    assert_eq!(
        translate(&mem, root, DEV, 0x2ff8, true),
        Ok(PhysAddr(0x9ff8))
    );
    assert_eq!(
        translate(&mem, root, DEV, 0x3000, false),
        Err(Fault::PteNotPresent {
            level: 1,
            write: false
        })
    );
    assert_eq!(
        translate(&mem, root, DEV, 1 << 40, true).map_err(|e| e.reason_code()),
        Err(5)
    );
    assert_eq!(
        translate(&mem, root, DEV, 1 << 48, false),
        Err(Fault::AddressBeyondWidth {
            iova: 1 << 48,
            width: 48
        })
    );
}

#[test]
fn missing_root_and_context_entries_fault() {
    let mem = SimMemory::new();
    let (rt, _) = setup(&mem);
    let other_bus = Bdf::new(4, 2, 0).unwrap();
    let other_fn = Bdf::new(3, 2, 1).unwrap();
    assert_eq!(
        translate(&mem, rt.address(), other_bus, 0x1000, false),
        Err(Fault::RootNotPresent)
    );
    assert_eq!(
        translate(&mem, rt.address(), other_fn, 0x1000, false),
        Err(Fault::ContextNotPresent)
    );
}

#[test]
fn invalid_context_programming_faults() {
    let mem = SimMemory::new();
    let (rt, pt) = setup(&mem);
    let tm = TableMemory::coherent(&mem);
    let good = rt.read_context(&mem, DEV).unwrap();
    // AW naming 5 levels on a unit without 5-level support.
    let cfg = WalkerConfig {
        sagaw: 0b0110,
        mgaw: 48,
        ..WalkerConfig::PERMISSIVE
    };
    let five = ContextEntry::translated(pt.root(), Levels::Five, 5);
    rt.switch_context(tm, DEV, good, five).unwrap();
    assert_eq!(
        translate_with(&cfg, &mem, rt.address(), DEV, 0, false),
        Err(Fault::UnsupportedAddressWidth { aw: 3 })
    );
    let reserved_tt = ContextEntry {
        translation_type: TranslationType::Reserved,
        ..good
    };
    rt.switch_context(tm, DEV, five, reserved_tt).unwrap();
    assert_eq!(
        translate(&mem, rt.address(), DEV, 0x1000, false).map_err(|e| e.reason_code()),
        Err(3)
    );
    let pt_entry = ContextEntry {
        translation_type: TranslationType::PassThrough,
        ..good
    };
    rt.switch_context(tm, DEV, reserved_tt, pt_entry).unwrap();
    assert_eq!(
        translate(&mem, rt.address(), DEV, 0x7777, true),
        Ok(PhysAddr(0x7777))
    );
    // Reserved context bits (bit 71).
    let at = rt.entry_addr(DEV).unwrap();
    mem.write_u64(PhysAddr(at.0 + 8), (1 << 7) | 2);
    assert_eq!(
        translate(&mem, rt.address(), DEV, 0x1000, false),
        Err(Fault::ContextReserved)
    );
}

#[test]
fn reserved_and_large_page_rules() {
    let mem = SimMemory::new();
    let (rt, pt) = setup(&mem);
    let root = rt.address();
    // Make the level-2 entry for IOVA 0x20_0000 a 2 MiB page at 0x4000_0000.
    let l4 = Pte(mem.read_u64(entry_addr(pt.root(), 0, 4))).addr();
    let l3 = Pte(mem.read_u64(entry_addr(l4, 0, 3))).addr();
    let pde = entry_addr(l3, 0x20_0000, 2);
    mem.write_u64(pde, 0x4000_0000 | pte::PAGE_SIZE_BIT | pte::READ);
    assert_eq!(
        translate(&mem, root, DEV, 0x23_4567, false),
        Ok(PhysAddr(0x4003_4567))
    );
    let no_2m = WalkerConfig {
        sllps: 0,
        ..WalkerConfig::PERMISSIVE
    };
    assert_eq!(
        translate_with(&no_2m, &mem, root, DEV, 0x23_4567, false),
        Err(Fault::PteReserved { level: 2 })
    );
    // Misaligned large page.
    mem.write_u64(pde, 0x4000_1000 | pte::PAGE_SIZE_BIT | pte::READ);
    assert_eq!(
        translate(&mem, root, DEV, 0x20_0000, false),
        Err(Fault::PteReserved { level: 2 })
    );
    // Address bits above a 39-bit HAW.
    let haw39 = WalkerConfig {
        haw: 39,
        ..WalkerConfig::PERMISSIVE
    };
    mem.write_u64(pde, (1 << 40) | pte::READ | pte::WRITE);
    assert_eq!(
        translate_with(&haw39, &mem, root, DEV, 0x20_0000, false),
        Err(Fault::PteReserved { level: 2 })
    );
    // PS at the PML4E is reserved.
    let pml4e = entry_addr(pt.root(), 0, 4);
    mem.write_u64(pml4e, l4.0 | pte::PAGE_SIZE_BIT | 3);
    assert_eq!(
        translate(&mem, root, DEV, 0x1000, false),
        Err(Fault::PteReserved { level: 4 })
    );
    // A read-only table pointer restricts writes below it.
    mem.write_u64(pml4e, l4.0 | pte::READ);
    assert_eq!(
        translate(&mem, root, DEV, 0x2000, true),
        Err(Fault::WriteToReadOnly { level: 4 })
    );
    assert_eq!(
        translate(&mem, root, DEV, 0x2000, false),
        Ok(PhysAddr(0x9000))
    );
}
