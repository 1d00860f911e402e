//! Interrupt remapping end to end against the simulated unit (DTE cache, interrupt entry
//! cache, reordered commands): what a device's MSI — or its DMA write into the interrupt
//! window — does under the tables the builder wrote. The DTE and IRTE decoders below take
//! their bit positions from the spec (§2.2.2.1, §2.2.5), not from the builder.
use std::rc::Rc;

use super::*;
use crate::event_log::Event;
use crate::isolation_tests::{rig_with as rig, Rig};
use crate::regs::{self, control};
use crate::sim_device::{SimInterrupt, SimIrFault, SimIrReason, SimWrite};
use lazaret_types::sim::{ExchangeOnly, SimFrameAllocator, SimMemory};
use lazaret_types::Mmio;

/// HATS 6 levels, IASup; with GASup (bit 7) the unit reads 128-bit IRTEs.
const EFR: u64 = (2 << 10) | (1 << 6);
const EFR_GA: u64 = EFR | (1 << 7);
const DT: PhysAddr = PhysAddr(0x80_0000);
const DEV: u16 = 0x0018;
const OTHER: u16 = 0x0020;
const MSI: u64 = 0xFEE0_0000;

impl Rig {
    /// A table of `count` entries in the unit's format, attached to `rid` and invalidated.
    fn attach(&mut self, a: &mut SimFrameAllocator<'_>, rid: u16, count: u32) -> InterruptTable {
        let t = InterruptTable::new(&*self.mem, a, self.unit.irte_format(), count).unwrap();
        self.table.set_interrupt_table(&*self.mem, rid, &t).unwrap();
        self.unit
            .after_interrupt_dte_change(&*self.mem, &self.clock, &[rid])
            .unwrap();
        t
    }

    fn program(&mut self, t: &InterruptTable, rid: u16, index: u16, vector: u8, dst: u32) {
        let irte = Irte {
            vector,
            destination: dst,
        };
        t.program(&*self.mem, index, irte).unwrap();
        self.unit
            .invalidate_interrupt_tables(&*self.mem, &self.clock, &[rid])
            .unwrap();
    }

    fn msi(&self, rid: u16, index: u16) -> Result<SimInterrupt, SimIrFault> {
        let m = MsiMessage::remapped(index);
        self.sim.msi(rid, m.address, m.data)
    }

    fn events(&mut self) -> Vec<Event> {
        let mut seen = Vec::new();
        self.unit
            .drain_events(&*self.mem, &self.clock, |e| seen.push(e))
            .unwrap();
        seen
    }
}

/// Runs `body` on a fresh rig of each IRTE format (32-bit, then 128-bit).
fn for_both_formats(body: impl Fn(&mut Rig, &mut SimFrameAllocator<'_>)) {
    for efr in [EFR, EFR_GA] {
        let mem = Rc::new(SimMemory::new());
        let mut a = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 64);
        let mut r = rig(efr, &mut a, &mem);
        body(&mut r, &mut a);
    }
}

fn delivered(vector: u8, destination: u32, index: u16) -> Result<SimInterrupt, SimIrFault> {
    Ok(SimInterrupt {
        vector,
        destination,
        index: Some(index),
    })
}

fn refused(
    device_id: u16,
    index: Option<u16>,
    reason: SimIrReason,
) -> Result<SimInterrupt, SimIrFault> {
    Err(SimIrFault {
        device_id,
        index,
        reason,
        logged: true,
    })
}

/// §2.2.2.1 DTE bits 191:128, field by field.
#[derive(Debug, PartialEq, Eq)]
struct SpecDteInterrupts {
    iv: u64,
    int_tab_len: u64,
    ig: u64,
    root: u64,
    init_pass: u64,
    eint_pass: u64,
    nmi_pass: u64,
    int_ctl: u64,
    lint0_pass: u64,
    lint1_pass: u64,
    reserved: u64,
}

fn spec_dte(v: u64) -> SpecDteInterrupts {
    let f = |lo: u32, width: u32| (v >> lo) & ((1u64 << width) - 1);
    SpecDteInterrupts {
        iv: f(0, 1),
        int_tab_len: f(1, 4),
        ig: f(5, 1),
        root: f(6, 46) << 6,
        init_pass: f(56, 1),
        eint_pass: f(57, 1),
        nmi_pass: f(58, 1),
        int_ctl: f(60, 2),
        lint0_pass: f(62, 1),
        lint1_pass: f(63, 1),
        reserved: f(52, 4) | f(59, 1),
    }
}

