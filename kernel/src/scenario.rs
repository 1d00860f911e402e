//! Scenarios: what the kernel does once it is up. Each prints `RESULT` lines and returns the
//! run's status.
use lazaret_rt::exit::ExitCode;

use crate::cmdline::Scenario;
use crate::console::result;

pub fn run(scenario: Scenario) -> ExitCode {
    log::info!("scenario {}: start", scenario.name());
    match scenario {
        Scenario::Boot => {
            result("boot", true, format_args!("all bring-up stages completed"));
            ExitCode::Success
        }
        Scenario::Panic => panic!("deliberate panic (scenario=panic)"),
        Scenario::PageFault => {
            // Page 0 is never mapped (arch::paging), so this read faults.
            // SAFETY: not safe by design: the exception handler reports it and ends the run.
            let v = unsafe { core::ptr::null::<u64>().wrapping_add(2).read_volatile() };
            result(
                "page-fault",
                false,
                format_args!("read of page 0 returned {v:#x} instead of faulting"),
            );
            ExitCode::Failure
        }
    }
}
