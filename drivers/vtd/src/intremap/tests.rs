//! Interrupt remapping end to end against the simulated unit: what a device's MSI (or a DMA
//! write into the interrupt window) does under the tables the builder wrote. The IRTE decoder
//! below takes its bit positions from §9.10, not from the builder.

use super::*;
use crate::fault::FaultRecord;
use crate::invalidation::{InterruptScope, InvalidationError};
use crate::poll::StepClock;
use crate::regs::{global, GCMD, IRTA};
use crate::sim_device::tests::bring_up;
use crate::sim_device::{
    SimInterrupt, SimIrFault, SimRef, SimVtd, SimWrite, DEAD_GCMD, DEAD_QUEUE, DEFAULT_CAP,
    DEFAULT_ECAP,
};
use crate::unit::{UnitError, VtdUnit};
use lazaret_types::sim::{ExchangeOnly, RegAccess, SimFrameAllocator, SimMemory};
use lazaret_types::{Mmio, PhysMem};

const TIMEOUT: u64 = 1000;
/// The device `bring_up` prepared a root entry for, and a neighbour on the same bus.
const DEV: Bdf = Bdf::from_requester_id(0x0318);
const OTHER: Bdf = Bdf::from_requester_id(0x0320);

/// §9.10 remapped-format IRTE, field by field.
#[derive(Debug, PartialEq, Eq)]
struct SpecIrte {
    present: bool,
    fpd: bool,
    destination_mode: u8,
    redirection_hint: u8,
    trigger_mode: u8,
    delivery_mode: u8,
    mode: u8,
    vector: u8,
    dst: u32,
    sid: u16,
    sq: u8,
    svt: u8,
    reserved: u128,
}

fn spec_decode(v: u128) -> SpecIrte {
    let bits = |lo: u32, width: u32| ((v >> lo) & ((1u128 << width) - 1)) as u64;
    SpecIrte {
        present: bits(0, 1) == 1,
        fpd: bits(1, 1) == 1,
        destination_mode: bits(2, 1) as u8,
        redirection_hint: bits(3, 1) as u8,
        trigger_mode: bits(4, 1) as u8,
        delivery_mode: bits(5, 3) as u8,
        mode: bits(15, 1) as u8,
        vector: bits(16, 8) as u8,
        dst: bits(32, 32) as u32,
        sid: bits(64, 16) as u16,
        sq: bits(80, 2) as u8,
        svt: bits(82, 2) as u8,
        reserved: v & ((0b111 << 12) | (0xff << 24) | (!0u128 << 84)),
    }
}

/// A unit with QI on (translation on too, from `bring_up`) and interrupt remapping enabled on
/// a fresh table of `count` entries.
fn remapping<'a>(
    sim: &'a SimVtd,
    alloc: &mut SimFrameAllocator,
    count: u32,
) -> (VtdUnit<SimRef<'a>>, InterruptTable) {
    let (mut unit, _root) = bring_up(sim, alloc);
    let table = InterruptTable::new(TableMemory::coherent(&*sim.mem), alloc, count, false).unwrap();
    unit.enable_interrupt_remapping(&*sim.mem, &table, &StepClock::default())
        .unwrap();
    (unit, table)
}

fn irte(vector: u8, apic: u8, source: SourceCheck) -> Irte {
    Irte {
        vector,
        destination: Destination::Xapic(apic),
        source,
    }
}

fn faults(unit: &VtdUnit<SimRef<'_>>) -> Vec<FaultRecord> {
    let mut seen = Vec::new();
    unit.drain_faults(|r| seen.push(r));
    seen
}

fn refused(sid: Bdf, index: Option<u16>, reason: u8) -> Result<SimInterrupt, SimIrFault> {
    Err(SimIrFault {
        source_id: sid,
        index,
        reason,
        recorded: true,
    })
}

