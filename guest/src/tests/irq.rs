//! The good variant's interrupt waits against the fake's MSI, x2APIC and delivery models:
//! the message it programs, the interrupt bit of its DMAs, the stamps, and the failures when
//! an interrupt is missing, misrouted or doubled.
use super::*;

/// Runs `variant=good` against `function` at 00:00.0, the fake adjusted by `setup` first;
/// returns what `check` makes of the exit, the fake and the device.
fn run_good<T>(
    function: FakeFunction,
    setup: impl FnOnce(&mut Fake<'_>),
    check: impl FnOnce(GuestExit, &Fake<'_>, &SimEdu<'_>) -> T,
) -> T {
    let ram = boot_ram("variant=good");
    let edu = SimEdu::new(&ram, guest_iommu);
    let mut f = fake(&ram, &edu, vec![(at(0, 0), function)]);
    setup(&mut f);
    let exit = run(&f, env());
    check(exit, &f, &edu)
}

/// The MSI registers the guest left, decoded here from PCI 3.0 §6.8.1.
fn msi_left(f: &Fake<'_>, at: Sbdf, wide: bool) -> (u32, u32, Option<u32>, u32) {
    let m = f.msi_of(at);
    if wide {
        (m[0], m[1], Some(m[2]), m[3])
    } else {
        (m[0], m[1], None, m[2])
    }
}

/// Runs `variant=good` as [`run_good`] and checks that it failed, saying `line`.
fn good_fails_saying(function: FakeFunction, setup: impl FnOnce(&mut Fake<'_>), line: &str) {
    run_good(function, setup, |exit, f, _| {
        let text = expect(exit, GuestExit::CheckFailed, f);
        assert!(text.contains(line), "{text}");
    });
}

/// `exit` is `want`, else the guest's transcript says why not.
fn expect(exit: GuestExit, want: GuestExit, f: &Fake<'_>) -> String {
    assert_eq!(exit, want, "{}", f.text());
    f.text()
}

#[test]
fn good_programs_msi_with_exactly_the_contract_address_and_data() {
    // QEMU's edu (64-bit, no masking), and a 32-bit one with per-vector masking behind a PCIe
    // capability, so the walk has to follow Next.
    let narrow = edu_without_msi()
        .pcie(0, false)
        .capability(0x05, 0x0100, &[0, 0, 0xffff_ffff, 0]);
    for (function, wide, msi_at) in [(edu_function(), true, 0x40), (narrow, false, 0x50)] {
        run_good(
            function,
            |f| f.msi_at = msi_at,
            |exit, f, _| {
                let text = expect(exit, GuestExit::Pass, f);
                let (control, address, upper, data) = msi_left(f, at(0, 0), wide);
                assert_eq!(address, 0xfee0_0000, "MSI_ADDRESS");
                assert_eq!(
                    upper,
                    wide.then_some(0),
                    "upper address 0 on a 64-bit capability"
                );
                assert_eq!(data, 0x50, "DMA_DONE_VECTOR, fixed delivery, edge");
                assert_ne!(control & MSI_ENABLE, 0, "MSI enabled");
                assert_eq!(control & MSI_MME, 0, "one vector");
                if !wide {
                    assert_eq!(f.msi_of(at(0, 0))[3] & 1, 0, "vector 0 unmasked");
                }
                // Enable is set last, after the whole message: never a half-written message.
                let writes = f.msi_writes.borrow().clone();
                let enabled_at = writes
                    .iter()
                    .position(|(rel, v)| *rel == 0 && v & MSI_ENABLE != 0)
                    .unwrap();
                assert_eq!(enabled_at, writes.len() - 1, "{writes:x?}");
                assert_eq!(writes[0], (0, writes[0].1 & !MSI_ENABLE), "disabled first");
                let line = "DMA completion interrupts: 2 on vector 0x50, waited in HLT 2 times";
                assert!(text.contains(line), "{text}");
            },
        );
    }
}

#[test]
fn good_sets_up_the_x2apic_before_any_interrupt_can_come() {
    run_good(
        edu_function(),
        |_| {},
        |exit, f, _| {
            expect(exit, GuestExit::Pass, f);
            let writes = f.msr_writes.borrow().clone();
            assert_eq!(
                writes[..3],
                [
                    (0x1b, 0xfee0_0000 | APIC_EN | APIC_EXTD | (1 << 8)),
                    (0x808, 0),
                    (0x80f, APIC_SW_ENABLE | 0xff)
                ],
                "x2APIC mode, TPR 0, software-enabled"
            );
            assert_eq!(f.eois.get(), 2, "one EOI per interrupt");
            assert_eq!(f.handlers.get(), Some(BAR));
        },
    );
    // From disabled, the guest goes through xAPIC mode; already in x2APIC mode, it leaves
    // IA32_APIC_BASE alone.
    let x2 = 0xfee0_0000 | APIC_EN | APIC_EXTD;
    for (reset, written) in [(0xfee0_0000, vec![0xfee0_0000 | APIC_EN, x2]), (x2, vec![])] {
        let base = run_good(
            edu_function(),
            |f| f.apic_base.set(reset),
            |exit, f, _| {
                expect(exit, GuestExit::Pass, f);
                let writes = f.msr_writes.borrow();
                writes
                    .iter()
                    .filter(|w| w.0 == 0x1b)
                    .map(|w| w.1)
                    .collect::<Vec<_>>()
            },
        );
        assert_eq!(base, written, "from {reset:#x}");
    }
}

#[test]
fn every_dma_of_the_round_trip_starts_with_the_interrupt_bit() {
    run_good(
        edu_function(),
        |_| {},
        |exit, f, edu| {
            expect(exit, GuestExit::Pass, f);
            // edu.txt: DMA command 0x98, bit 0 start, bit 2 raise interrupt 0x100 when done.
            let starts: Vec<u64> = edu
                .registers()
                .accesses()
                .into_iter()
                .filter_map(|a| match a {
                    RegAccess::Write64(0x98, v) => Some(v),
                    RegAccess::Write32(0x98, v) => Some(u64::from(v)),
                    _ => None,
                })
                .collect();
            assert_eq!(starts.len(), 2, "{starts:x?}");
            assert!(starts.iter().all(|c| c & 0b101 == 0b101), "{starts:x?}");
            let status = edu.registers().get(0x24);
            assert_eq!(status, 0, "the handler acknowledged edu's interrupt status");
        },
    );
}

#[test]
fn each_interrupt_is_stamped_with_the_tsc_its_handler_read() {
    run_good(
        edu_function(),
        |f| f.quiet_halts.set(3),
        |exit, f, _| {
            let text = expect(exit, GuestExit::Pass, f);
            let stamps = f.stamps.borrow().clone();
            assert_eq!(stamps.len(), 2, "{stamps:x?}");
            assert!(stamps.iter().all(|s| s.1 == 0x50));
            assert_eq!(
                stamps[1].0,
                f.record.get().last_tsc,
                "the handler's own TSC"
            );
            assert!(stamps[0].0 < stamps[1].0 && stamps[0].0 > 0x1234_5678);
            // Three wake-ups without an interrupt before the first one: the guest slept again.
            assert!(text.contains("waited in HLT 5 times"), "{text}");
        },
    );
}

#[test]
fn a_refused_stamp_fails_the_variant() {
    let refused =
        |f: &mut Fake<'_>| f.stamp_result = lazaret_guest_abi::hypercall::HC_ERROR_UNKNOWN;
    good_fails_saying(
        edu_function(),
        refused,
        "2 HC_INTERRUPT_STAMP calls refused",
    );
}

#[test]
fn a_missing_interrupt_fails_the_variant_after_the_bound_and_the_dma_is_polled() {
    // The TSC bound: halts sleep 10 ms of a 1 GHz clock.
    let lost = |f: &mut Fake<'_>| {
        f.delivery = Delivery::Lost;
        f.halt_ticks = 10_000_000;
    };
    run_good(edu_function(), lost, |exit, f, _| {
        let text = expect(exit, GuestExit::CheckFailed, f);
        assert!(
            text.contains("FAIL: DMA RAM->edu: no interrupt after"),
            "{text}"
        );
        assert!(
            text.contains("FAIL: DMA edu->RAM: no interrupt after"),
            "{text}"
        );
        assert!(
            text.contains("(the TSC deadline); polling instead"),
            "{text}"
        );
        assert!(
            text.contains("PASS: DMA round trip"),
            "the data still came: {text}"
        );
        assert!(
            text.contains("FAIL: 2 DMAs ended without their interrupt"),
            "{text}"
        );
        let halts = f.halts.get();
        assert!(
            (300..=410).contains(&halts),
            "about 2 s of TSC per DMA: {halts} halts"
        );
        assert!(f.stamps.borrow().is_empty(), "nothing to stamp");
    });
    // A TSC that stands still: the halt bound ends each wait.
    let frozen = |f: &mut Fake<'_>| {
        f.delivery = Delivery::Lost;
        f.tsc_step = 0;
        f.halt_ticks = 0;
    };
    run_good(edu_function(), frozen, |exit, f, _| {
        let text = expect(exit, GuestExit::CheckFailed, f);
        assert!(text.contains("(the halt bound)"), "{text}");
        assert_eq!(f.halts.get(), 2 * crate::irq::MAX_HALTS);
    });
}

