//! The exit loop: guests share this CPU, one exit at a time in turn, so two guests run
//! interleaved; each exit is answered by [`exits::handle`] against the guest's own world
//! (its memory, its virtual bus, its virtual LAPIC, its console). After every round the
//! IOMMU's fault log is drained, and a guest whose device crossed the fault threshold is
//! stopped.
//!
//! Interrupts: a guest in HLT is not run until an interrupt is deliverable to it. Host
//! interrupts exit the running guest and wait at the local APIC until the loop opens a window
//! for them; the routed ones raise their guest's vector ([`interrupts`]). When every guest
//! sleeps, the loop waits for an interrupt, bounded by [`WAKE_TIMEOUT_MS`].
use core::arch::x86_64::__cpuid_count;

use lazaret_pci::virt::VirtualBus;
use lazaret_types::PhysMem;

use super::console::GuestConsole;
use super::exits::{self, Action, Ending, GuestEnv, MAX_SPURIOUS_EXITS};
use super::interrupts::{self, GuestInterrupts};
use super::lifecycle::Guest;
use super::memory_io;
use crate::arch::idt::take_pending_interrupts;
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
/// How long every guest may sleep in HLT with no interrupt arriving before the sleepers end
/// ([`Ending::NoInterrupt`]): an edu DMA completes in 100 ms of virtual time.
pub const WAKE_TIMEOUT_MS: u64 = 2_000;

/// A guest's world while one of its exits is handled.
struct Env<'a> {
    name: &'a str,
    bus: &'a mut VirtualBus,
    config: &'a ConfigAccess,
    memory: &'a GuestMemory,
    mem: &'a dyn PhysMem,
    console: &'a mut GuestConsole,
    irq: &'a mut GuestInterrupts,
    /// The vCPU has interrupts enabled.
    interrupts_enabled: bool,
}