fn delivered(vector: u8, destination: u32, index: u16) -> Result<SimInterrupt, SimIrFault> {
    Ok(SimInterrupt {
        vector,
        destination,
        index: Some(index),
    })
}

fn msi(sim: &SimVtd, sid: Bdf, index: u16) -> Result<SimInterrupt, SimIrFault> {
    let m = MsiMessage::remappable(index);
    sim.msi(sid, m.address, m.data)
}

fn invalidate(unit: &mut VtdUnit<SimRef<'_>>, sim: &SimVtd, index: u16) {
    let scope = InterruptScope::Entries {
        index,
        index_mask: 0,
    };
    unit.invalidate_interrupt_entries(&*sim.mem, scope, &StepClock::default())
        .unwrap();
}

/// Entry `index` → DEV's vector 0x41 on APIC 3, invalidated, and seen to deliver.
fn deliver_through(
    unit: &mut VtdUnit<SimRef<'_>>,
    sim: &SimVtd,
    table: &InterruptTable,
    index: u16,
) {
    let tm = TableMemory::coherent(&*sim.mem);
    table
        .program(tm, index, irte(0x41, 3, SourceCheck::RequesterId(DEV)))
        .unwrap();
    invalidate(unit, sim, index);
    assert_eq!(msi(sim, DEV, index), delivered(0x41, 3, index));
}

#[test]
fn table_size_comes_from_the_count_and_irta_encodes_it() {
    let mem = SimMemory::new();
    let mut alloc = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 8);
    let tm = TableMemory::coherent(&mem);
    for (count, entries, s) in [
        (0, 2, 0),
        (1, 2, 0),
        (3, 4, 1),
        (200, 256, 7),
        (256, 256, 7),
    ] {
        let t = InterruptTable::new(tm, &mut alloc, count, false).unwrap();
        assert_eq!(t.entries(), entries, "count {count}");
        assert_eq!(t.irta(), t.base().0 | s);
        t.free(&mut alloc);
    }
    let x2 = InterruptTable::new(tm, &mut alloc, 16, true).unwrap();
    assert_eq!(x2.irta(), x2.base().0 | (1 << 11) | 3);
    assert_eq!(
        InterruptTable::new(tm, &mut alloc, 257, false),
        Err(IntRemapError::TooManyEntries { requested: 257 })
    );
    assert_eq!(
        x2.program(tm, 16, irte(0x40, 0, SourceCheck::RequesterId(DEV))),
        Err(IntRemapError::IndexOutOfRange {
            index: 16,
            entries: 16
        })
    );
    let mut empty = SimFrameAllocator::new(&mem, PhysAddr(0x200_0000), 0);
    assert_eq!(
        InterruptTable::new(tm, &mut empty, 4, false),
        Err(IntRemapError::OutOfFrames)
    );
}

#[test]
fn irtes_follow_the_spec_layout() {
    let e = irte(0x41, 3, SourceCheck::RequesterId(DEV)).encode();
    assert_eq!(
        spec_decode(e),
        SpecIrte {
            present: true,
            fpd: false,
            destination_mode: 0,
            redirection_hint: 0,
            trigger_mode: 0,
            delivery_mode: 0,
            mode: 0,
            vector: 0x41,
            dst: 3 << 8,
            sid: 0x0318,
            sq: 0,
            svt: 0b01,
            reserved: 0,
        }
    );
    let bridged = irte(0x42, 1, SourceCheck::BusRange { first: 2, last: 4 }).encode();
    let d = spec_decode(bridged);
    assert_eq!((d.svt, d.sid, d.sq), (0b10, 0x0204, 0));
    let x2 = Irte {
        vector: 0x43,
        destination: Destination::X2apic(0x1234_5678),
        source: SourceCheck::RequesterId(DEV),
    };
    assert_eq!(spec_decode(x2.encode()).dst, 0x1234_5678);
}

