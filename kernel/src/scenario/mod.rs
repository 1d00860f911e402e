//! Scenarios: what the kernel does once it is up. Each prints `RESULT` lines and returns the
//! run's status: failure if any check failed.
mod assign_dma;
mod boot_check;
mod checks;
mod edu;
mod fault_storm;
mod groups;
mod guest_interrupts;
mod guests;
mod irq_attacks;
mod memory;
mod quarantine_dma;
mod reassign;
mod rogue_irq;
pub mod story;
mod vcpu_smoke;

use lazaret_rt::exit::ExitCode;

use crate::cmdline::Scenario;
use crate::console::result;
use crate::hypervisor::Hypervisor;
use crate::passthrough::iommu::Inspect;

pub fn run<V: Inspect>(scenario: Scenario, hv: &mut Hypervisor<V>) -> ExitCode {
    log::info!("scenario {}: start", scenario.name());
    match scenario {
        Scenario::Panic => panic!("deliberate panic (scenario=panic)"),
        Scenario::Boot
        | Scenario::QuarantineDma
        | Scenario::AssignDma
        | Scenario::FaultStorm
        | Scenario::Reassign
        | Scenario::Demo
        | Scenario::Vcpu
        | Scenario::IrqAttacks => {
            let mut checks = checks::Checks::default();
            match scenario {
                Scenario::Boot => boot_check::run(hv, &mut checks),
                Scenario::QuarantineDma => quarantine_dma::run(hv, &mut checks),
                Scenario::AssignDma => assign_dma::run(hv, &mut checks),
                Scenario::Demo => guests::run(hv, &mut checks),
                Scenario::Reassign => reassign::run(hv, &mut checks),
                Scenario::Vcpu => vcpu_smoke::run(hv, &mut checks),
                Scenario::IrqAttacks => irq_attacks::run(hv, &mut checks),
                _ => fault_storm::run(hv, &mut checks),
            }
            log::info!(
                "scenario {}: {} check(s) passed, {} failed",
                scenario.name(),
                checks.passed,
                checks.failed
            );
            if checks.failed == 0 && checks.passed > 0 {
                ExitCode::Success
            } else {
                ExitCode::Failure
            }
        }
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
