//! A guest's life under the device lock: create (domain and memory, its device out of DomIO,
//! its virtual PCI bus, its memory per the contract, nested paging, a vCPU) → run → destroy
//! (vCPU gone, devices back to quarantine, memory scrubbed, then freed). Every failure in
//! `create` undoes what was done; `destroy` never fails.
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use lazaret_guest_abi::layout::{MMIO_WINDOW_GPA, MMIO_WINDOW_SIZE};
use lazaret_paging::{PageTables, PagingError};
use lazaret_pci::virt::{VirtualBus, VirtualBusError};
use lazaret_types::{PhysAddr, Sbdf, PAGE_SIZE};

use super::console::GuestConsole;
use super::exits::Ending;
use super::image::{self, PrepareError};
use super::interrupts::GuestInterrupts;
use super::spec::GuestSpec;
use crate::domain::{build_nested_tables, DomainId, MmioMapping};
use crate::hypervisor::Hypervisor;
use crate::mm::direct_map::DIRECT_MAP;
use crate::passthrough::iommu::Vendor;
use crate::passthrough::{self, PassthroughError};
use crate::vcpu::{ExitCounts, Vcpu, VcpuError, Virtualization};

/// A guest image as the boot loader delivered it: its module string and bytes.
pub struct GuestImage {
    pub line: String,
    pub bytes: &'static [u8],
}

/// A running (or ended, not yet destroyed) guest.
pub struct Guest<C: Vcpu> {
    pub spec: GuestSpec,
    pub domain: DomainId,
    /// The endpoint functions it was given (its device's alias group).
    pub devices: Vec<Sbdf>,
    pub bus: VirtualBus,
    pub console: GuestConsole,
    pub ending: Option<Ending>,
    /// Host interrupts in a row without guest progress.
    pub spurious: u32,
    /// One past the image's last byte (its DMA buffers follow).
    pub image_end: u64,
    /// Its virtual LAPIC and its devices' routed MSIs.
    pub irq: GuestInterrupts,
    pub(super) vcpu: Option<C>,
    npt: Option<PageTables>,
    exits: ExitCounts,
}

impl<C: Vcpu> Guest<C> {
    pub fn exit_counts(&self) -> ExitCounts {
        self.vcpu.as_ref().map_or(self.exits, |v| *v.exit_counts())
    }
}

#[derive(Debug)]
pub enum GuestError {
    NoIommu,
    NoSuchDevice(Sbdf),
    Passthrough(PassthroughError),
    Bus(VirtualBusError),
    Prepare(PrepareError),
    NestedPaging(PagingError),
    Vcpu(VcpuError),
}

impl fmt::Display for GuestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuestError::NoIommu => f.write_str("no IOMMU: a guest cannot be given a device safely"),
            GuestError::NoSuchDevice(s) => write!(f, "no PCI function {s}"),
            GuestError::Passthrough(e) => write!(f, "{e}"),
            GuestError::Bus(e) => write!(f, "its virtual PCI bus: {e}"),
            GuestError::Prepare(e) => write!(f, "{e}"),
            GuestError::NestedPaging(e) => write!(f, "its nested page tables: {e:?}"),
            GuestError::Vcpu(e) => write!(f, "its vCPU: {e}"),
        }
    }
}

/// Whether the host runs with EFER.NXE (then nested paging may mark BARs no-execute).
fn host_nx() -> bool {
    // SAFETY: reading EFER has no side effects; every x86_64 CPU has it.
    let efer = unsafe { x86::msr::rdmsr(x86::msr::IA32_EFER) };
    efer & (1 << 11) != 0
}

