//! A guest's device interrupts, end to end (issue 11): the guest enables MSI on its device
//! through its virtual configuration space; Lazaret gives the device a host vector of its own,
//! programs the device's remapping entry for it (the IOMMU seam: source-checked, on this CPU)
//! and writes the real MSI capability with the message the seam returned. When the host
//! vector is taken, the guest's vector is raised in its virtual LAPIC and injected when the
//! guest can take it. The guest never names a host vector, and nothing it writes reaches the
//! device's MSI registers.
use alloc::vec::Vec;

use lazaret_types::Sbdf;

use super::vectors::HostVectors;
use super::vlapic::{VirtualLapic, FIRST_VECTOR};
use crate::arch::idt::{interrupts_taken, last_taken_at};
use crate::arch::percpu::this_apic_id;
use crate::domain::DomainId;
use crate::passthrough::iommu::{InterruptTarget, MsiAddress, Vendor};
use crate::passthrough::{self, DevicesGuard};
use crate::platform::pci::ConfigAccess;
use crate::vcpu::Vcpu;
use lazaret_pci::virt::{GuestMsi, VirtualBus};

/// Remapping entry each device uses: one MSI vector per device.
const ENTRY: u16 = 0;

/// One device's MSI as Lazaret routes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiRoute {
    pub sbdf: Sbdf,
    /// The host vector its remapping entry targets (the device's own while the guest lives).
    pub host_vector: u8,
    /// The guest vector it becomes; `None` while the guest has MSI disabled.
    pub guest_vector: Option<u8>,
    /// The message the device's capability holds (the IOMMU's, never the guest's).
    pub message: Option<MsiAddress>,
    /// Host interrupts on `host_vector` already passed on.
    seen: u64,
    /// TSC when the last one was taken: where its latency into the guest starts.
    taken_at: u64,
}

/// Latency samples in TSC ticks: host interrupt entry → guest handler entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Latency {
    pub samples: u64,
    pub min: u64,
    pub max: u64,
    pub sum: u64,
}

impl Latency {
    /// The mean sample; `None` without one.
    pub fn mean(&self) -> Option<u64> {
        self.sum.checked_div(self.samples)
    }

    fn record(&mut self, ticks: u64) {
        self.min = if self.samples == 0 {
            ticks
        } else {
            self.min.min(ticks)
        };
        self.max = self.max.max(ticks);
        self.sum = self.sum.saturating_add(ticks);
        self.samples += 1;
    }

    pub fn add(&mut self, other: &Latency) {
        if other.samples == 0 {
            return;
        }
        self.min = if self.samples == 0 {
            other.min
        } else {
            self.min.min(other.min)
        };
        self.max = self.max.max(other.max);
        self.sum = self.sum.saturating_add(other.sum);
        self.samples += other.samples;
    }
}

/// Everything interrupt-related of one guest.
#[derive(Debug, Default)]
pub struct GuestInterrupts {
    pub vlapic: VirtualLapic,
    routes: Vec<MsiRoute>,
    /// In HLT, waiting for an interrupt (completed: it resumes after the HLT).
    pub halted: bool,
    /// MSI requests Lazaret would not act on (a vector below 32, a destination other than its
    /// one vCPU, an address outside the interrupt window, no host vector or entry left).
    pub refused: u64,
    pub latency: Latency,
    /// Host interrupts on this guest's vectors, passed on to its virtual LAPIC.
    pub host_interrupts: u64,
}

impl GuestInterrupts {
    pub fn routes(&self) -> &[MsiRoute] {
        &self.routes
    }

    /// Whether an interrupt could still wake the guest from HLT.
    pub fn can_wake(&self) -> bool {
        self.vlapic.requested() || self.routes.iter().any(|r| r.guest_vector.is_some())
    }

    /// Whether the scheduler should run it: not halted, or halted with a deliverable interrupt.
    pub fn runnable(&self) -> bool {
        !self.halted || self.vlapic.pending().is_some()
    }

    /// Host interrupts taken since the last call raise the routed guest vectors. Returns
    /// whether any did.
    pub fn collect(&mut self) -> bool {
        self.collect_from(&|v| (interrupts_taken(v), last_taken_at(v)))
    }