#[test]
fn msi_messages_use_the_remappable_format() {
    let m = MsiMessage::remappable(0x8123);
    assert_eq!(m.address >> 20, 0xFEE);
    assert_eq!((m.address >> 5) & 0x7fff, 0x0123, "handle[14:0] in 19:5");
    assert_eq!((m.address >> 4) & 1, 1, "interrupt format: remappable");
    assert_eq!((m.address >> 3) & 1, 0, "no subhandle");
    assert_eq!((m.address >> 2) & 1, 1, "handle[15] in bit 2");
    assert_eq!(m.data, 0);
}

#[test]
fn a_table_without_valid_entries_blocks_and_faults_every_msi() {
    let sim = SimVtd::new();
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 64);
    let (unit, table) = remapping(&sim, &mut alloc, 8);
    assert!(unit.interrupt_remapping_enabled());
    for index in 0..table.entries() as u16 {
        assert_eq!(msi(&sim, DEV, index), refused(DEV, Some(index), 0x22));
        let [f] = faults(&unit)[..] else {
            panic!("one fault for index {index}")
        };
        assert_eq!(
            (f.source_id, f.reason, f.interrupt_index()),
            (DEV, 0x22, Some(index))
        );
    }
    assert_eq!(
        sim.cached_interrupt_entries(),
        0,
        "blocked entries are not cached"
    );
}

#[test]
fn a_device_reaches_only_its_programmed_vector_and_destination() {
    let sim = SimVtd::new();
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 64);
    let (mut unit, table) = remapping(&sim, &mut alloc, 16);
    deliver_through(&mut unit, &sim, &table, 5);
    // The neighbour forging DEV's handle is refused and attributed to itself.
    assert_eq!(msi(&sim, OTHER, 5), refused(OTHER, Some(5), 0x26));
    // DEV's other indices stay blocked.
    assert_eq!(msi(&sim, DEV, 4), refused(DEV, Some(4), 0x22));
    let seen = faults(&unit);
    assert_eq!(
        seen.iter()
            .map(|f| (f.source_id, f.reason, f.interrupt_index()))
            .collect::<Vec<_>>(),
        vec![(OTHER, 0x26, Some(5)), (DEV, 0x22, Some(4))]
    );
    // A function differing only in bit 2 is a different requester (SQ = 00b).
    let sibling = Bdf::from_requester_id(0x0318 | 0b100);
    assert_eq!(msi(&sim, sibling, 5), refused(sibling, Some(5), 0x26));
}

#[test]
fn a_forged_handle_beyond_the_table_faults() {
    let sim = SimVtd::new();
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 64);
    let (unit, table) = remapping(&sim, &mut alloc, 16);
    let tm = TableMemory::coherent(&*sim.mem);
    table
        .program(tm, 15, irte(0x41, 3, SourceCheck::RequesterId(DEV)))
        .unwrap();
    assert_eq!(msi(&sim, DEV, 16), refused(DEV, Some(16), 0x21));
    assert_eq!(msi(&sim, DEV, 0x8000), refused(DEV, Some(0x8000), 0x21));
    // Handle 15 + subhandle 1 (SHV) is index 16: beyond too.
    let shv = MsiMessage::remappable(15).address | (1 << 3);
    assert_eq!(sim.msi(DEV, shv, 1), refused(DEV, Some(16), 0x21));
    assert_eq!(sim.msi(DEV, shv, 0), delivered(0x41, 3, 15));
    assert_eq!(faults(&unit).iter().filter(|f| f.reason == 0x21).count(), 3);
}