/// Creates guest `spec` from `image` and gives it `device` (with its alias group).
pub fn create<V: Vendor, X: Virtualization>(
    hv: &mut Hypervisor<V>,
    virt: &mut X,
    spec: GuestSpec,
    image: &[u8],
    device: Sbdf,
) -> Result<Guest<X::Vcpu>, GuestError> {
    if !hv.pci.functions.iter().any(|f| f.sbdf == device) {
        return Err(GuestError::NoSuchDevice(device));
    }
    let lock = hv.passthrough.as_ref().ok_or(GuestError::NoIommu)?;
    let pages = usize::try_from(spec.memory / PAGE_SIZE).unwrap_or(usize::MAX);
    let mut g = lock.lock();
    let domain = passthrough::create_domain(&mut g, &mut hv.frames, &spec.name, pages)
        .map_err(GuestError::Passthrough)?;
    // From here on a failure destroys the domain, which takes back whatever it was given.
    let undo =
        |g: &mut passthrough::DevicesGuard<'_, V>, frames: &mut crate::mm::frames::Frames, e| {
            let _ = passthrough::destroy_domain(g, frames, domain);
            e
        };
    let report = match passthrough::assign(&mut g, &mut hv.frames, domain, device) {
        Ok(r) if r.clean() => r,
        Ok(_) => {
            let e = GuestError::Passthrough(PassthroughError::Blocked(device));
            return Err(undo(&mut g, &mut hv.frames, e));
        }
        Err(e) => return Err(undo(&mut g, &mut hv.frames, GuestError::Passthrough(e))),
    };
    let devices: Vec<Sbdf> = report.moved.iter().copied().collect();
    let functions: Vec<(Sbdf, &[lazaret_pci::Bar])> = hv
        .pci
        .functions
        .iter()
        .filter(|f| devices.contains(&f.sbdf))
        .map(|f| (f.sbdf, f.bars.as_slice()))
        .collect();
    let bus = match VirtualBus::new(&functions, (MMIO_WINDOW_GPA, MMIO_WINDOW_SIZE)) {
        Ok(b) => b,
        Err(e) => return Err(undo(&mut g, &mut hv.frames, GuestError::Bus(e))),
    };
    let mmio: Vec<MmioMapping> = bus
        .mappings()
        .iter()
        .map(|m| MmioMapping {
            gpa: m.gpa,
            hpa: PhysAddr(m.host_phys),
            len: m.size,
        })
        .collect();
    let Some(memory) = g.state().domains().get(domain).map(|d| &d.memory) else {
        return Err(undo(
            &mut g,
            &mut hv.frames,
            GuestError::Passthrough(PassthroughError::UnknownDomain(domain)),
        ));
    };
    let prepared = match image::prepare(&DIRECT_MAP, memory, image, &spec.cmdline) {
        Ok(p) => p,
        Err(e) => return Err(undo(&mut g, &mut hv.frames, GuestError::Prepare(e))),
    };
    let npt = match build_nested_tables(&DIRECT_MAP, &mut hv.frames, memory, &mmio, host_nx()) {
        Ok(t) => t,
        Err(e) => return Err(undo(&mut g, &mut hv.frames, GuestError::NestedPaging(e))),
    };
    let vcpu = match virt.create_vcpu(npt.root(), &prepared.entry, &mut hv.frames) {
        Ok(v) => v,
        Err(e) => {
            npt.free(&mut hv.frames);
            return Err(undo(&mut g, &mut hv.frames, GuestError::Vcpu(e)));
        }
    };
    Ok(Guest {
        spec,
        domain,
        devices,
        bus,
        console: GuestConsole::new(),
        ending: None,
        spurious: 0,
        image_end: prepared.image_end,
        irq: GuestInterrupts::default(),
        vcpu: Some(vcpu),
        npt: Some(npt),
        exits: ExitCounts::default(),
    })
}

/// What destroying a guest did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Destroyed {
    /// Devices back in quarantine.
    pub devices: usize,
    /// Their invalidations completed (else the memory is parked, not freed).
    pub clean: bool,
    pub scrubbed_bytes: u64,
}

/// Destroys `guest`: its vCPU first (nothing runs in it any more), its devices' MSIs off and
/// their host vectors freed, its devices back to quarantine (their scratch pages zeroed on the way), then its memory scrubbed — no device
/// and no CPU can reach it now — and only then freed with its IOMMU tables. Never fails.
pub fn destroy<V: Vendor, X: Virtualization>(
    hv: &mut Hypervisor<V>,
    virt: &mut X,
    mut guest: Guest<X::Vcpu>,
) -> Destroyed {
    if let Some(v) = guest.vcpu.take() {
        guest.exits = *v.exit_counts();
        virt.destroy_vcpu(v, &mut hv.frames);
    }
    if let Some(t) = guest.npt.take() {
        t.free(&mut hv.frames);
    }
    guest
        .irq
        .retire(&hv.config, &guest.bus, &mut hv.host_vectors);
    let mut out = Destroyed {
        clean: true,
        ..Destroyed::default()
    };
    let Some(lock) = hv.passthrough.as_ref() else {
        return out;
    };
    let mut g = lock.lock();
    for sbdf in &guest.devices {
        match passthrough::deassign(&mut g, guest.domain, *sbdf) {
            Ok(r) => {
                out.devices += r.moved.len();
                out.clean &= r.clean();
            }
            // Already back with its group (an earlier member moved it).
            Err(PassthroughError::NotOwner { .. }) => {}
            Err(e) => {
                log::error!("guest {}: taking back {sbdf}: {e}", guest.spec.name);
                out.clean = false;
            }
        }
    }
    if out.clean {
        if let Some(d) = g.state().domains().get(guest.domain) {
            d.memory.scrub(&DIRECT_MAP);
            out.scrubbed_bytes = d.memory.size();
        }
    }
    match passthrough::destroy_domain(&mut g, &mut hv.frames, guest.domain) {
        Ok(r) => out.clean &= !r.parked,
        Err(e) => {
            log::error!("guest {}: destroying its domain: {e}", guest.spec.name);
            out.clean = false;
        }
    }
    out
}