impl GuestEnv for Env<'_> {
    fn host_cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        let r = __cpuid_count(leaf, subleaf);
        [r.eax, r.ebx, r.ecx, r.edx]
    }

    fn port_read(&mut self, port: u16, size: u8) -> Option<u32> {
        let cfg = self.config.segment(self.bus.segment())?;
        VirtualBus::handles_port(port).then(|| self.bus.port_read(cfg, port, size))
    }

    fn port_write(&mut self, port: u16, size: u8, value: u32) -> bool {
        let Some(cfg) = self.config.segment(self.bus.segment()) else {
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

    fn msr_read(&mut self, msr: u32) -> Option<u64> {
        self.irq.vlapic.msr_read(msr)
    }

    fn msr_write(&mut self, msr: u32, value: u64) -> bool {
        self.irq.vlapic.msr_write(msr, value)
    }

    fn can_wake(&self) -> bool {
        self.interrupts_enabled && self.irq.can_wake()
    }

    fn interrupt_stamp(&mut self, tsc: u64, vector: u8) {
        self.irq.stamp(tsc, vector);
    }
}

/// What one exit left for the loop.
#[derive(Default)]
struct Step {
    ending: Option<Ending>,
    /// A host interrupt is waiting at the local APIC.
    host_interrupt: bool,
}

/// Runs one exit of `guest` (offering it its highest deliverable interrupt first).
fn step<V: Vendor, C: Vcpu>(hv: &Hypervisor<V>, guest: &mut Guest<C>) -> Step {
    let Some(vcpu) = guest.vcpu.as_mut() else {
        return Step::default();
    };
    guest.irq.offer(vcpu);
    let exit = vcpu.run();
    let host_interrupt = exit == crate::vcpu::Exit::Interrupt;
    let ended = |e| Step {
        ending: Some(e),
        host_interrupt,
    };
    let Some(lock) = hv.passthrough.as_ref() else {
        return Step::default();
    };
    let g = lock.lock();
    let Some(domain) = g.state().domains().get(guest.domain) else {
        return Step::default();
    };
    let mut env = Env {
        name: &guest.spec.name,
        bus: &mut guest.bus,
        config: &hv.config,
        memory: &domain.memory,
        mem: &DIRECT_MAP,
        console: &mut guest.console,
        irq: &mut guest.irq,
        interrupts_enabled: vcpu.interrupts_enabled(),
    };
    let mut regs = *vcpu.regs();
    let action = exits::handle(&exit, &mut regs, &mut env);
    *vcpu.regs_mut() = regs;
    let done = match action {
        Action::Resume => {
            guest.spurious += 1;
            return Step {
                ending: (guest.spurious > MAX_SPURIOUS_EXITS).then_some(Ending::Livelock),
                host_interrupt,
            };
        }
        Action::Complete(value) => vcpu.complete(value),
        Action::Halt => {
            guest.irq.halted = true;
            vcpu.complete(None)
        }
        Action::Inject(vector, code) => vcpu.inject_exception(vector, code),
        Action::End(ending) => return ended(ending),
    };
    guest.spurious = 0;
    Step {
        ending: done.err().map(|e| Ending::Invalid(alloc::format!("{e}"))),
        host_interrupt,
    }
}

/// Acts on the MSI requests `guest` made through its virtual configuration space.
fn sync_msi<V: Vendor, C: Vcpu>(hv: &mut Hypervisor<V>, guest: &mut Guest<C>) {
    let changed = guest.bus.take_msi_changes();
    if changed.len() == 0 {
        return;
    }
    let Some(lock) = hv.passthrough.as_ref() else {
        return;
    };
    let mut g = lock.lock();
    let mut routing = interrupts::Routing {
        g: &mut g,
        config: &hv.config,
        vectors: &mut hv.host_vectors,
        domain: guest.domain,
        bus: &guest.bus,
    };
    routing.sync(changed, &mut guest.irq);
}

/// Raises the host interrupts taken so far in the guests they are routed to.
fn collect_interrupts<C: Vcpu>(guests: &mut [Guest<C>]) {
    for g in guests.iter_mut().filter(|g| g.ending.is_none()) {
        g.irq.collect();
    }
}

/// Every guest left is asleep: wait (bounded) until one has an interrupt to take. Faults are
/// drained meanwhile, so a device storming a sleeping guest is still stopped.
fn wait_for_interrupt<V: Vendor, C: Vcpu>(
    hv: &mut Hypervisor<V>,
    guests: &mut [Guest<C>],
    faults: &mut FaultReport,
) {
    let deadline = tsc::deadline_after_ms(WAKE_TIMEOUT_MS);
    let woken = |guests: &[Guest<C>]| {
        let mut left = guests.iter().filter(|g| g.ending.is_none());
        left.clone().count() == 0 || left.any(|g| g.irq.runnable())
    };
    loop {
        // The woken guest runs first; the round after it drains the fault log.
        take_pending_interrupts();
        collect_interrupts(guests);
        if woken(guests) {
            return;
        }
        drain(hv, guests, faults);
        if woken(guests) {
            return;
        }
        if tsc::passed(deadline) {
            for g in guests.iter_mut().filter(|g| g.ending.is_none()) {
                flush_console(g);
                g.ending = Some(Ending::NoInterrupt(WAKE_TIMEOUT_MS));
            }
            return;
        }
    }
}

/// What the fault drains of one run found, in total.
#[derive(Debug, Default)]
pub struct RunReport {
    pub exits: u64,
    pub faults: FaultReport,
}

/// Runs every guest that has not ended and is not asleep, one exit each in turn, until all
/// have ended (or [`MAX_EXITS`] passed: the rest end as livelocked). Faults are drained as it goes; a guest
/// whose device lost bus mastering ends with [`Ending::DmaFaults`].
pub fn run_all<V: Vendor, C: Vcpu>(hv: &mut Hypervisor<V>, guests: &mut [Guest<C>]) -> RunReport {
    let mut report = RunReport::default();
    while guests.iter().any(|g| g.ending.is_none()) {
        let mut ran = false;
        for guest in guests.iter_mut().filter(|g| g.ending.is_none()) {
            if !guest.irq.runnable() {
                continue;
            }
            guest.irq.halted = false;
            ran = true;
            report.exits += 1;
            let step = step(hv, guest);
            sync_msi(hv, guest);
            if step.host_interrupt {
                take_pending_interrupts();
            }
            if let Some(ending) = step.ending {
                flush_console(guest);
                guest.ending = Some(ending);
            }
        }
        collect_interrupts(guests);
        // After every round: QEMU's VT-d (like a unit with one fault-recording register)
        // records a new fault only once the last is cleared, so a storming device is
        // stopped within a threshold's worth of its exits.
        drain(hv, guests, &mut report.faults);
        if !ran {
            wait_for_interrupt(hv, guests, &mut report.faults);
        }
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