#[test]
fn an_interrupt_on_another_vector_or_twice_fails_the_variant() {
    let misrouted = |f: &mut Fake<'_>| {
        f.delivery = Delivery::Misrouted(0x51);
        f.tsc_step = 0;
    };
    run_good(edu_function(), misrouted, |exit, f, _| {
        let text = expect(exit, GuestExit::CheckFailed, f);
        assert!(text.contains("interrupts on other vectors"), "{text}");
        assert!(f.eois.get() > 0, "unexpected vectors are EOIed too");
    });
    good_fails_saying(
        edu_function(),
        |f| f.delivery = Delivery::Twice,
        "FAIL: 4 interrupts on vector 0x50 for 2 awaited",
    );
}

#[test]
fn an_edu_without_msi_fails_the_good_variant() {
    let without_list = run_good(
        edu_without_msi(),
        |_| {},
        |exit, f, _| {
            let text = expect(exit, GuestExit::CheckFailed, f);
            assert!(text.contains("no MSI capability"), "{text}");
            assert!(text.contains("PASS: DMA round trip"), "{text}");
            assert_eq!(f.halts.get(), 0, "nothing to wait for");
            f.cfg.read_count()
        },
    );
    // A looping capability list ends the walk.
    let looping = edu_without_msi().pcie(0, false).capability_next(0x40, 0x40);
    run_good(
        looping,
        |_| {},
        |exit, f, _| {
            let text = expect(exit, GuestExit::CheckFailed, f);
            assert!(text.contains("no MSI capability"), "{text}");
            // The same reads as without a list, then the pointer and at most 48 headers (PCI 3.0
            // §6.7: 192 bytes of capabilities, 4 bytes each at least).
            let walked = f.cfg.read_count() - without_list;
            assert!(walked <= 1 + 48, "the walk is bounded: {walked} reads");
        },
    );
}

