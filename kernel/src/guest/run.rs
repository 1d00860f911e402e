//! The exit loop: guests share this CPU, one exit at a time in turn, so two guests run
//! interleaved; each exit is answered by [`exits::handle`] against the guest's own world
//! (its memory, its virtual bus, its console). After every round the IOMMU's fault log is
//! drained, and a guest whose device crossed the fault threshold is stopped.
use core::arch::x86_64::__cpuid_count;

use lazaret_pci::virt::VirtualBus;
use lazaret_types::PhysMem;

use super::console::GuestConsole;
use super::exits::{self, Action, Ending, GuestEnv, MAX_SPURIOUS_EXITS};
use super::lifecycle::Guest;
use super::memory_io;
use crate::arch::tsc;
use crate::console;
use crate::domain::GuestMemory;
use crate::hypervisor::Hypervisor;
use crate::mm::direct_map::DIRECT_MAP;
use crate::passthrough::iommu::Vendor;
use crate::passthrough::{self, FaultReport};
use crate::platform::pci::ConfigAccess;
use crate::vcpu::Vcpu;

/// An upper bound on one run, whatever the guests do: a guest cannot keep the host forever.
pub const MAX_EXITS: u64 = 2_000_000;

/// A guest's world while one of its exits is handled.
struct Env<'a> {
    name: &'a str,
    bus: &'a mut VirtualBus,
    config: &'a ConfigAccess,
    memory: &'a GuestMemory,
    mem: &'a dyn PhysMem,
    console: &'a mut GuestConsole,
}

impl GuestEnv for Env<'_> {
    fn host_cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        let r = __cpuid_count(leaf, subleaf);
        [r.eax, r.ebx, r.ecx, r.edx]
    }

    fn port_read(&mut self, port: u16, size: u8) -> Option<u32> {
        let cfg = self.config.segment(0)?;
        VirtualBus::handles_port(port).then(|| self.bus.port_read(cfg, port, size))
    }

    fn port_write(&mut self, port: u16, size: u8, value: u32) -> bool {
        let Some(cfg) = self.config.segment(0) else {
            return false;
        };
        if VirtualBus::handles_port(port) {
            self.bus.port_write(cfg, port, size, value);
            return true;
        }
        false
    }

    fn console_write(&mut self, gpa: u64, len: usize) -> Result<(), u64> {
        let mut buf = [0u8; lazaret_guest_abi::hypercall::CONSOLE_WRITE_MAX];
        let bytes = buf
            .get_mut(..len)
            .ok_or(lazaret_guest_abi::hypercall::HC_ERROR_TOO_LONG)?;
        memory_io::read(self.mem, self.memory, gpa, bytes)
            .map_err(|_| lazaret_guest_abi::hypercall::HC_ERROR_BAD_ADDRESS)?;
        let name = self.name;
        self.console.write(bytes, &mut |line| {
            console::print(format_args!("   [{name}] {line}\n"))
        });
        Ok(())
    }
}

/// Runs one exit of `guest`; `Some` when it ended.
fn step<V: Vendor, C: Vcpu>(hv: &Hypervisor<V>, guest: &mut Guest<C>) -> Option<Ending> {
    let vcpu = guest.vcpu.as_mut()?;
    let exit = vcpu.run();
    let lock = hv.passthrough.as_ref()?;
    let g = lock.lock();
    let memory = &g.state().domains().get(guest.domain)?.memory;
    let mut env = Env {
        name: &guest.spec.name,
        bus: &mut guest.bus,
        config: &hv.config,
        memory,
        mem: &DIRECT_MAP,
        console: &mut guest.console,
    };
    let mut regs = *vcpu.regs();
    let action = exits::handle(&exit, &mut regs, &mut env);
    *vcpu.regs_mut() = regs;
    let done = match action {
        Action::Resume => {
            guest.spurious += 1;
            return (guest.spurious > MAX_SPURIOUS_EXITS).then_some(Ending::Livelock);
        }
        Action::Complete(value) => vcpu.complete(value),
        Action::Inject(vector, code) => vcpu.inject_exception(vector, code),
        Action::End(ending) => return Some(ending),
    };
    guest.spurious = 0;
    done.err().map(|e| Ending::Invalid(alloc::format!("{e}")))
}

/// What the fault drains of one run found, in total.
#[derive(Debug, Default)]
pub struct RunReport {
    pub exits: u64,
    pub faults: FaultReport,
}

/// Runs every guest that has not ended, one exit each in turn, until all have ended (or
/// [`MAX_EXITS`] passed: the rest end as livelocked). Faults are drained as it goes; a guest
/// whose device lost bus mastering ends with [`Ending::DmaFaults`].
pub fn run_all<V: Vendor, C: Vcpu>(hv: &mut Hypervisor<V>, guests: &mut [Guest<C>]) -> RunReport {
    let mut report = RunReport::default();
    while guests.iter().any(|g| g.ending.is_none()) {
        for guest in guests.iter_mut().filter(|g| g.ending.is_none()) {
            report.exits += 1;
            if let Some(ending) = step(hv, guest) {
                flush_console(guest);
                guest.ending = Some(ending);
            }
        }
        // After every round: QEMU's VT-d (like a unit with one fault-recording register)
        // records a new fault only once the last is cleared, so a storming device is
        // stopped within a threshold's worth of its exits.
        drain(hv, guests, &mut report.faults);
        if report.exits >= MAX_EXITS {
            for g in guests.iter_mut().filter(|g| g.ending.is_none()) {
                g.ending = Some(Ending::Livelock);
            }
        }
    }
    report
}

fn flush_console<C: Vcpu>(guest: &mut Guest<C>) {
    let name = guest.spec.name.clone();
    guest
        .console
        .flush(&mut |line| console::print(format_args!("   [{name}] {line}\n")));
}

/// Drains the fault log into `total`, stopping guests whose device crossed the threshold.
fn drain<V: Vendor, C: Vcpu>(
    hv: &mut Hypervisor<V>,
    guests: &mut [Guest<C>],
    total: &mut FaultReport,
) {
    let Some(lock) = hv.passthrough.as_ref() else {
        return;
    };
    let config = &hv.config;
    let mut g = lock.lock();
    let now = tsc::micros_since_entry() / 1000;
    let mut clear = |sbdf: lazaret_types::Sbdf| {
        config
            .segment(sbdf.segment)
            .is_some_and(|cfg| lazaret_pci::set_bus_master(cfg, sbdf, false).is_ok())
    };
    let r = passthrough::drain_faults(&mut g, now, &mut clear);
    for sbdf in &r.disabled {
        for guest in guests.iter_mut().filter(|x| x.devices.contains(sbdf)) {
            let _ = guest.bus.set_bus_master_allowed(*sbdf, false);
            if guest.ending.is_none() {
                guest.ending = Some(Ending::DmaFaults(r.faults as u64));
            }
        }
    }
    total.faults += r.faults;
    total.overflowed += r.overflowed;
    total.suppressed += r.suppressed;
    total.disabled.extend(r.disabled);
    total.recorded.extend(r.recorded);
}