#[test]
fn compatibility_format_interrupts_are_blocked_once_remapping_is_on() {
    let sim = SimVtd::new();
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 64);
    // Vector 0x30 to APIC 2, compatibility format.
    let (address, data) = (0xFEE0_2000, 0x30);
    let (_unit, _root) = bring_up(&sim, &mut alloc);
    assert_eq!(
        sim.msi(DEV, address, data),
        Ok(SimInterrupt {
            vector: 0x30,
            destination: 2,
            index: None
        }),
        "without remapping any device raises any vector"
    );
    let sim = SimVtd::new();
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 64);
    let (unit, _table) = remapping(&sim, &mut alloc, 4);
    assert_eq!(sim.msi(DEV, address, data), refused(DEV, None, 0x25));
    let [f] = faults(&unit)[..] else {
        panic!("one fault")
    };
    assert_eq!((f.source_id, f.reason), (DEV, 0x25));
    let gcmd: Vec<u32> = sim
        .regs
        .accesses()
        .into_iter()
        .filter_map(|a| match a {
            RegAccess::Write32(GCMD, v) => Some(v),
            _ => None,
        })
        .collect();
    assert!(gcmd.iter().all(|v| v & global::CFI == 0), "{gcmd:x?}");
    assert!(gcmd.iter().any(|v| v & global::SIRTP != 0));
    assert_eq!(gcmd.last().map(|v| v & global::IRE), Some(global::IRE));
}

#[test]
fn firmware_left_compatibility_format_on_is_turned_off() {
    let sim = SimVtd::new();
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 64);
    let (mut unit, _root) = bring_up(&sim, &mut alloc);
    // Firmware: remapping on with compatibility-format interrupts allowed.
    sim.mmio()
        .write32(GCMD, global::TE | global::QIE | global::CFI);
    let table =
        InterruptTable::new(TableMemory::coherent(&*sim.mem), &mut alloc, 4, false).unwrap();
    unit.enable_interrupt_remapping(&*sim.mem, &table, &StepClock::default())
        .unwrap();
    assert!(unit.interrupt_remapping_enabled());
    assert_eq!(sim.msi(DEV, 0xFEE0_0000, 0x30), refused(DEV, None, 0x25));
}

#[test]
fn a_dma_write_into_the_interrupt_window_is_an_interrupt_and_is_blocked() {
    let sim = SimVtd::new();
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 64);
    let (_unit, _table) = remapping(&sim, &mut alloc, 4);
    for (address, value, reason, index) in [
        (0xFEE0_0000, 0x30, 0x25, None),
        (0xFEE0_1000, 0xef, 0x25, None),
        (MsiMessage::remappable(1).address, 0, 0x22, Some(1)),
        (MsiMessage::remappable(9).address, 0, 0x21, Some(9)),
    ] {
        assert_eq!(
            sim.dma_write32(DEV, address, value),
            SimWrite::Interrupt(refused(DEV, index, reason)),
            "{address:#x}"
        );
        assert_eq!(sim.mem.read_u64(PhysAddr(address)), 0, "no memory written");
    }
}

#[test]
fn a_changed_irte_delivers_stale_until_it_is_invalidated() {
    let sim = SimVtd::new();
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 64);
    let (mut unit, table) = remapping(&sim, &mut alloc, 16);
    let tm = TableMemory::coherent(&*sim.mem);
    let own = SourceCheck::RequesterId(DEV);
    table.program(tm, 2, irte(0x41, 3, own)).unwrap();
    invalidate(&mut unit, &sim, 2);
    assert_eq!(msi(&sim, DEV, 2), delivered(0x41, 3, 2));
    assert_eq!(sim.cached_interrupt_entries(), 1);

    table.program(tm, 2, irte(0x52, 1, own)).unwrap();
    assert_eq!(msi(&sim, DEV, 2), delivered(0x41, 3, 2), "the sim caches");
    // An index-selective invalidation of another entry leaves it cached.
    invalidate(&mut unit, &sim, 3);
    assert_eq!(msi(&sim, DEV, 2), delivered(0x41, 3, 2));
    invalidate(&mut unit, &sim, 2);
    assert_eq!(msi(&sim, DEV, 2), delivered(0x52, 1, 2));

    table.block(tm, 2).unwrap();
    assert_eq!(
        msi(&sim, DEV, 2),
        delivered(0x52, 1, 2),
        "blocking owes one too"
    );
    unit.invalidate_interrupt_entries(&*sim.mem, InterruptScope::Global, &StepClock::default())
        .unwrap();
    assert_eq!(msi(&sim, DEV, 2), refused(DEV, Some(2), 0x22));
    assert_eq!(sim.cached_interrupt_entries(), 0);
    // The descriptors went through the queue, each followed by a wait.
    let consumed = sim.consumed.borrow();
    let iec: Vec<usize> = (0..consumed.len())
        .filter(|&i| consumed[i] as u64 & 0xf == 4)
        .collect();
    assert!(iec.len() >= 4);
    assert!(iec.iter().all(|&i| consumed[i + 1] as u64 & 0xf == 5));
}

