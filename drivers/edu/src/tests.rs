//! The driver against the simulated device: probe, refusals, bounded waits and DMA through a
//! translation.

use core::cell::Cell;

use lazaret_types::sim::{RegAccess, SimMemory, SimRegisters};
use lazaret_types::{PhysAddr, PhysMem};

use crate::regs::{self, IRQ_DMA};
use crate::sim::{identity, BlockedAccess, Completion, SimEdu};
use crate::{DmaDirection, DmaMask, Edu, EduError, Version};

/// A deadline that passes after it has been asked `n` times; counts the questions.
fn deadline_after(n: usize, asked: &Cell<usize>) -> impl FnMut() -> bool + '_ {
    move || {
        asked.set(asked.get() + 1);
        asked.get() > n
    }
}

fn never() -> bool {
    false
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn dma_register_writes(sim: &SimEdu<'_>) -> Vec<RegAccess> {
    sim.registers()
        .accesses()
        .into_iter()
        .filter(|a| matches!(a, RegAccess::Write64(off, _) | RegAccess::Write32(off, _) if *off >= regs::DMA_SRC))
        .collect()
}

#[test]
fn probe_reads_the_version_of_a_live_device() {
    let mem = SimMemory::new();
    let sim = SimEdu::new(&mem, identity);
    let edu = Edu::probe(&sim).unwrap();
    assert_eq!(edu.version(), Version { major: 1, minor: 0 });
    assert_eq!(edu.dma_mask(), DmaMask::DEFAULT);
}

#[test]
fn probe_refuses_a_device_without_the_edu_magic() {
    let regs = SimRegisters::new();
    regs.set(regs::IDENTIFICATION, 0xffff_ffff);
    match Edu::probe(regs) {
        Err(e) => assert_eq!(
            e,
            EduError::NotEdu {
                identification: 0xffff_ffff
            }
        ),
        Ok(_) => panic!("an all-ones BAR passed as edu"),
    }
}

#[test]
fn probe_refuses_a_liveness_register_that_does_not_invert() {
    // A plain register echoes what was written.
    let regs = SimRegisters::new();
    regs.set(regs::IDENTIFICATION, 0x0100_00ed);
    match Edu::probe(regs) {
        Err(EduError::LivenessFailed { wrote, read }) => assert_eq!(wrote, read),
        other => panic!("echoing register accepted: {:?}", other.err()),
    }
}

#[test]
fn probe_refuses_a_liveness_register_stuck_at_one_value() {
    // Stuck at the inverse of whatever was written first: one pattern alone would pass.
    let regs = SimRegisters::new();
    regs.set(regs::IDENTIFICATION, 0x0100_00ed);
    let mut stuck: Option<u64> = None;
    regs.on_write(move |map, off, v| {
        if off == regs::LIVENESS {
            let value = *stuck.get_or_insert(u64::from(!(v as u32)));
            map.insert(off, value);
        }
    });
    match Edu::probe(regs) {
        Err(EduError::LivenessFailed { wrote, read }) => assert_ne!(read, !wrote),
        other => panic!("stuck register accepted: {:?}", other.err()),
    }
}

#[test]
fn refused_requests_never_reach_the_device() {
    let mem = SimMemory::new();
    let sim = SimEdu::new(&mem, identity);
    let edu = Edu::probe(&sim).unwrap();
    let to_ram = DmaDirection::EduToRam;
    assert_eq!(
        edu.start_dma(to_ram, 0x1000, 0, 0),
        Err(EduError::EmptyTransfer)
    );
    assert_eq!(
        edu.start_dma(to_ram, 0x1000, 0, 4096),
        Err(EduError::BufferRange {
            offset: 0,
            len: 4096
        })
    );
    assert_eq!(
        edu.start_dma(to_ram, 0x1000, 4095, 1),
        Err(EduError::BufferRange {
            offset: 4095,
            len: 1
        })
    );
    assert_eq!(
        edu.start_dma(DmaDirection::RamToEdu, 1 << 28, 0, 8),
        Err(EduError::IovaOutOfRange {
            iova: 1 << 28,
            len: 8,
            mask: (1 << 28) - 1
        })
    );
    assert!(dma_register_writes(&sim).is_empty());
    assert!(!sim.dma_pending());
}

#[test]
fn a_wider_mask_admits_higher_iovas() {
    let mem = SimMemory::new();
    let sim = SimEdu::new(&mem, identity);
    sim.set_dma_mask(u64::from(u32::MAX));
    let edu = Edu::probe_with_mask(&sim, DmaMask::from_bits(32).unwrap()).unwrap();
    sim.fill_buffer(0, &[7; 16]);
    edu.dma_to_ram(0x8000_0000, 0, 16, never).unwrap();
    let mut out = [0u8; 16];
    mem.read_bytes(PhysAddr(0x8000_0000), &mut out);
    assert_eq!(out, [7; 16]);
}

#[test]
fn a_second_dma_is_refused_while_the_first_is_pending() {
    let mem = SimMemory::new();
    let sim = SimEdu::new(&mem, identity);
    sim.set_completion(Completion::Never);
    let edu = Edu::probe(&sim).unwrap();
    edu.start_dma(DmaDirection::EduToRam, 0x1000, 0, 64)
        .unwrap();
    assert!(edu.dma_busy());
    let writes_before = dma_register_writes(&sim).len();
    assert_eq!(
        edu.start_dma(DmaDirection::RamToEdu, 0x2000, 0, 64),
        Err(EduError::Busy)
    );
    assert_eq!(dma_register_writes(&sim).len(), writes_before);
    assert_eq!(sim.registers().get(regs::DMA_DST), 0x1000);
}

#[test]
fn waiting_gives_up_at_the_deadline_and_succeeds_after_the_device_finishes() {
    let mem = SimMemory::new();
    let sim = SimEdu::new(&mem, identity);
    sim.set_completion(Completion::Never);
    let edu = Edu::probe(&sim).unwrap();
    let asked = Cell::new(0);
    assert_eq!(
        edu.dma_to_ram(0x1000, 0, 64, deadline_after(5, &asked)),
        Err(EduError::Timeout)
    );
    assert_eq!(asked.get(), 6, "stops at the first late answer");
    assert!(edu.dma_busy(), "the DMA is still pending after a time-out");
    sim.fire_timer();
    assert_eq!(
        edu.wait_dma(|| true),
        Ok(()),
        "a last look after the deadline"
    );
}

#[test]
fn waiting_polls_until_the_device_clears_busy() {
    let mem = SimMemory::new();
    let sim = SimEdu::new(&mem, identity);
    sim.set_completion(Completion::AfterPolls(4));
    let edu = Edu::probe(&sim).unwrap();
    edu.start_dma(DmaDirection::EduToRam, 0x1000, 0, 8).unwrap();
    let asked = Cell::new(0);
    assert_eq!(edu.wait_dma(deadline_after(100, &asked)), Ok(()));
    assert_eq!(asked.get(), 4, "one deadline check per poll");
    assert!(!sim.dma_pending());
}

#[test]
fn round_trip_ram_to_edu_to_ram_through_a_translation() {
    let mem = SimMemory::new();
    // IOVA page n is host frame n + 0x100: a stand-in for an IOMMU walk that borrows state.
    let offset = 0x100 * 0x1000;
    let walks = Cell::new(0);
    let sim = SimEdu::new(&mem, |iova, _write| {
        walks.set(walks.get() + 1);
        Some(PhysAddr(iova + offset))
    });
    let edu = Edu::probe(&sim).unwrap();
    let data = pattern(0x300, 3);
    // Crosses a page boundary on both sides.
    mem.write_bytes(PhysAddr(0x2e00 + offset), &data);
    edu.dma_from_ram(0x2e00, 0x100, data.len(), never).unwrap();
    assert_eq!(&sim.buffer()[0x100..0x400], &data[..]);
    edu.dma_to_ram(0x7f00, 0x100, data.len(), never).unwrap();
    let mut out = vec![0; data.len()];
    mem.read_bytes(PhysAddr(0x7f00 + offset), &mut out);
    assert_eq!(out, data);
    assert_eq!(walks.get(), 4, "one translation per IOVA page touched");
    assert!(sim.blocked_accesses().is_empty());
}

#[test]
fn a_blocked_write_leaves_memory_untouched() {
    let mem = SimMemory::new();
    mem.write_bytes(PhysAddr(0x3000), &[0xaa; 64]);
    let sim = SimEdu::new(&mem, |iova, write| (!write).then_some(PhysAddr(iova)));
    let edu = Edu::probe(&sim).unwrap();
    sim.fill_buffer(0, &[0x55; 64]);
    // The device ignores DMA errors: the transfer "completes" as far as the driver can see.
    assert_eq!(edu.dma_to_ram(0x3000, 0, 64, never), Ok(()));
    let mut out = [0u8; 64];
    mem.read_bytes(PhysAddr(0x3000), &mut out);
    assert_eq!(out, [0xaa; 64]);
    assert_eq!(
        sim.blocked_accesses(),
        vec![BlockedAccess {
            iova: 0x3000,
            write: true
        }]
    );
}

#[test]
fn a_blocked_read_fills_the_buffer_with_zeros_page_by_page() {
    let mem = SimMemory::new();
    mem.write_bytes(PhysAddr(0x4f00), &[0x11; 0x200]);
    // Only the page at 0x4000 is mapped.
    let sim = SimEdu::new(&mem, |iova, _| (iova >> 12 == 4).then_some(PhysAddr(iova)));
    let edu = Edu::probe(&sim).unwrap();
    sim.fill_buffer(0, &[0xee; 0x200]);
    edu.dma_from_ram(0x4f00, 0, 0x200, never).unwrap();
    let buffer = sim.buffer();
    assert!(
        buffer[..0x100].iter().all(|&b| b == 0x11),
        "mapped page copied"
    );
    assert!(
        buffer[0x100..0x200].iter().all(|&b| b == 0),
        "unmapped page reads as zeros"
    );
    assert_eq!(
        sim.blocked_accesses(),
        vec![BlockedAccess {
            iova: 0x5000,
            write: false
        }]
    );
}

#[test]
fn a_dma_can_raise_an_interrupt_that_the_driver_acknowledges() {
    let mem = SimMemory::new();
    let sim = SimEdu::new(&mem, identity);
    let mut edu = Edu::probe(&sim).unwrap();
    edu.dma_to_ram(0x1000, 0, 8, never).unwrap();
    assert_eq!(edu.interrupt_status(), 0);
    edu.set_irq_when_done(true);
    edu.dma_to_ram(0x1000, 0, 8, never).unwrap();
    assert_eq!(edu.interrupt_status(), IRQ_DMA);
    edu.raise_interrupt(0x40);
    assert_eq!(edu.interrupt_status(), IRQ_DMA | 0x40);
    edu.ack_interrupt(IRQ_DMA);
    assert_eq!(edu.interrupt_status(), 0x40);
}

#[test]
fn factorial_wraps_like_qemu_uint32() {
    let mem = SimMemory::new();
    let sim = SimEdu::new(&mem, identity);
    let edu = Edu::probe(&sim).unwrap();
    assert_eq!(edu.factorial(5, never), Ok(120));
    let wrapped = (1..=13u64).product::<u64>() as u32;
    assert_eq!(edu.factorial(13, never), Ok(wrapped));
    assert_eq!(edu.factorial(0, never), Ok(1));
    assert_eq!(
        edu.factorial(u32::MAX, never),
        Ok(0),
        "2^32 divides 34! and beyond"
    );
}

// The model itself, programmed without the driver's checks.

#[test]
#[should_panic(expected = "out of bounds")]
fn the_model_aborts_like_qemu_on_a_full_buffer_dma() {
    let mem = SimMemory::new();
    let sim = SimEdu::new(&mem, identity);
    use lazaret_types::Mmio;
    sim.write64(regs::DMA_SRC, regs::BUFFER_BASE);
    sim.write64(regs::DMA_DST, 0x1000);
    sim.write64(regs::DMA_COUNT, 4096);
    sim.write64(regs::DMA_CMD, regs::CMD_START | regs::CMD_EDU_TO_RAM);
}

#[test]
fn the_model_clamps_ram_addresses_and_ignores_writes_while_pending() {
    use lazaret_types::Mmio;
    let mem = SimMemory::new();
    let sim = SimEdu::new(&mem, identity);
    sim.set_completion(Completion::Never);
    sim.fill_buffer(0, &[9; 4]);
    sim.write64(regs::DMA_SRC, regs::BUFFER_BASE);
    sim.write64(regs::DMA_DST, (1 << 28) | 0x6000);
    sim.write64(regs::DMA_COUNT, 4);
    sim.write64(regs::DMA_CMD, regs::CMD_START | regs::CMD_EDU_TO_RAM);
    sim.write64(regs::DMA_DST, 0x9000);
    sim.write64(regs::DMA_CMD, regs::CMD_START);
    assert_eq!(sim.registers().get(regs::DMA_DST), (1 << 28) | 0x6000);
    sim.fire_timer();
    let mut out = [0u8; 4];
    mem.read_bytes(PhysAddr(0x6000), &mut out);
    assert_eq!(
        out, [9; 4],
        "landed at the address ANDed with the 28-bit mask"
    );
    // Below 0x80 only 32-bit accesses count.
    sim.write64(regs::LIVENESS, 5);
    assert_eq!(sim.read64(regs::LIVENESS), u64::MAX);
}