    /// [`Self::collect`] over `taken(host vector)` = (interrupts taken so far, TSC of the last).
    fn collect_from(&mut self, taken: &dyn Fn(u8) -> (u64, u64)) -> bool {
        let mut any = false;
        for r in &mut self.routes {
            let (count, at) = taken(r.host_vector);
            if count == r.seen {
                continue;
            }
            self.host_interrupts += count.wrapping_sub(r.seen);
            r.seen = count;
            r.taken_at = at;
            if let Some(v) = r.guest_vector {
                any |= self.vlapic.raise(v);
            }
        }
        any
    }

    /// Offers the highest deliverable vector to the vCPU (injected now, or once its interrupt
    /// window opens).
    pub fn offer<C: Vcpu>(&mut self, vcpu: &mut C) {
        let Some(vector) = self.vlapic.pending() else {
            return;
        };
        match vcpu.inject_interrupt(vector) {
            Ok(true) => self.vlapic.accept(vector),
            Ok(false) => {}
            Err(e) => log::warn!("injecting vector {vector:#x}: {e}"),
        }
    }

    /// The guest's handler for `vector` started at TSC `tsc` (HC_INTERRUPT_STAMP).
    pub fn stamp(&mut self, tsc: u64, vector: u8) {
        let Some(r) = self
            .routes
            .iter_mut()
            .find(|r| r.guest_vector == Some(vector) && r.taken_at != 0)
        else {
            return;
        };
        // One sample per host interrupt: a second stamp for the same one is ignored.
        let start = core::mem::take(&mut r.taken_at);
        if tsc >= start {
            self.latency.record(tsc - start);
        }
    }

    /// The guest is going: its devices' MSIs off (their entries are blocked anyway by the
    /// move to quarantine: a politeness to the next owner, not a safety step) and its host
    /// vectors back to `vectors`.
    pub fn retire(&mut self, config: &ConfigAccess, bus: &VirtualBus, vectors: &mut HostVectors) {
        for r in self.routes.drain(..) {
            if let (Some(m), Some(cfg)) = (r.message, config.segment(r.sbdf.segment)) {
                let _ = bus.program_host_msi(cfg, r.sbdf, m.address, m.data, false);
            }
            vectors.free(r.host_vector);
        }
    }
}

/// What the guest's MSI request becomes: a guest vector Lazaret will route, or nothing.
fn routable(request: &GuestMsi) -> Result<Option<u8>, &'static str> {
    if !request.deliverable() {
        return if request.enabled && !request.valid {
            Err("its address is outside the interrupt window")
        } else {
            Ok(None)
        };
    }
    if request.vector < FIRST_VECTOR {
        return Err("vectors below 32 are exceptions");
    }
    if request.destination != 0 {
        return Err("it names a CPU the guest does not have (its only vCPU is APIC ID 0)");
    }
    Ok(Some(request.vector))
}

/// What acting on a guest's MSI requests needs: the device lock, the configuration spaces,
/// the host vectors, and the guest's domain and bus.
pub struct Routing<'a, 'l, V: Vendor> {
    pub g: &'a mut DevicesGuard<'l, V>,
    pub config: &'a ConfigAccess,
    pub vectors: &'a mut HostVectors,
    pub domain: DomainId,
    pub bus: &'a VirtualBus,
}

impl<V: Vendor> Routing<'_, '_, V> {
    /// Applies the MSI requests the guest made since the last call (after an exit that wrote
    /// its configuration space).
    pub fn sync(&mut self, changed: impl Iterator<Item = Sbdf>, irq: &mut GuestInterrupts) {
        for sbdf in changed {
            let Some(request) = self.bus.msi_request(sbdf) else {
                continue;
            };
            let want = match routable(&request) {
                Ok(w) => w,
                Err(why) => {
                    irq.refused += 1;
                    log::warn!(
                        "{sbdf}: the guest's MSI (vector {:#x}, destination {}, address {:#x}) is refused: {why}",
                        request.vector,
                        request.destination,
                        request.address
                    );
                    None
                }
            };
            if let Err(why) = self.apply(sbdf, want, irq) {
                irq.refused += 1;
                log::warn!("{sbdf}: MSI not routed: {why}");
                // Whatever failed, the device is left unable to signal: entry blocked, MSI off.
                let _ = self.apply(sbdf, None, irq);
            }
        }
    }

