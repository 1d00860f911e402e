//! Port accesses allocate nothing: they run in the vCPU exit path, where the heap may be
//! neither available nor bounded, and a guest must not be able to make the host allocate.
use lazaret_types::Sbdf;

use super::fixture::{assigned, bus_for, config_address, machine};
use crate::fake::FakeConfigSpace;
use crate::ConfigSpace;

mod heap_count {
    lazaret_types::counting_allocator!();
}

#[global_allocator]
static COUNTING: heap_count::CountingAllocator = heap_count::CountingAllocator;

/// The fake records each write in a `Vec`: its own bookkeeping, not the code under test.
struct Uncounted<'a>(&'a FakeConfigSpace);

impl ConfigSpace for Uncounted<'_> {
    fn read32(&self, addr: Sbdf, offset: u16) -> u32 {
        self.0.read32(addr, offset)
    }

    fn write32(&self, addr: Sbdf, offset: u16, value: u32) {
        heap_count::uncounted(|| self.0.write32(addr, offset, value));
    }
}

#[test]
fn port_accesses_allocate_nothing() {
    let cfg = machine();
    let machine = Uncounted(&cfg);
    let mut bus = bus_for(&cfg);
    let mut programmed = 0;
    let ((), allocations) = heap_count::heap_allocations_during(|| {
        for (b, d, f) in
            (0..2).flat_map(|b| (0..32).flat_map(move |d| (0..2).map(move |f| (b, d, f))))
        {
            for offset in (0..=0xfcu8).step_by(4) {
                bus.port_write(&machine, 0xcf8, 4, config_address(b, d, f, offset));
                for port in 0xcf8..0xd00 {
                    for width in [1, 2, 4] {
                        core::hint::black_box(bus.port_read(&machine, port, width));
                    }
                }
                bus.port_write(&machine, 0xcfc, 4, u32::MAX);
                bus.port_write(&machine, 0xcfd, 1, 0x04);
                bus.port_write(&machine, 0xcfe, 2, 0);
                bus.port_write(&machine, 0xcf9, 1, 0x06);
            }
        }
        // The exit loop's MSI round: take the changes, read each request, program the device.
        for real in bus.take_msi_changes() {
            let request = bus.msi_request(real).unwrap();
            core::hint::black_box(bus.program_host_msi(&machine, real, 0xfee0_0010, 0, true))
                .unwrap();
            core::hint::black_box(request);
            programmed += 1;
        }
        for real in assigned() {
            bus.set_bus_master_allowed(real, false).unwrap();
        }
    });
    assert_eq!(allocations, 0);
    assert_eq!(programmed, 1, "edu's MSI changed and was programmed");
}