#[test]
fn a_new_table_pointer_drops_every_cached_entry() {
    let sim = SimVtd::new();
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 64);
    let (mut unit, old) = remapping(&sim, &mut alloc, 4);
    let tm = TableMemory::coherent(&*sim.mem);
    deliver_through(&mut unit, &sim, &old, 1);
    let new = InterruptTable::new(tm, &mut alloc, 4, false).unwrap();
    unit.enable_interrupt_remapping(&*sim.mem, &new, &StepClock::default())
        .unwrap();
    assert_eq!(sim.regs.get(IRTA), new.irta());
    assert_eq!(msi(&sim, DEV, 1), refused(DEV, Some(1), 0x22));
}

#[test]
fn bridged_devices_are_verified_by_bus_range() {
    let sim = SimVtd::new();
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 64);
    let (mut unit, table) = remapping(&sim, &mut alloc, 4);
    let tm = TableMemory::coherent(&*sim.mem);
    // A conventional PCI device on bus 5 behind a PCIe-to-PCI bridge whose secondary bus is 5.
    table
        .program(
            tm,
            0,
            irte(0x44, 0, SourceCheck::BusRange { first: 5, last: 5 }),
        )
        .unwrap();
    invalidate(&mut unit, &sim, 0);
    let alias = Bdf::new(5, 0, 0).unwrap();
    let behind = Bdf::new(5, 3, 0).unwrap();
    assert_eq!(msi(&sim, alias, 0), delivered(0x44, 0, 0));
    assert_eq!(msi(&sim, behind, 0), delivered(0x44, 0, 0));
    for outside in [Bdf::new(4, 0, 0).unwrap(), Bdf::new(6, 0, 0).unwrap(), DEV] {
        assert_eq!(msi(&sim, outside, 0), refused(outside, Some(0), 0x26));
    }
}

#[test]
fn x2apic_destinations_need_extended_interrupt_mode() {
    let eim = DEFAULT_ECAP | (1 << 4);
    let sim = SimVtd::with_caps(DEFAULT_CAP, eim);
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 64);
    let (mut unit, _root) = bring_up(&sim, &mut alloc);
    let tm = TableMemory::coherent(&*sim.mem);
    let table = InterruptTable::new(tm, &mut alloc, 4, true).unwrap();
    unit.enable_interrupt_remapping(&*sim.mem, &table, &StepClock::default())
        .unwrap();
    let far = Irte {
        vector: 0x45,
        destination: Destination::X2apic(0x1_0002),
        source: SourceCheck::RequesterId(DEV),
    };
    table.program(tm, 3, far).unwrap();
    invalidate(&mut unit, &sim, 3);
    assert_eq!(msi(&sim, DEV, 3), delivered(0x45, 0x1_0002, 3));

    // Without ECAP.EIM the unit refuses an extended table, and an xAPIC table refuses
    // destinations above 255.
    let sim = SimVtd::new();
    let (mut unit, _root) = bring_up(&sim, &mut alloc);
    assert_eq!(
        unit.enable_interrupt_remapping(&*sim.mem, &table, &StepClock::default()),
        Err(UnitError::NoExtendedInterruptMode)
    );
    let xapic = InterruptTable::new(tm, &mut alloc, 4, false).unwrap();
    assert_eq!(
        xapic.program(tm, 0, far),
        Err(IntRemapError::DestinationNeedsX2apic { apic_id: 0x1_0002 })
    );
}

