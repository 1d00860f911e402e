//! *rogue-irq* against the fake: the messages it asks for and the raise after each (the
//! expectations written here from the brief, not from the variant's tables), its DMA of
//! 0x30 into the interrupt window, what it reports its IDT saw, and that it ends "done trying"
//! whatever got through.
use super::*;

/// The interrupt window page, mapped by this fake IOMMU so the window writes can be read back.
const WINDOW: u64 = 0xfee0_0000;

fn window_iommu(iova: u64, write: bool) -> Option<PhysAddr> {
    guest_iommu(iova, write).or((iova >> 12 == WINDOW >> 12).then_some(PhysAddr(iova)))
}

/// Runs `variant=rogue-irq` with a 32-bit-DMA edu (QEMU's `dma_mask=0xffffffff`), the fake
/// adjusted by `setup`; hands the exit, the fake and the RAM to `check`.
fn run_rogue_irq(
    setup: impl FnOnce(&mut Fake<'_>),
    check: impl FnOnce(GuestExit, &Fake<'_>, &SimMemory),
) {
    let ram = boot_ram("variant=rogue-irq");
    let edu = SimEdu::new(&ram, window_iommu);
    edu.set_dma_mask(0xffff_ffff);
    let mut f = fake(&ram, &edu, vec![(at(0, 0), edu_function())]);
    setup(&mut f);
    let exit = run(&f, env());
    check(exit, &f, &ram);
}

#[test]
fn rogue_irq_asks_for_each_forbidden_message_and_raises_after_each() {
    run_rogue_irq(
        |_| {},
        |exit, f, _| {
            assert_eq!(exit, GuestExit::RogueDmaTried, "{}", f.text());
            let msi_on = |address: u64, data: u16| Event::MsiOn { address, data };
            let want = vec![
                msi_on(0xfee0_1000, 0x50),
                Event::Raise,
                msi_on(0xfee0_0000, 0x0e),
                Event::Raise,
                msi_on(0xfed0_0000, 0x50),
                Event::Raise,
                msi_on(0xfee0_0000, 0x80),
                Event::Raise,
                msi_on(0xfee0_0000, 0x50),
                Event::Raise,
            ];
            assert_eq!(*f.events.borrow(), want, "{}", f.text());
            // Every enable came after Enable was cleared: no half-written message is live.
            let enables: Vec<_> = f
                .msi_writes
                .borrow()
                .iter()
                .filter(|(rel, _)| *rel == 0)
                .map(|(_, v)| v & MSI_ENABLE != 0)
                .collect();
            assert_eq!(enables, [false, true].repeat(5));
            assert!(f.handlers.get().is_some(), "an IDT before the first raise");
        },
    );
}

#[test]
fn rogue_irq_dmas_its_data_into_the_interrupt_window() {
    run_rogue_irq(
        |_| {},
        |exit, f, ram| {
            assert_eq!(exit, GuestExit::RogueDmaTried, "{}", f.text());
            for at in [WINDOW, WINDOW + 0x10] {
                assert_eq!(
                    ram_bytes(ram, at, 4),
                    [0x30, 0, 0, 0],
                    "{at:#x}\n{}",
                    f.text()
                );
                assert!(f
                    .text()
                    .contains(&format!("to {at:#x} (the interrupt window)")));
            }
        },
    );
}

#[test]
fn rogue_irq_reports_what_its_idt_saw_on_every_vector() {
    // Delivered as asked: the 0x80 wait takes 0x80 (another vector), the 0x50 wait takes 0x50.
    run_rogue_irq(
        |_| {},
        |exit, f, _| {
            assert_eq!(exit, GuestExit::RogueDmaTried);
            let text = f.text();
            assert!(
                text.contains("taken: 0 on vector 0x50, 1 on other vectors"),
                "{text}"
            );
            assert!(
                text.contains("taken: 1 on vector 0x50, 0 on other vectors"),
                "{text}"
            );
            assert!(
                text.contains("my IDT saw 1 on vector 0x50 and 1 on other vectors; done trying"),
                "{text}"
            );
        },
    );
    // A Lazaret that misroutes everything to 0x30: the report shows it, the exit is the same.
    run_rogue_irq(
        |f| f.delivery = Delivery::Misrouted(0x30),
        |exit, f, _| {
            assert_eq!(exit, GuestExit::RogueDmaTried);
            assert!(
                f.text()
                    .contains("my IDT saw 0 on vector 0x50 and 2 on other vectors"),
                "{}",
                f.text()
            );
        },
    );
}

#[test]
fn rogue_irq_waits_boundedly_when_nothing_comes() {
    run_rogue_irq(
        |f| {
            f.delivery = Delivery::Lost;
            f.tsc_step = 10_000_000;
        },
        |exit, f, _| {
            assert_eq!(exit, GuestExit::RogueDmaTried);
            assert_eq!(
                f.text().matches("no interrupt after").count(),
                2,
                "{}",
                f.text()
            );
            assert!(
                f.halts.get() <= 2 * crate::irq::MAX_HALTS,
                "{}",
                f.halts.get()
            );
            assert!(f
                .text()
                .contains("my IDT saw 0 on vector 0x50 and 0 on other vectors"));
        },
    );
}

#[test]
fn rogue_irq_without_edu_says_so() {
    let ram = boot_ram("variant=rogue-irq");
    let edu = SimEdu::new(&ram, guest_iommu);
    let f = fake(&ram, &edu, vec![]);
    assert_eq!(run(&f, env()), GuestExit::NoDevice);
}