/// §2.2.5 IRTE fields common to both formats (remapped mode), plus vector and destination.
#[derive(Debug, PartialEq, Eq)]
struct SpecIrte {
    remap_en: u64,
    sup_iopf: u64,
    int_type: u64,
    rq_eoi: u64,
    dm: u64,
    guest_mode: u64,
    vector: u64,
    destination: u64,
    reserved: u128,
}

fn spec_irte(v: u128, wide: bool) -> SpecIrte {
    let f = |lo: u32, width: u32| ((v >> lo) & ((1u128 << width) - 1)) as u64;
    let common = |vector, destination, reserved| SpecIrte {
        remap_en: f(0, 1),
        sup_iopf: f(1, 1),
        int_type: f(2, 3),
        rq_eoi: f(5, 1),
        dm: f(6, 1),
        guest_mode: f(7, 1),
        vector,
        destination,
        reserved,
    };
    if wide {
        common(
            f(64, 8),
            f(8, 24) | (f(120, 8) << 24),
            v & ((0xffff_ffffu128 << 32) | (((1u128 << 48) - 1) << 72)),
        )
    } else {
        common(f(16, 8), f(8, 8), v & !0x00ff_ffff)
    }
}

#[test]
fn the_unit_reads_128_bit_entries_only_with_gasup() {
    let mem = Rc::new(SimMemory::new());
    let mut a = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 64);
    let r = rig(EFR_GA, &mut a, &mem);
    assert_ne!(r.unit.registers().read64(regs::CONTROL) & control::GA_EN, 0);
    assert_eq!(r.unit.irte_format(), IrteFormat::Ga128);
    assert_eq!(IrteFormat::for_unit(r.unit.features()), IrteFormat::Ga128);
    let r = rig(EFR, &mut a, &mem);
    assert_eq!(r.unit.registers().read64(regs::CONTROL) & control::GA_EN, 0);
    assert_eq!(r.unit.irte_format(), IrteFormat::Legacy32);
    assert_eq!(
        IrteFormat::for_unit(r.unit.features()),
        IrteFormat::Legacy32
    );
}

#[test]
fn dte_interrupt_fields_follow_the_spec_and_leave_the_dma_half_alone() {
    let mem = Rc::new(SimMemory::new());
    let mut a = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 64);
    let dt = DeviceTable::new(&*mem, DT, 0xff).unwrap();
    let top = PhysAddr(DT.0 + u64::from(DEV) * 32 + 24);
    mem.write_u64(top, 0xabcd); // bits 255:192: not ours
    let lower_before = mem.read_u128(PhysAddr(DT.0 + u64::from(DEV) * 32));
    let t = InterruptTable::new(&*mem, &mut a, IrteFormat::Ga128, 3).unwrap();
    dt.set_interrupt_table(&*mem, DEV, &t).unwrap();
    assert_eq!(
        spec_dte(dt.interrupt_bits(&*mem, DEV).unwrap()),
        SpecDteInterrupts {
            iv: 1,
            int_tab_len: 2,
            ig: 0,
            root: t.base().0,
            init_pass: 0,
            eint_pass: 0,
            nmi_pass: 0,
            int_ctl: 0b10,
            lint0_pass: 0,
            lint1_pass: 0,
            reserved: 0,
        }
    );
    assert_eq!(mem.read_u64(top), 0xabcd);
    assert_eq!(
        mem.read_u128(PhysAddr(DT.0 + u64::from(DEV) * 32)),
        lower_before
    );
    dt.block_interrupts(&*mem, OTHER).unwrap();
    let blocked = spec_dte(dt.interrupt_bits(&*mem, OTHER).unwrap());
    assert_eq!((blocked.iv, blocked.int_ctl, blocked.root), (1, 0, 0));
    assert!(matches!(
        dt.set_interrupt_table(&*mem, 0x100, &t),
        Err(IntRemapError::DeviceTable(
            DeviceTableError::BeyondTable { .. }
        ))
    ));
}