    /// `sbdf`'s entry → a host vector of its own standing for guest vector `want` (MSI on),
    /// or blocked (MSI off) for `None`.
    fn apply(
        &mut self,
        sbdf: Sbdf,
        want: Option<u8>,
        irq: &mut GuestInterrupts,
    ) -> Result<(), alloc::string::String> {
        let cfg = self
            .config
            .segment(sbdf.segment)
            .ok_or_else(|| alloc::format!("no configuration space for segment {}", sbdf.segment))?;
        let at = match irq.routes.iter().position(|r| r.sbdf == sbdf) {
            Some(i) => i,
            None if want.is_none() => return Ok(()),
            None => {
                let host_vector = self.vectors.alloc().ok_or("no host vector left")?;
                irq.routes.push(MsiRoute {
                    sbdf,
                    host_vector,
                    guest_vector: None,
                    message: None,
                    seen: interrupts_taken(host_vector),
                    taken_at: 0,
                });
                irq.routes.len() - 1
            }
        };
        let route = &mut irq.routes[at];
        match want {
            Some(guest_vector) => {
                let target = InterruptTarget {
                    vector: route.host_vector,
                    apic_id: this_apic_id(),
                };
                let m = passthrough::program_interrupt(self.g, self.domain, sbdf, ENTRY, target)
                    .map_err(|e| alloc::format!("{e}"))?;
                self.bus
                    .program_host_msi(cfg, sbdf, m.address, m.data, true)
                    .map_err(|e| alloc::format!("{e}"))?;
                route.message = Some(m);
                route.guest_vector = Some(guest_vector);
            }
            None => {
                route.guest_vector = None;
                if let Some(m) = route.message {
                    self.bus
                        .program_host_msi(cfg, sbdf, m.address, m.data, false)
                        .map_err(|e| alloc::format!("{e}"))?;
                }
                passthrough::block_interrupt(self.g, self.domain, sbdf, ENTRY)
                    .map_err(|e| alloc::format!("{e}"))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msi(enabled: bool, vector: u8, destination: u8, valid: bool) -> GuestMsi {
        GuestMsi {
            enabled,
            masked: false,
            address: 0xFEE0_0000 | (u64::from(destination) << 12),
            data: u16::from(vector),
            vector,
            destination,
            valid,
        }
    }

    #[test]
    fn only_a_vector_for_the_guests_own_cpu_in_the_window_is_routed() {
        assert_eq!(routable(&msi(true, 0x50, 0, true)), Ok(Some(0x50)));
        assert_eq!(routable(&msi(false, 0x50, 0, true)), Ok(None));
        assert!(routable(&msi(true, 13, 0, true)).is_err());
        assert!(routable(&msi(true, 0x50, 1, true)).is_err());
        assert!(routable(&msi(true, 0x50, 0, false)).is_err());
        let mut masked = msi(true, 0x50, 0, true);
        masked.masked = true;
        assert_eq!(routable(&masked), Ok(None));
    }

    #[test]
    fn latency_is_one_sample_per_host_interrupt() {
        let mut irq = GuestInterrupts::default();
        irq.routes.push(MsiRoute {
            taken_at: 1000,
            ..route(0x80, Some(0x50), 0)
        });
        irq.stamp(1500, 0x51);
        assert_eq!(irq.latency.samples, 0, "another vector");
        irq.stamp(1500, 0x50);
        irq.stamp(1900, 0x50);
        assert_eq!(
            irq.latency,
            Latency {
                samples: 1,
                min: 500,
                max: 500,
                sum: 500
            }
        );
        irq.routes[0].taken_at = 2000;
        irq.stamp(1999, 0x50);
        assert_eq!(
            irq.latency.samples, 1,
            "a stamp before the interrupt is not a sample"
        );
        irq.routes[0].taken_at = 3000;
        irq.stamp(3200, 0x50);
        assert_eq!((irq.latency.min, irq.latency.max), (200, 500));
    }

    fn route(host_vector: u8, guest_vector: Option<u8>, seen: u64) -> MsiRoute {
        MsiRoute {
            sbdf: Sbdf::new(0, lazaret_types::Bdf::new(0, 3, 0).unwrap()),
            host_vector,
            guest_vector,
            message: None,
            seen,
            taken_at: 0,
        }
    }

    #[test]
    fn host_interrupts_raise_only_their_routes_guest_vector() {
        let mut irq = GuestInterrupts::default();
        irq.routes.push(route(0x80, Some(0x50), 1));
        irq.routes.push(route(0x81, None, 0));
        let taken = |v: u8| match v {
            0x80 => (3, 1000),
            0x81 => (1, 2000),
            _ => (7, 9),
        };
        assert!(irq.collect_from(&taken));
        assert_eq!(
            irq.host_interrupts, 3,
            "two on 0x80 since seen, one on 0x81"
        );
        assert_eq!(irq.vlapic.pending(), Some(0x50));
        assert_eq!(
            irq.vlapic.counts().raised,
            1,
            "coalesced, and 0x81 routes nowhere"
        );
        assert_eq!(irq.routes[0].taken_at, 1000);
        irq.vlapic.accept(0x50);
        assert!(!irq.collect_from(&taken), "nothing new");
        assert_eq!(irq.host_interrupts, 3);
        assert_eq!(irq.vlapic.pending(), None);
        irq.stamp(1500, 0x50);
        assert_eq!(
            irq.latency.samples, 1,
            "the stamp starts from the collected TSC"
        );
        assert_eq!(irq.latency.min, 500);
    }

    /// A vCPU that takes an injection only when told to.
    struct FakeVcpu {
        takes: bool,
        injected: Vec<u8>,
        regs: crate::vcpu::GuestRegs,
        counts: crate::vcpu::ExitCounts,
    }

    impl Vcpu for FakeVcpu {
        fn run(&mut self) -> crate::vcpu::Exit {
            crate::vcpu::Exit::Hlt
        }
        fn regs(&self) -> &crate::vcpu::GuestRegs {
            &self.regs
        }
        fn regs_mut(&mut self) -> &mut crate::vcpu::GuestRegs {
            &mut self.regs
        }
        fn rip(&self) -> u64 {
            0
        }
        fn rsp(&self) -> u64 {
            0
        }
        fn complete(&mut self, _: Option<u32>) -> Result<(), crate::vcpu::VcpuError> {
            Ok(())
        }
        fn inject_exception(&mut self, _: u8, _: u32) -> Result<(), crate::vcpu::VcpuError> {
            Ok(())
        }
        fn exit_counts(&self) -> &crate::vcpu::ExitCounts {
            &self.counts
        }
        fn interrupts_enabled(&self) -> bool {
            self.takes
        }
        fn inject_interrupt(&mut self, vector: u8) -> Result<bool, crate::vcpu::VcpuError> {
            self.injected.push(vector);
            Ok(self.takes)
        }
    }

    #[test]
    fn an_offered_interrupt_is_in_service_only_once_the_vcpu_took_it() {
        let mut vcpu = FakeVcpu {
            takes: false,
            injected: Vec::new(),
            regs: Default::default(),
            counts: Default::default(),
        };
        let mut irq = GuestInterrupts::default();
        irq.offer(&mut vcpu);
        assert!(vcpu.injected.is_empty(), "nothing pending, nothing offered");
        irq.vlapic.raise(0x50);
        irq.offer(&mut vcpu);
        assert_eq!(irq.vlapic.pending(), Some(0x50), "refused: still requested");
        vcpu.takes = true;
        irq.offer(&mut vcpu);
        assert_eq!(vcpu.injected, [0x50, 0x50]);
        assert_eq!(irq.vlapic.pending(), None);
        assert_eq!(irq.vlapic.counts().delivered, 1);
    }

    #[test]
    fn latencies_add_up_across_guests() {
        let mut total = Latency::default();
        assert_eq!(total.mean(), None);
        total.add(&Latency::default());
        assert_eq!(
            total,
            Latency::default(),
            "an empty sample set changes nothing"
        );
        let a = Latency {
            samples: 2,
            min: 100,
            max: 300,
            sum: 400,
        };
        let b = Latency {
            samples: 1,
            min: 50,
            max: 60,
            sum: 60,
        };
        total.add(&a);
        assert_eq!(total, a);
        total.add(&b);
        assert_eq!(
            total,
            Latency {
                samples: 3,
                min: 50,
                max: 300,
                sum: 460
            }
        );
        assert_eq!(total.mean(), Some(153));
        let mut c = b;
        c.add(&a);
        assert_eq!((c.min, c.max), (50, 300));
    }

    #[test]
    fn a_halted_guest_is_runnable_only_with_a_deliverable_interrupt() {
        let mut irq = GuestInterrupts::default();
        assert!(irq.runnable());
        assert!(!irq.can_wake());
        irq.halted = true;
        assert!(!irq.runnable());
        irq.vlapic.raise(0x50);
        assert!(irq.runnable());
        assert!(irq.can_wake());
    }
}
