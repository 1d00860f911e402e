//! Scenarios: what the kernel does once it is up. Each prints `RESULT` lines and returns the
//! run's status.
use lazaret_rt::exit::ExitCode;

use crate::cmdline::Scenario;
use crate::console::result;
use crate::hypervisor::Hypervisor;

pub fn run(scenario: Scenario, _hv: &mut Hypervisor) -> ExitCode {
    log::info!("scenario {}: start", scenario.name());
    match scenario {
        Scenario::Boot => {
            result("boot", true, format_args!("all bring-up stages completed"));
            ExitCode::Success
        }
        Scenario::Panic => panic!("deliberate panic (scenario=panic)"),
        Scenario::PageFault => {
            // The first MiB is mapped read-only (the BIOS data area lives in page 0;
            // arch::paging), so a write through a near-null pointer faults.
            // SAFETY: not safe by design: the exception handler reports it and ends the run.
            unsafe {
                core::ptr::null_mut::<u64>()
                    .wrapping_add(2)
                    .write_volatile(0xdead)
            };
            result(
                "page-fault",
                false,
                format_args!("write to page 0 did not fault"),
            );
            ExitCode::Failure
        }
    }
}