#[test]
fn irtes_follow_the_spec_layouts() {
    let irte = Irte {
        vector: 0x41,
        destination: 0x12,
    };
    let narrow = spec_irte(irte.encode(IrteFormat::Legacy32).unwrap(), false);
    let wide = spec_irte(irte.encode(IrteFormat::Ga128).unwrap(), true);
    for e in [&narrow, &wide] {
        assert_eq!(
            (
                e.remap_en,
                e.sup_iopf,
                e.int_type,
                e.rq_eoi,
                e.dm,
                e.guest_mode
            ),
            (1, 0, 0, 0, 0, 0)
        );
        assert_eq!((e.vector, e.destination, e.reserved), (0x41, 0x12, 0));
    }
    assert!(irte.encode(IrteFormat::Legacy32).unwrap() >> 32 == 0);
    let far = Irte {
        vector: 0x42,
        destination: 0x1234_5678,
    };
    assert_eq!(
        spec_irte(far.encode(IrteFormat::Ga128).unwrap(), true).destination,
        0x1234_5678
    );
    assert_eq!(
        far.encode(IrteFormat::Legacy32),
        Err(IntRemapError::DestinationTooWide {
            apic_id: 0x1234_5678
        })
    );
    assert_eq!(
        MsiMessage::remapped(0x1ff),
        MsiMessage {
            address: 0xFEE0_0000,
            data: 0x1ff
        }
    );
}

#[test]
fn table_sizes_come_from_the_count_within_one_frame() {
    let mem = SimMemory::new();
    let mut a = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 8);
    for (format, count, entries, len) in [
        (IrteFormat::Ga128, 0, 1, 0),
        (IrteFormat::Ga128, 5, 8, 3),
        (IrteFormat::Ga128, 256, 256, 8),
        (IrteFormat::Legacy32, 512, 512, 9),
    ] {
        let t = InterruptTable::new(&mem, &mut a, format, count).unwrap();
        assert_eq!(t.entries(), entries);
        assert_eq!(spec_dte(t.dte_interrupt_bits()).int_tab_len, len);
        assert_eq!(t.base().0 % 128, 0, "128-byte aligned");
        t.free(&mut a);
    }
    assert_eq!(
        InterruptTable::new(&mem, &mut a, IrteFormat::Ga128, 257),
        Err(IntRemapError::TooManyEntries {
            requested: 257,
            max: 256
        })
    );
    assert_eq!(
        InterruptTable::new(&mem, &mut a, IrteFormat::Legacy32, 513),
        Err(IntRemapError::TooManyEntries {
            requested: 513,
            max: 512
        })
    );
    let mut none = SimFrameAllocator::new(&mem, PhysAddr(0x200_0000), 0);
    assert_eq!(
        InterruptTable::new(&mem, &mut none, IrteFormat::Ga128, 1),
        Err(IntRemapError::OutOfFrames)
    );
}

#[test]
fn a_quarantine_table_blocks_and_logs_every_msi() {
    for_both_formats(|r, a| {
        let t = r.attach(a, DEV, 8);
        for index in 0..t.entries() as u16 {
            assert_eq!(
                r.msi(DEV, index),
                refused(DEV, Some(index), SimIrReason::NotRemapped)
            );
        }
        let events = r.events();
        assert_eq!(events.len(), 8);
        for e in events {
            let Event::IoPageFault {
                device_id,
                address,
                flags,
                ..
            } = e
            else {
                panic!("{e:?}")
            };
            assert_eq!((device_id, address), (DEV, MSI));
            assert!(flags.interrupt() && flags.write(), "{flags:?}");
        }
        assert_eq!(r.sim.cached_interrupt_entries(), 0);
    });
}

#[test]
fn a_device_reaches_only_its_programmed_vector_and_destination() {
    for_both_formats(|r, a| {
        let own = r.attach(a, DEV, 8);
        let _quarantined = r.attach(a, OTHER, 8);
        r.program(&own, DEV, 3, 0x41, 2);
        assert_eq!(r.msi(DEV, 3), delivered(0x41, 2, 3));
        // The same offset from another device goes through that device's own table.
        assert_eq!(
            r.msi(OTHER, 3),
            refused(OTHER, Some(3), SimIrReason::NotRemapped)
        );
        assert_eq!(
            r.msi(DEV, 2),
            refused(DEV, Some(2), SimIrReason::NotRemapped)
        );
        let ids: Vec<u16> = r
            .events()
            .iter()
            .filter_map(|e| match e {
                Event::IoPageFault { device_id, .. } => Some(*device_id),
                _ => None,
            })
            .collect();
        assert_eq!(ids, vec![OTHER, DEV]);
        // Vector and destination bits in the message itself are ignored: data 10:0 is the
        // offset, the address carries nothing.
        assert_eq!(r.sim.msi(DEV, 0xFEE0_F00C, 3), delivered(0x41, 2, 3));
    });
}