#[test]
fn enabling_needs_the_capability_and_queued_invalidation_and_is_bounded() {
    let clock = StepClock::default();
    let sim = SimVtd::with_caps(DEFAULT_CAP, DEFAULT_ECAP & !(1 << 3));
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 64);
    let tm = TableMemory::coherent(&*sim.mem);
    let table = InterruptTable::new(tm, &mut alloc, 4, false).unwrap();
    let mut unit = VtdUnit::new(sim.mmio(), TIMEOUT);
    assert_eq!(
        unit.enable_interrupt_remapping(&*sim.mem, &table, &clock),
        Err(UnitError::NoInterruptRemapping)
    );
    let sim = SimVtd::new();
    let mut unit = VtdUnit::new(sim.mmio(), TIMEOUT);
    assert_eq!(
        unit.enable_interrupt_remapping(&*sim.mem, &table, &clock),
        Err(UnitError::NoQueuedInvalidation)
    );
    unit.enable_queued_invalidation(&mut alloc, &clock).unwrap();
    sim.set_dead(DEAD_GCMD);
    assert!(matches!(
        unit.enable_interrupt_remapping(&*sim.mem, &table, &clock),
        Err(UnitError::TimedOut { .. })
    ));
    assert!(!unit.interrupt_remapping_enabled());
}

#[test]
fn an_interrupt_entry_invalidation_that_never_completes_times_out() {
    let sim = SimVtd::new();
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 64);
    let (mut unit, _table) = remapping(&sim, &mut alloc, 4);
    sim.set_dead(DEAD_QUEUE);
    let scope = InterruptScope::Entries {
        index: 1,
        index_mask: 0,
    };
    assert!(matches!(
        unit.invalidate_interrupt_entries(&*sim.mem, scope, &StepClock::default()),
        Err(UnitError::Invalidation(InvalidationError::TimedOut { .. }))
    ));
    // Register-based invalidation has no IEC: refused, not silently skipped.
    let sim = SimVtd::new();
    let mut unit = VtdUnit::new(sim.mmio(), TIMEOUT);
    assert_eq!(
        unit.invalidate_interrupt_entries(&*sim.mem, scope, &StepClock::default()),
        Err(UnitError::NoQueuedInvalidation)
    );
}

#[test]
fn irte_changes_are_single_16_byte_exchanges() {
    let mem = SimMemory::new();
    let mut alloc = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 4);
    let table = InterruptTable::new(TableMemory::coherent(&mem), &mut alloc, 8, false).unwrap();
    // The interrupt table changes only by 16-byte compare-exchange.
    let atomic = ExchangeOnly::page(&mem, table.base());
    let tm = TableMemory::coherent(&atomic);
    let e = irte(0x41, 3, SourceCheck::RequesterId(DEV));
    table.program(tm, 7, e).unwrap();
    table.block(tm, 7).unwrap();
    table.program(tm, 7, e).unwrap();
    assert_eq!(atomic.exchanges(), 3);
    assert_eq!(table.read(tm, 7), Ok(e.encode()));
    assert!(!spec_decode(table.read(tm, 6).unwrap()).present);
}

