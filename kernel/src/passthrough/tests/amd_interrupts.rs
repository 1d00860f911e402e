//! Interrupt remapping through the core on the simulated AMD-Vi unit (§2.2.5), in both IRTE
//! formats: every device's own table exists, blocked, from the moment it is added; DeviceIDs
//! with no device record are blocked at bring-up (not the IOAPIC); only an assigned device's
//! programmed entry delivers; entering quarantine blocks it again through the simulator's
//! interrupt entry cache. The simulator decodes DTEs and IRTEs from the spec's figures.
use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use alloc::vec;

use lazaret_amd_vi::sim_device::SimAmdVi;
use lazaret_amd_vi::{AmdViUnit, DeviceTable};
use lazaret_types::poll::StepClock;
use lazaret_types::sim::{SimFrameAllocator, SimMemory, SimRegisters};
use lazaret_types::{Bdf, PhysAddr};

use super::fixture::{cast, Dev};
use crate::cmdline::QuarantineMode;
use crate::iommu::amd::{block_interrupts_before_enable, AmdViIommu, UnitSetup};
use crate::passthrough::iommu::InterruptTarget;
use crate::passthrough::registry::DeviceKind;
use crate::passthrough::{self, DeviceLock, DevicesGuard};

type Unit<'a> = AmdViIommu<'a, SimMemory, SimRegisters, StepClock>;

/// HATS = 10b (EFR 11:10); GASup is EFR bit 7 (§3.4.5).
const HATS: u64 = 2 << 10;
const GA_SUP: u64 = 1 << 7;
/// The IOAPIC's DeviceID on QEMU's q35 (00:14.0), an IVHD special device.
const IOAPIC: u16 = 0x00a0;
/// A DeviceID the IVRS names but no device record has (00:06.0).
const UNOWNED: u16 = 0x0030;
const TARGET: InterruptTarget = InterruptTarget {
    vector: 0x41,
    apic_id: 0,
};

/// Bring-up as the kernel does it: every DeviceID but the IOAPIC blocked before enabling.
fn iommu<'a>(
    mem: &'a SimMemory,
    regs: SimRegisters,
    alloc: &mut SimFrameAllocator<'a>,
) -> Unit<'a> {
    iommu_trusted(mem, regs, alloc, true)
}

/// `trusted`: whether the IVRS lets the unit's remapping be relied on.
fn iommu_trusted<'a>(
    mem: &'a SimMemory,
    regs: SimRegisters,
    alloc: &mut SimFrameAllocator<'a>,
    trusted: bool,
) -> Unit<'a> {
    // Buses 0..=2: the cast's devices and bridge aliases.
    let table = DeviceTable::new(mem, PhysAddr(0x80_0000), 0x2ff).unwrap();
    let ids = (0..=0x2ffu16).filter(|id| *id != IOAPIC);
    assert_eq!(
        block_interrupts_before_enable(&table, mem, ids).unwrap(),
        0x2ff
    );
    let clock = StepClock::default();
    let hw = AmdViUnit::bring_up(regs, mem, alloc, &table, &clock, 1000).unwrap();
    let coverage: BTreeMap<_, _> = (0..6).map(|i| (cast(i).sbdf, 0)).collect();
    let setup = UnitSetup {
        hw,
        table,
        segment: 0,
        base: PhysAddr(0xfed8_0000),
        interrupt_remapping: trusted,
    };
    AmdViIommu::new(mem, clock, vec![setup], coverage).unwrap()
}

fn add(g: &mut DevicesGuard<'_, Unit<'_>>, alloc: &mut SimFrameAllocator<'_>, d: &Dev) {
    passthrough::add_device(
        g,
        alloc,
        d.sbdf,
        DeviceKind::PcieEndpoint,
        d.rids.clone(),
        d.reserved.clone(),
    )
    .unwrap();
}

/// Every MSI data offset 0..8 from `rid` at 0xFEE0_0000: which were delivered.
fn delivering(sim: &SimAmdVi, rid: Bdf) -> vec::Vec<u32> {
    (0..8)
        .filter(|&d| sim.msi(rid.requester_id(), 0xFEE0_0000, d).is_ok())
        .collect()
}