#[test]
fn a_forged_offset_beyond_the_table_faults() {
    let mem = Rc::new(SimMemory::new());
    let mut a = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 64);
    let mut r = rig(EFR_GA, &mut a, &mem);
    let t = r.attach(&mut a, DEV, 4);
    r.program(&t, DEV, 3, 0x41, 2);
    for index in [4, 0xff] {
        assert_eq!(
            r.msi(DEV, index),
            refused(DEV, Some(index), SimIrReason::IndexBeyondTable)
        );
    }
    assert_eq!(r.events().len(), 2);
    assert_eq!(
        t.program(
            &*mem,
            4,
            Irte {
                vector: 1,
                destination: 0
            }
        ),
        Err(IntRemapError::IndexOutOfRange {
            index: 4,
            entries: 4
        })
    );
}

#[test]
fn a_stalled_unit_times_out_interrupt_invalidations() {
    let mem = Rc::new(SimMemory::new());
    let mut a = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 64);
    let mut r = rig(EFR_GA, &mut a, &mem);
    let t = r.attach(&mut a, DEV, 4);
    r.sim.set_stalled(true);
    t.program(
        &*mem,
        0,
        Irte {
            vector: 0x41,
            destination: 2,
        },
    )
    .unwrap();
    assert!(r
        .unit
        .invalidate_interrupt_tables(&*mem, &r.clock, &[DEV])
        .is_err());
    assert!(r
        .unit
        .after_interrupt_dte_change(&*mem, &r.clock, &[DEV])
        .is_err());
}

#[test]
fn nmi_init_extint_and_smi_from_a_device_are_blocked() {
    let mem = Rc::new(SimMemory::new());
    let mut a = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 64);
    let mut r = rig(EFR_GA, &mut a, &mem);
    let t = r.attach(&mut a, DEV, 8);
    r.program(&t, DEV, 0, 0x41, 2);
    for message_type in [0b010, 0b100, 0b101, 0b111] {
        assert_eq!(
            r.sim.msi(DEV, MSI, message_type << 8),
            refused(
                DEV,
                None,
                SimIrReason::MessageTypeBlocked {
                    message_type: message_type as u8
                }
            )
        );
    }
    assert_eq!(r.events().len(), 4);
}

#[test]
fn interrupts_of_devices_without_a_table_pass_unless_blocked() {
    let mem = Rc::new(SimMemory::new());
    let mut a = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 64);
    let mut r = rig(EFR_GA, &mut a, &mem);
    // IV = 0 (a DTE as DeviceTable::new leaves it): the MSI is delivered as sent.
    assert_eq!(
        r.sim.msi(OTHER, 0xFEE0_3000, 0x30),
        Ok(SimInterrupt {
            vector: 0x30,
            destination: 3,
            index: None
        })
    );
    r.table.block_interrupts(&*mem, OTHER).unwrap();
    r.unit
        .after_interrupt_dte_change(&*mem, &r.clock, &[OTHER])
        .unwrap();
    assert_eq!(
        r.sim.msi(OTHER, 0xFEE0_3000, 0x30),
        refused(OTHER, None, SimIrReason::IntCtlAbort)
    );
}

#[test]
fn a_dma_write_into_the_interrupt_window_is_an_interrupt_and_is_blocked() {
    let mem = Rc::new(SimMemory::new());
    let mut a = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 64);
    let mut r = rig(EFR_GA, &mut a, &mem);
    let _empty = r.attach(&mut a, DEV, 8);
    for (address, value, reason, index) in [
        (MSI, 0, SimIrReason::NotRemapped, Some(0)),
        (
            0xFEE0_1000,
            0x0030,
            SimIrReason::IndexBeyondTable,
            Some(0x30),
        ),
        (
            0xFEE0_0000,
            0x4400,
            SimIrReason::MessageTypeBlocked { message_type: 4 },
            None,
        ),
    ] {
        assert_eq!(
            r.sim.dma_write32(DEV, address, value),
            SimWrite::Interrupt(refused(DEV, index, reason)),
            "{address:#x} {value:#x}"
        );
        assert_eq!(mem.read_u64(PhysAddr(address)), 0, "no memory written");
    }
}