#[test]
fn an_msi_capability_that_does_not_keep_the_message_is_reported() {
    // With the fake's writable copy elsewhere, the real capability's registers stay read-only:
    // nothing the guest writes stays.
    good_fails_saying(
        edu_function(),
        |f| f.msi_at = 0x80,
        "MSI reads back address 0x112345678, data 0x41, enable false",
    );
}

#[test]
fn through_lazarets_virtual_bus_the_msi_request_is_the_contracts() {
    let ram = boot_ram("variant=good");
    let edu = SimEdu::new(&ram, guest_iommu);
    let real = at(3, 0);
    let mut f = fake(&ram, &edu, vec![(real, edu_function())]);
    let found = lazaret_pci::enumerate(&f.cfg, 0, &[0]);
    let bars = found.get(real).unwrap().bars.clone();
    let window = (MMIO_WINDOW_GPA, MMIO_WINDOW_SIZE);
    let bus = VirtualBus::new(&[(real, &bars[..])], window).unwrap();
    f.vbus = Some((RefCell::new(bus), real));
    let text = expect(run(&f, env()), GuestExit::Pass, &f);
    assert!(text.contains("edu at 00:00.0"), "{text}");
    let (bus, _) = f.vbus.as_ref().unwrap();
    let msi = bus.borrow().msi_request(real).unwrap();
    assert!(msi.deliverable(), "{msi:?}");
    assert_eq!(
        (msi.address, msi.data, msi.vector, msi.destination),
        (0xfee0_0000, 0x50, 0x50, 0),
        "{msi:?}"
    );
    let device = f.cfg.peek(real, 0x44);
    assert_eq!(
        device,
        Some(0x1234_5678),
        "the device's own message is Lazaret's to write"
    );
    assert_eq!(f.stamps.borrow().len(), 2);
}