#[test]
fn a_small_x2apic_id_in_an_xapic_table_lands_in_dst_15_8() {
    // §9.10: with IRTA.EIME = 0 the destination is an 8-bit xAPIC ID in DST[15:8]; an x2APIC
    // ID that fits a byte is that same xAPIC ID, not DST[7:0] (which would reach APIC 0).
    let sim = SimVtd::new();
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 64);
    let (mut unit, table) = remapping(&sim, &mut alloc, 4);
    let tm = TableMemory::coherent(&*sim.mem);
    let small = Irte {
        vector: 0x46,
        destination: Destination::X2apic(3),
        source: SourceCheck::RequesterId(DEV),
    };
    table.program(tm, 1, small).unwrap();
    let d = spec_decode(table.read(tm, 1).unwrap());
    assert_eq!((d.present, d.vector, d.dst), (true, 0x46, 3 << 8));
    invalidate(&mut unit, &sim, 1);
    assert_eq!(msi(&sim, DEV, 1), delivered(0x46, 3, 1));
}

#[test]
fn an_xapic_id_in_an_extended_table_lands_in_dst_31_0() {
    // §9.10: with IRTA.EIME = 1 the destination is the 32-bit x2APIC ID in DST[31:0].
    let mem = SimMemory::new();
    let mut alloc = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 4);
    let tm = TableMemory::coherent(&mem);
    let table = InterruptTable::new(tm, &mut alloc, 4, true).unwrap();
    let irte = Irte {
        vector: 0x46,
        destination: Destination::Xapic(3),
        source: SourceCheck::RequesterId(DEV),
    };
    table.program(tm, 1, irte).unwrap();
    let d = spec_decode(table.read(tm, 1).unwrap());
    assert_eq!((d.present, d.vector, d.dst), (true, 0x46, 3));
}

#[test]
fn a_freed_table_gives_its_frame_back() {
    let mem = SimMemory::new();
    let mut alloc = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 1);
    let tm = TableMemory::coherent(&mem);
    let first = InterruptTable::new(tm, &mut alloc, 4, false).unwrap();
    let base = first.base();
    assert_eq!(alloc.frames_in_use(), 1);
    first.free(&mut alloc);
    assert_eq!(alloc.frames_in_use(), 0);
    let again = InterruptTable::new(tm, &mut alloc, 4, false).unwrap();
    assert_eq!(again.base(), base, "the one frame, reused");
}

#[test]
fn a_range_may_take_the_whole_table_and_never_more() {
    let mem = SimMemory::new();
    let mut alloc = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 2);
    let tm = TableMemory::coherent(&mem);
    let mut t = InterruptTable::new(tm, &mut alloc, 4, false).unwrap();
    assert_eq!(t.reserve(5), None, "8 entries asked of a table of 4");
    assert_eq!(t.reserve(8), None);
    let all = t.reserve(4).unwrap();
    assert_eq!((all.first(), all.len(), all.is_empty()), (0, 4, false));
    assert_eq!(all.index(3), Some(3));
    assert_eq!(t.reserve(1), None, "full");
}

#[test]
fn releasing_a_range_frees_exactly_its_entries() {
    let mem = SimMemory::new();
    let mut alloc = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 2);
    let tm = TableMemory::coherent(&mem);
    let mut t = InterruptTable::new(tm, &mut alloc, 16, false).unwrap();
    let ranges = [(); 3].map(|_| t.reserve(4).unwrap());
    assert_eq!(ranges.map(|r| r.first()), [0, 4, 8]);
    t.release(ranges[1]);
    // Only 4..8 came back: the neighbour at 8..12 is still owned, so the next two go to 4
    // and 12.
    assert_eq!(t.reserve(4).map(|r| r.first()), Some(4));
    assert_eq!(t.reserve(4).map(|r| r.first()), Some(12));
    assert_eq!(t.reserve(1), None, "full");
}