#[test]
fn a_changed_irte_delivers_stale_until_its_table_is_invalidated() {
    for_both_formats(|r, a| {
        let t = r.attach(a, DEV, 8);
        let other = r.attach(a, OTHER, 8);
        r.program(&t, DEV, 1, 0x41, 2);
        assert_eq!(r.msi(DEV, 1), delivered(0x41, 2, 1));
        t.program(
            &*r.mem,
            1,
            Irte {
                vector: 0x52,
                destination: 1,
            },
        )
        .unwrap();
        assert_eq!(r.msi(DEV, 1), delivered(0x41, 2, 1), "the sim caches");
        // Another device's invalidation leaves DEV's entries cached.
        r.program(&other, OTHER, 0, 0x60, 0);
        assert_eq!(r.msi(DEV, 1), delivered(0x41, 2, 1));
        r.unit
            .invalidate_interrupt_tables(&*r.mem, &r.clock, &[DEV])
            .unwrap();
        assert_eq!(r.msi(DEV, 1), delivered(0x52, 1, 1));
        t.block(&*r.mem, 1).unwrap();
        assert_eq!(
            r.msi(DEV, 1),
            delivered(0x52, 1, 1),
            "blocking owes one too"
        );
        r.unit
            .invalidate_interrupt_tables(&*r.mem, &r.clock, &[DEV])
            .unwrap();
        assert_eq!(
            r.msi(DEV, 1),
            refused(DEV, Some(1), SimIrReason::NotRemapped)
        );
    });
}

#[test]
fn quarantine_blocks_every_entry_of_the_device_and_only_its_own() {
    for_both_formats(|r, a| {
        let t = r.attach(a, DEV, 8);
        let other = r.attach(a, OTHER, 8);
        for i in 0..8 {
            r.program(&t, DEV, i, 0x40 + i as u8, 1);
            r.program(&other, OTHER, i, 0x80 + i as u8, 1);
            assert_eq!(r.msi(DEV, i), delivered(0x40 + i as u8, 1, i));
            assert_eq!(r.msi(OTHER, i), delivered(0x80 + i as u8, 1, i));
        }
        let frames = a.frames_in_use();
        t.block_all(&*r.mem).unwrap();
        r.unit
            .invalidate_interrupt_tables(&*r.mem, &r.clock, &[DEV])
            .unwrap();
        assert_eq!(a.frames_in_use(), frames, "quarantine allocates nothing");
        for i in 0..8 {
            assert_eq!(
                r.msi(DEV, i),
                refused(DEV, Some(i), SimIrReason::NotRemapped)
            );
            assert_eq!(r.msi(OTHER, i), delivered(0x80 + i as u8, 1, i));
        }
    });
}

#[test]
fn a_new_table_needs_the_dte_invalidated_before_the_entries() {
    let mem = Rc::new(SimMemory::new());
    let mut a = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 64);
    let mut r = rig(EFR_GA, &mut a, &mem);
    let old = r.attach(&mut a, DEV, 4);
    r.program(&old, DEV, 0, 0x41, 2);
    assert_eq!(r.msi(DEV, 0), delivered(0x41, 2, 0));
    let new = InterruptTable::new(&*mem, &mut a, IrteFormat::Ga128, 4).unwrap();
    new.program(
        &*mem,
        0,
        Irte {
            vector: 0x52,
            destination: 1,
        },
    )
    .unwrap();
    r.table.set_interrupt_table(&*mem, DEV, &new).unwrap();
    // Entries only: the cached DTE still names the old table, which refills the cache.
    r.unit
        .invalidate_interrupt_tables(&*mem, &r.clock, &[DEV])
        .unwrap();
    assert_eq!(r.msi(DEV, 0), delivered(0x41, 2, 0));
    // With an MSI between every two command effects, in several orders, the new table wins.
    for seed in 1..16 {
        r.sim.set_seed(seed);
        old.program(
            &*mem,
            0,
            Irte {
                vector: 0x41,
                destination: 2,
            },
        )
        .unwrap();
        r.table.set_interrupt_table(&*mem, DEV, &old).unwrap();
        r.unit
            .after_interrupt_dte_change(&*mem, &r.clock, &[DEV])
            .unwrap();
        assert_eq!(r.msi(DEV, 0), delivered(0x41, 2, 0));
        r.table.set_interrupt_table(&*mem, DEV, &new).unwrap();
        r.sim.set_msi_during_invalidation(Some((DEV, MSI, 0)));
        r.unit
            .after_interrupt_dte_change(&*mem, &r.clock, &[DEV, OTHER])
            .unwrap();
        r.sim.set_msi_during_invalidation(None);
        assert!(!r.sim.take_msis_during_invalidation().is_empty());
        assert_eq!(r.msi(DEV, 0), delivered(0x52, 1, 0), "seed {seed}");
    }
}