#[test]
fn interrupt_gates_follow_the_sdm_layout() {
    let handler = 0x1234_5678_9abc_def0u64;
    let [low, high] = crate::irq::interrupt_gate(handler, 0x08);
    // SDM Vol. 3A figure 6-8, decoded field by field.
    assert_eq!(low & 0xffff, 0xdef0, "offset 15:0");
    assert_eq!((low >> 16) & 0xffff, 0x08, "selector");
    assert_eq!((low >> 32) & 0x7, 0, "IST");
    assert_eq!((low >> 40) & 0xf, 0xe, "64-bit interrupt gate");
    assert_eq!((low >> 45) & 0x3, 0, "DPL 0");
    assert_eq!((low >> 47) & 1, 1, "present");
    assert_eq!(low >> 48, 0x9abc, "offset 31:16");
    assert_eq!(high, 0x1234_5678, "offset 63:32, reserved 0");
}

/// `variant=good wait=window` with `setup`: the guest polls each DMA with interrupts off, then
/// opens windows for its interrupt.
fn run_window<T>(
    setup: impl FnOnce(&mut Fake<'_>),
    check: impl FnOnce(GuestExit, &Fake<'_>) -> T,
) -> T {
    let ram = boot_ram("variant=good wait=window");
    let edu = SimEdu::new(&ram, guest_iommu);
    let mut f = fake(&ram, &edu, vec![(at(0, 0), edu_function())]);
    setup(&mut f);
    let exit = run(&f, env());
    check(exit, &f)
}

#[test]
fn with_wait_window_each_interrupt_is_taken_in_a_window_after_polling_never_in_hlt() {
    run_window(
        |f| f.timer_in_hlt = false,
        |exit, f| {
            let text = expect(exit, GuestExit::Pass, f);
            assert_eq!(f.halts.get(), 0, "never asleep: {text}");
            assert_eq!(f.windows.get(), 2, "one window per DMA: {text}");
            assert_eq!(f.stamps.borrow().len(), 2);
            let line = "DMA completion interrupts: 2 on vector 0x50, polled with IF=0, taken in 2 window(s)";
            assert!(text.contains(line), "{text}");
        },
    );
}

#[test]
fn with_wait_window_a_held_interrupt_that_never_comes_fails_after_the_bound() {
    let lost = |f: &mut Fake<'_>| {
        f.delivery = Delivery::Lost;
        f.tsc_step = 0;
        f.halt_ticks = 0;
    };
    run_window(lost, |exit, f| {
        let text = expect(exit, GuestExit::CheckFailed, f);
        assert_eq!(f.windows.get(), 2 * crate::irq::MAX_HALTS, "{text}");
        assert!(text.contains("no interrupt after 1000 windows"), "{text}");
        assert_eq!(f.halts.get(), 0);
        assert!(
            text.contains("FAIL: 2 DMAs ended without their interrupt"),
            "{text}"
        );
    });
}