/// Runs `test` on a unit with 32-bit IRTEs and on one with 128-bit IRTEs.
fn both_formats(
    test: impl Fn(&SimAmdVi, &mut DevicesGuard<'_, Unit<'_>>, &mut SimFrameAllocator<'_>),
) {
    for efr in [HATS, HATS | GA_SUP] {
        let mem = Rc::new(SimMemory::new());
        let regs = SimRegisters::new();
        let sim = SimAmdVi::install(&regs, mem.clone(), efr);
        let mut alloc = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 1 << 14);
        let lock = DeviceLock::new(iommu(&mem, regs, &mut alloc), QuarantineMode::Scratch);
        let mut g = lock.lock();
        let format = g.state().vendor().irte_format();
        assert_eq!(
            format == Some(lazaret_amd_vi::IrteFormat::Ga128),
            efr & GA_SUP != 0,
            "GAEn follows GASup"
        );
        test(&sim, &mut g, &mut alloc);
    }
}

#[test]
fn a_unit_whose_ivrs_is_doubted_does_not_remap_and_assignment_behind_it_is_refused() {
    let mem = Rc::new(SimMemory::new());
    let regs = SimRegisters::new();
    let _sim = SimAmdVi::install(&regs, mem.clone(), HATS);
    let mut alloc = SimFrameAllocator::new(&mem, PhysAddr(0x100_0000), 1 << 14);
    let lock = DeviceLock::new(
        iommu_trusted(&mem, regs, &mut alloc, false),
        QuarantineMode::Scratch,
    );
    let mut g = lock.lock();
    let dev = cast(0);
    add(&mut g, &mut alloc, &dev);
    let dom = passthrough::create_domain(&mut g, &mut alloc, "guest", 8).unwrap();
    assert_eq!(
        passthrough::assign(&mut g, &mut alloc, dom, dev.sbdf).map(drop),
        Err(passthrough::PassthroughError::NoInterruptRemapping(
            dev.sbdf
        ))
    );
    g.require_interrupt_remapping(false);
    assert!(passthrough::assign(&mut g, &mut alloc, dom, dev.sbdf).is_ok());
}

#[test]
fn quarantined_devices_and_unowned_ids_deliver_nothing_and_the_ioapic_passes() {
    both_formats(|sim, g, alloc| {
        for i in [0, 2, 3, 4] {
            add(g, alloc, &cast(i));
        }
        for i in [0, 2, 3, 4] {
            for rid in cast(i).rids {
                assert_eq!(delivering(sim, rid), [], "{rid} in quarantine");
            }
        }
        assert_eq!(
            // The simulator's reason type is not exported: compare its name.
            sim.msi(UNOWNED, 0xFEE0_0000, 0x30)
                .map_err(|f| alloc::format!("{:?}", f.reason)),
            Err("IntCtlAbort".into()),
            "a DeviceID without a device record"
        );
        assert!(
            sim.msi(IOAPIC, 0xFEE0_0000, 0x30).is_ok(),
            "the IOAPIC's interrupts still pass"
        );
    });
}

#[test]
fn an_assigned_device_delivers_only_its_entry_until_it_is_quarantined_again() {
    both_formats(|sim, g, alloc| {
        let (dev, other) = (cast(0), cast(2));
        add(g, alloc, &dev);
        add(g, alloc, &other);
        let dom = passthrough::create_domain(g, alloc, "guest", 8).unwrap();
        for destroy in [false, true] {
            passthrough::assign(g, alloc, dom, dev.sbdf).unwrap();
            let msi = passthrough::program_interrupt(g, dom, dev.sbdf, 0, TARGET).unwrap();
            assert_eq!(msi.address, 0xFEE0_0000, "no destination bits (QEMU 7.2)");
            let got = sim
                .msi(dev.rids[0].requester_id(), msi.address, msi.data)
                .unwrap();
            assert_eq!((got.vector, got.destination), (0x41, 0));
            assert!(sim.cached_interrupt_entries() > 0, "the entry is cached");
            // Another device sending the same message goes through its own (blocked) table.
            for rid in &other.rids {
                assert_eq!(delivering(sim, *rid), [], "{rid}");
            }
            let attempts = alloc.allocation_attempts();
            if destroy {
                passthrough::destroy_domain(g, alloc, dom).unwrap();
            } else {
                passthrough::deassign(g, dom, dev.sbdf).unwrap();
            }
            assert_eq!(alloc.allocation_attempts(), attempts, "no frame allocated");
            assert_eq!(delivering(sim, dev.rids[0]), [], "quarantined again");
        }
    });
}