#[test]
fn every_change_is_one_16_byte_exchange_and_32_bit_neighbours_survive() {
    let mem = SimMemory::new();
    let mut a = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 8);
    let dt = DeviceTable::new(&mem, DT, 0xff).unwrap();
    let t = InterruptTable::new(&mem, &mut a, IrteFormat::Legacy32, 8).unwrap();
    // Tables change only by 16-byte compare-exchange.
    let atomic = ExchangeOnly::everywhere(&mem);
    for i in 0..8 {
        let irte = Irte {
            vector: 0x40 + i as u8,
            destination: i.into(),
        };
        t.program(&atomic, i, irte).unwrap();
    }
    t.block(&atomic, 5).unwrap();
    dt.set_interrupt_table(&atomic, DEV, &t).unwrap();
    assert_eq!(atomic.exchanges(), 10);
    for i in 0..8u16 {
        let e = spec_irte(t.read(&mem, i).unwrap(), false);
        if i == 5 {
            assert_eq!(e.remap_en, 0);
        } else {
            assert_eq!(
                (e.remap_en, e.vector, e.destination),
                (1, 0x40 + u64::from(i), u64::from(i))
            );
        }
    }
}

/// §2.2.5: a 32-bit IRTE's Destination is 8 bits (15:8), so APIC ID 255 still fits and 256
/// is the first that must be refused rather than truncated.
#[test]
fn a_32_bit_entry_takes_every_8_bit_apic_id_and_no_wider() {
    let top = Irte {
        vector: 0x41,
        destination: 0xff,
    };
    let e = spec_irte(top.encode(IrteFormat::Legacy32).unwrap(), false);
    assert_eq!((e.remap_en, e.vector, e.destination), (1, 0x41, 0xff));
    assert_eq!(
        Irte {
            destination: 0x100,
            ..top
        }
        .encode(IrteFormat::Legacy32),
        Err(IntRemapError::DestinationTooWide { apic_id: 0x100 })
    );
    // The 128-bit entry takes both, destination split at bit 24 (§2.2.5.2).
    let wide = Irte {
        destination: 0x100,
        ..top
    };
    let e = spec_irte(wide.encode(IrteFormat::Ga128).unwrap(), true);
    assert_eq!(e.destination, 0x100);
}

#[test]
fn a_freed_table_gives_its_frame_back() {
    let mem = SimMemory::new();
    let mut a = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 8);
    let before = a.frames_in_use();
    let t = InterruptTable::new(&mem, &mut a, IrteFormat::Ga128, 8).unwrap();
    assert_eq!(a.frames_in_use(), before + 1);
    t.free(&mut a);
    assert_eq!(a.frames_in_use(), before);
}

/// The errors end up in the log: each says what failed, with its numbers.
#[test]
fn errors_name_what_failed() {
    for (e, words) in [
        (IntRemapError::OutOfFrames, &["out of frames"][..]),
        (
            IntRemapError::TooManyEntries {
                requested: 513,
                max: 512,
            },
            &["513", "512"][..],
        ),
        (
            IntRemapError::IndexOutOfRange {
                index: 9,
                entries: 8,
            },
            &["index 9", "8"][..],
        ),
        (
            IntRemapError::DestinationTooWide { apic_id: 300 },
            &["APIC ID 300"][..],
        ),
        (
            IntRemapError::ConcurrentUpdate { index: 7 },
            &["entry 7", "changed"][..],
        ),
        (
            IntRemapError::from(DeviceTableError::BeyondTable {
                requester_id: 0x100,
                entries: 256,
            }),
            &["0x0100", "256"][..],
        ),
    ] {
        let text = format!("{e}");
        for w in words {
            assert!(text.contains(w), "{text:?} lacks {w:?}");
        }
    }
}