#[test]
fn errors_say_what_and_which() {
    let cases = [
        (IntRemapError::OutOfFrames, "out of frames"),
        (
            IntRemapError::TooManyEntries { requested: 300 },
            "300 interrupt entries exceed the 256",
        ),
        (
            IntRemapError::IndexOutOfRange {
                index: 17,
                entries: 16,
            },
            "index 17 beyond a table of 16",
        ),
        (
            IntRemapError::DestinationNeedsX2apic { apic_id: 0x100 },
            "APIC ID 256 needs x2APIC",
        ),
        (
            IntRemapError::ConcurrentUpdate { index: 9 },
            "entry 9 changed",
        ),
        (
            IntRemapError::BroadcastDestination { apic_id: 0xff },
            "APIC ID 0xff is the broadcast",
        ),
    ];
    for (e, text) in cases {
        assert!(e.to_string().contains(text), "{e:?}: {e}");
    }
}

#[test]
fn redoing_an_unconfirmed_batch_drops_stale_interrupt_entries() {
    let sim = SimVtd::new();
    let mut alloc = SimFrameAllocator::new(&sim.mem, PhysAddr(0x100_0000), 64);
    let (mut unit, table) = remapping(&sim, &mut alloc, 4);
    deliver_through(&mut unit, &sim, &table, 2);
    // Quarantined, but the batch carrying the IEC descriptor was not confirmed: the redo
    // must reach the interrupt entry cache as well.
    table.block(TableMemory::coherent(&*sim.mem), 2).unwrap();
    let mut redo = crate::invalidation::SwitchBatch::new();
    redo.invalidate_everything(true);
    unit.flush(&*sim.mem, &redo, &StepClock::default()).unwrap();
    assert_eq!(msi(&sim, DEV, 2), refused(DEV, Some(2), 0x22));
    assert_eq!(sim.cached_interrupt_entries(), 0);
}

#[test]
fn broadcast_destinations_are_refused() {
    // A physical destination of all ones is the broadcast ID — 0xFF in xAPIC format, which an
    // xAPIC-mode IRTE carries in DST[15:8] (§9.10), 0xFFFF_FFFF in x2APIC format (Intel SDM
    // Vol. 3A, physical destination mode) — so such an IRTE interrupts every CPU, never one.
    let mem = SimMemory::new();
    let mut alloc = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 4);
    let tm = TableMemory::coherent(&mem);
    let xapic = InterruptTable::new(tm, &mut alloc, 4, false).unwrap();
    let x2apic = InterruptTable::new(tm, &mut alloc, 4, true).unwrap();
    let to = |destination| Irte {
        vector: 0x47,
        destination,
        source: SourceCheck::RequesterId(DEV),
    };
    for (table, destination) in [
        (&xapic, Destination::Xapic(0xff)),
        (&xapic, Destination::X2apic(0xff)),
        (&x2apic, Destination::X2apic(u32::MAX)),
    ] {
        assert_eq!(
            table.program(tm, 0, to(destination)),
            Err(IntRemapError::BroadcastDestination {
                apic_id: match destination {
                    Destination::Xapic(id) => u32::from(id),
                    Destination::X2apic(id) => id,
                }
            }),
            "{destination:?}"
        );
        assert!(!spec_decode(table.read(tm, 0).unwrap()).present);
    }
    // The IDs just below are single CPUs, and 0xFF is one in x2APIC format.
    xapic.program(tm, 1, to(Destination::Xapic(0xfe))).unwrap();
    assert_eq!(spec_decode(xapic.read(tm, 1).unwrap()).dst, 0xfe << 8);
    xapic.program(tm, 2, to(Destination::X2apic(0xfe))).unwrap();
    assert_eq!(spec_decode(xapic.read(tm, 2).unwrap()).dst, 0xfe << 8);
    x2apic
        .program(tm, 1, to(Destination::X2apic(0xff)))
        .unwrap();
    assert_eq!(spec_decode(x2apic.read(tm, 1).unwrap()).dst, 0xff);
    x2apic
        .program(tm, 2, to(Destination::X2apic(u32::MAX - 1)))
        .unwrap();
    assert_eq!(spec_decode(x2apic.read(tm, 2).unwrap()).dst, u32::MAX - 1);
}