#[test]
fn an_alias_group_delivers_through_its_aliases_only_while_assigned() {
    both_formats(|sim, g, alloc| {
        let (a, b) = (cast(3), cast(4));
        add(g, alloc, &a);
        add(g, alloc, &b);
        let dom = passthrough::create_domain(g, alloc, "guest", 8).unwrap();
        passthrough::assign(g, alloc, dom, a.sbdf).unwrap();
        for (d, vector) in [(&a, 0x41), (&b, 0x42)] {
            let target = InterruptTarget { vector, apic_id: 0 };
            let msi = passthrough::program_interrupt(g, dom, d.sbdf, 0, target).unwrap();
            let got = sim.msi(d.rids[0].requester_id(), msi.address, msi.data);
            assert_eq!(got.map(|i| i.vector), Ok(vector), "{}", d.sbdf);
        }
        // The bridge alias both carry reaches one of the group's tables: the same owner's.
        let alias = a.rids[1].requester_id();
        let got = sim.msi(alias, 0xFEE0_0000, 0).map(|i| i.vector);
        assert!(matches!(got, Ok(0x41 | 0x42)), "alias: {got:?}");
        passthrough::deassign(g, dom, a.sbdf).unwrap();
        for rid in a.rids.iter().chain(&b.rids) {
            assert_eq!(delivering(sim, *rid), [], "{rid} quarantined");
        }
    });
}

#[test]
fn deassign_blocks_interrupts_in_the_switch_batch_and_a_lost_batch_is_redone_whole() {
    use lazaret_amd_vi::Command;
    both_formats(|sim, g, alloc| {
        let (dev, other) = (cast(0), cast(2));
        add(g, alloc, &dev);
        add(g, alloc, &other);
        let dom = passthrough::create_domain(g, alloc, "guest", 8).unwrap();
        passthrough::assign(g, alloc, dom, dev.sbdf).unwrap();
        let msi = passthrough::program_interrupt(g, dom, dev.sbdf, 0, TARGET).unwrap();
        let id = dev.rids[0].requester_id();
        assert!(sim.msi(id, msi.address, msi.data).is_ok());
        let before = sim.executed().len();
        let back = passthrough::deassign(g, dom, dev.sbdf).unwrap();
        let cmds = sim.executed()[before..].to_vec();
        let polled = |c: &Command| matches!(c, Command::CompletionWait { store: Some(_), .. });
        assert_eq!(
            cmds.iter().filter(|c| polled(c)).count(),
            1,
            "one polled wait: {cmds:?}"
        );
        assert!(polled(cmds.last().unwrap()), "the wait ends the batch");
        assert!(
            cmds.contains(&Command::InvalidateInterruptTable { device_id: id }),
            "the interrupt table rides in the switch batch: {cmds:?}"
        );
        assert_eq!((back.cost.descriptors, back.cost.waits), (5, 1), "{back:?}");
        assert_eq!(delivering(sim, dev.rids[0]), []);

        // A batch the unit refuses: entries blocked in memory, the failure reported and
        // counted, and the next flush redoes everything, interrupt tables included.
        passthrough::assign(g, alloc, dom, dev.sbdf).unwrap();
        let msi = passthrough::program_interrupt(g, dom, dev.sbdf, 0, TARGET).unwrap();
        assert!(sim.msi(id, msi.address, msi.data).is_ok(), "cached again");
        sim.inject_illegal_command();
        let back = passthrough::deassign(g, dom, dev.sbdf).unwrap();
        assert!(back.timed_out.is_some(), "{back:?}");
        assert_eq!(g.state().stats().interrupt_block_failures, 1);
        passthrough::assign(g, alloc, dom, other.sbdf).unwrap();
        assert_eq!(
            delivering(sim, dev.rids[0]),
            [],
            "the next flush dropped the cached entry"
        );
    });
}
