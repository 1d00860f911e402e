//! `scenario=demo`: the story of a talk, with real guests. The platform; every device in
//! quarantine; two guests, each given one edu, run interleaved on this CPU and each moves data
//! through its own device in its own memory; a rogue guest tries what it must not (DMA into
//! another guest or past its memory, MMIO it does not own, a triple fault) and is stopped and
//! destroyed, its device back in quarantine where its DMA lands in its own scratch page; then
//! everything is torn down and tallied. Guests come from the multiboot modules
//! (`guest NAME [memory=] [device=] variant=…`); `scripts/demo` passes three.
//!
//! Each check reads what the hardware did: the guests' buffers read back from host memory,
//! another guest's page and the frame at the rogue's IOVA compared before and after, the
//! fault records, and the device's DMA after it came back.
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write as _;

use lazaret_guest_abi::layout::{dma_buffers, PAGE_SIZE};
use lazaret_guest_abi::{GuestArgs, GuestExit, Variant};
use lazaret_types::{PhysAddr, PhysMem, Sbdf};

use super::checks::Checks;
use super::edu::{self, EduDevice};
use super::groups;
use super::guest_interrupts;
use super::memory::{fresh_pattern, read_page};
use super::quarantine_dma::DMA_LEN;
use super::rogue_irq;
use super::story::{phase, say, Table};
use crate::arch::tsc;
use crate::domain::DomainId;
use crate::guest::exits::Ending;
use crate::guest::interrupts::Latency;
use crate::guest::lifecycle::{self, Guest};
use crate::guest::memory_io;
use crate::guest::run::run_all;
use crate::guest::spec::{self, GuestSpec};
use crate::hypervisor::Hypervisor;
use crate::mm::direct_map::DIRECT_MAP;
use crate::passthrough::iommu::Inspect;
use crate::passthrough::FaultReport;
use crate::vcpu::svm::{Svm, SvmVcpu};
use crate::vcpu::{ExitCounts, Virtualization};

/// A guest to start: what its module said, and the device it gets.
struct Plan {
    spec: GuestSpec,
    image: &'static [u8],
    variant: Variant,
    device: Sbdf,
}

/// What the closing table shows of a guest after it is gone.
struct Tally {
    name: String,
    device: Sbdf,
    ending: String,
    exits: ExitCounts,
    faults: usize,
    /// Interrupts injected into it.
    interrupts: u64,
}

pub fn run<V: Inspect>(hv: &mut Hypervisor<V>, checks: &mut Checks) {
    let started = tsc::micros_since_entry();
    phase(1, "The platform");
    let mut svm = match Svm::enable_on_this_cpu(&mut hv.frames) {
        Ok(s) => s,
        Err(e) => {
            checks.check("svm", false, format_args!("guests cannot run: {e}"));
            return;
        }
    };
    let f = *svm.features();
    say(format_args!(
        "CPU: {} with nested paging, {} ASIDs, NRIP save {}",
        svm.name(),
        f.nasid,
        if f.nrip_save {
            "yes"
        } else {
            "no (instruction lengths decoded)"
        }
    ));
    let Some(lock) = hv.passthrough.as_ref() else {
        let why = hv
            .iommu_failure
            .clone()
            .unwrap_or_else(|| "no DMAR or IVRS table".into());
        checks.check(
            "iommu",
            false,
            format_args!("no IOMMU, so no device can be given to a guest: {why}"),
        );
        return;
    };
    {
        let g = lock.lock();
        let s = g.state();
        say(format_args!(
            "IOMMU: {} with {}-level tables, quarantine {}",
            s.iommu_name(),
            s.levels(),
            s.mode()
        ));
        phase(2, "Quarantine: every device belongs to DomIO");
        let mut t = Table::new(&["device", "id", "owner"]);
        let mut in_quarantine = 0;
        for d in s.devices() {
            let id = hv.pci.functions.iter().find(|p| p.sbdf == d.sbdf());
            let id = id.map_or_else(String::new, |p| {
                format!("{:04x}:{:04x}", p.vendor_id, p.device_id)
            });
            let owner = owner_name(s.domains(), d.owner());
            in_quarantine += usize::from(d.owner() == s.dom_io());
            t.row(&[&d.sbdf(), &id, &owner]);
        }
        t.print();
        let total = s.devices().count();
        checks.check(
            "all-quarantined",
            in_quarantine == total && total > 0,
            format_args!(
                "{in_quarantine} of {total} device(s) are in quarantine before any guest exists"
            ),
        );
    }
    let devices = edu::find(hv);
    let Some(plans) = plan(hv, &devices, checks) else {
        return;
    };
    let (good, rogue): (Vec<Plan>, Vec<Plan>) =
        plans.into_iter().partition(|p| p.variant == Variant::Good);

    phase(3, "Guests, each with its own device, sharing this CPU");
    let mut tallies = Vec::new();
    let mut running = Vec::new();
    let mut latency = Latency::default();
    for p in good {
        if let Some(g) = start(hv, &mut svm, p, checks) {
            running.push(g);
        }
    }
    let report = run_all(hv, &mut running);
    say(format_args!(
        "{} guest(s) ran interleaved: {} VM exits in all",
        running.len(),
        report.exits
    ));
    for g in &running {
        check_good(hv, g, checks);
        guest_interrupts::check_woken(g, checks);
        if guest_interrupts::latency_is_lazarets(g) {
            latency.add(&g.irq.latency);
        }
    }
    check_apart(hv, &running, checks);

    if !rogue.is_empty() {
        phase(4, "A rogue guest");
    }
    for p in rogue {
        let victim = running.first().and_then(|g| destination_hpa(hv, g));
        rogue_guest(hv, &mut svm, &devices, p, victim, checks, &mut tallies);
    }

    phase(5, "Tear-down and the tally");
    for g in running {
        // Where its data was: after destroy the freed frame must hold none of it.
        let data = destination_hpa(hv, &g);
        let name = String::from(g.spec.name.as_str());
        tallies.push(finish(hv, &mut svm, g, &FaultReport::default(), checks));
        if let Some(hpa) = data {
            let wiped = read_page(hpa).iter().all(|b| *b == 0);
            checks.check(
                "guest-memory-scrubbed",
                wiped,
                format_args!(
                    "the frame that held guest {name}'s buffer ({hpa}) {} after it was freed",
                    if wiped {
                        "reads as zeros"
                    } else {
                        "STILL HOLDS its data"
                    }
                ),
            );
        }
    }
    let mut t = Table::new(&[
        "guest",
        "device",
        "ending",
        "faults",
        "interrupts",
        "VM exits",
    ]);
    for x in &tallies {
        t.row(&[
            &x.name,
            &x.device,
            &x.ending,
            &x.faults,
            &x.interrupts,
            &x.exits,
        ]);
    }
    t.print();
    if let Some(lock) = hv.passthrough.as_ref() {
        let g = lock.lock();
        let s = g.state();
        let back = s.devices().filter(|d| d.owner() == s.dom_io()).count();
        let total = s.devices().count();
        checks.check(
            "all-back-in-quarantine",
            back == total,
            format_args!("after the guests, {back} of {total} device(s) are back in quarantine"),
        );
        // The devices that were given to a guest, where they are now and what they did.
        let mut t = Table::new(&["device", "owner", "faults", "bus mastering"]);
        for x in &tallies {
            if let Some(d) = s.device(x.device) {
                let master = if d.bus_master_disabled() {
                    "off (Lazaret)"
                } else {
                    "allowed"
                };
                t.row(&[
                    &x.device,
                    &owner_name(s.domains(), d.owner()),
                    &d.faults().total,
                    &master,
                ]);
            }
        }
        t.print();
        let st = s.stats();
        let mut exits = ExitCounts::default();
        tallies.iter().for_each(|x| exits.add(&x.exits));
        let mut f = Table::new(&["figure", "value"]);
        f.row(&[&"guests run", &tallies.len()]);
        f.row(&[&"VM exits", &exits.total()]);
        f.row(&[&"owner switches", &st.owner_switches]);
        f.row(&[&"timed-out invalidation waits", &st.switch_timeouts]);
        if let Some(l) = guest_interrupts::latency_figure(&latency) {
            f.row(&[
                &"interrupt latency, host entry to a sleeping guest's handler",
                &l,
            ]);
        }
        f.print();
    }
    guest_interrupts::print_latency_figure(&latency);
    let micros = tsc::micros_since_entry() - started;
    crate::console::figure(
        "demo-guest-phases",
        format_args!("{}.{:03}", micros / 1000, micros % 1000),
        "ms",
    );
}

fn owner_name(domains: &crate::domain::Domains, id: DomainId) -> String {
    domains
        .get(id)
        .map_or_else(|| String::from("?"), |d| d.name.clone())
}

/// The guests from the modules, each with a device: its `device=`, else the next edu.
fn plan<V: Inspect>(
    hv: &Hypervisor<V>,
    edus: &[EduDevice],
    checks: &mut Checks,
) -> Option<Vec<Plan>> {
    let mut free = edus.iter().map(|d| d.sbdf);
    let mut plans = Vec::new();
    for image in &hv.guest_images {
        let spec = match spec::parse(&image.line) {
            Ok(s) => s,
            Err(e) => {
                checks.check(
                    "guest-module",
                    false,
                    format_args!("\"{}\": {e}", image.line),
                );
                continue;
            }
        };
        let variant = match GuestArgs::parse(&spec.cmdline) {
            Ok(a) => a.variant,
            Err(e) => {
                checks.check(
                    "guest-module",
                    false,
                    format_args!("guest {}: {e}", spec.name),
                );
                continue;
            }
        };
        let device = spec.device.or_else(|| free.next());
        let Some(device) = device else {
            checks.check(
                "guest-device",
                false,
                format_args!("no edu device left for guest {}", spec.name),
            );
            continue;
        };
        plans.push(Plan {
            spec,
            image: image.bytes,
            variant,
            device,
        });
    }
    checks
        .check(
            "guest-images",
            !plans.is_empty(),
            format_args!("{} guest image(s) from the boot modules", plans.len()),
        )
        .then_some(plans)
}

fn start<V: Inspect>(
    hv: &mut Hypervisor<V>,
    svm: &mut Svm,
    p: Plan,
    checks: &mut Checks,
) -> Option<Guest<SvmVcpu>> {
    let (name, device, memory) = (p.spec.name.clone(), p.device, p.spec.memory);
    match lifecycle::create(hv, svm, p.spec, p.image, device) {
        Ok(g) => {
            say(format_args!(
                "guest {name}: {} MiB of memory, {device} taken out of quarantine and given to it",
                memory >> 20
            ));
            Some(g)
        }
        Err(e) => {
            checks.check(
                "guest-create",
                false,
                format_args!("guest {name} could not be created: {e}"),
            );
            None
        }
    }
}

/// The guest's DMA source and destination, by the contract's rule (past the address space
/// when its image end overflows: nothing reads there).
fn buffers(g: &Guest<SvmVcpu>) -> (u64, u64) {
    dma_buffers(g.image_end).unwrap_or((u64::MAX, u64::MAX))
}

fn guest_bytes<V: Inspect>(
    hv: &Hypervisor<V>,
    domain: DomainId,
    gpa: u64,
    len: usize,
) -> Option<Vec<u8>> {
    let lock = hv.passthrough.as_ref()?;
    let g = lock.lock();
    let memory = &g.state().domains().get(domain)?.memory;
    let mut buf = alloc::vec![0u8; len];
    memory_io::read(&DIRECT_MAP, memory, gpa, &mut buf).ok()?;
    Some(buf)
}

fn destination_hpa<V: Inspect>(hv: &Hypervisor<V>, g: &Guest<SvmVcpu>) -> Option<PhysAddr> {
    let lock = hv.passthrough.as_ref()?;
    let s = lock.lock();
    s.state()
        .domains()
        .get(g.domain)?
        .memory
        .host_address(buffers(g).1)
}

/// A good guest exited with success, and its round trip is really in its memory: the
/// destination buffer, read back by the host, equals the source and is not a constant.
fn check_good<V: Inspect>(hv: &Hypervisor<V>, g: &Guest<SvmVcpu>, checks: &mut Checks) {
    let (src, dst) = buffers(g);
    let a = guest_bytes(hv, g.domain, src, DMA_LEN);
    let b = guest_bytes(hv, g.domain, dst, DMA_LEN);
    let landed = matches!((&a, &b), (Some(a), Some(b)) if a == b && a.iter().any(|x| *x != a[0]));
    let passed = g.ending == Some(Ending::Exited(GuestExit::Pass.code()));
    let ending = g
        .ending
        .as_ref()
        .map_or_else(|| String::from("still running"), |e| format!("{e}"));
    checks.check(
        "guest-dma",
        passed && landed,
        format_args!(
            "guest {} {ending}; its device copied {DMA_LEN} bytes from guest-physical {src:#x} to {dst:#x} through edu, and the host {} them in its memory",
            g.spec.name,
            if landed { "finds" } else { "does NOT find" }
        ),
    );
}

/// Two guests' memories are disjoint and their buffers differ (each wrote its own data).
fn check_apart<V: Inspect>(hv: &Hypervisor<V>, guests: &[Guest<SvmVcpu>], checks: &mut Checks) {
    let [a, b, ..] = guests else {
        return;
    };
    let Some(lock) = hv.passthrough.as_ref() else {
        return;
    };
    let disjoint = {
        let g = lock.lock();
        let d = g.state().domains();
        match (d.get(a.domain), d.get(b.domain)) {
            (Some(x), Some(y)) => x.memory.runs().iter().all(|r| {
                y.memory
                    .runs()
                    .iter()
                    .all(|q| r.hpa.0 + r.len() <= q.hpa.0 || q.hpa.0 + q.len() <= r.hpa.0)
            }),
            _ => false,
        }
    };
    let da = guest_bytes(hv, a.domain, buffers(a).1, DMA_LEN);
    let db = guest_bytes(hv, b.domain, buffers(b).1, DMA_LEN);
    let different = da.is_some() && db.is_some() && da != db;
    checks.check(
        "guests-apart",
        disjoint && different,
        format_args!(
            "guests {} and {} share no host frame ({}) and each device wrote only its own guest's buffer ({})",
            a.spec.name,
            b.spec.name,
            if disjoint { "yes" } else { "NO" },
            if different { "yes" } else { "NO" }
        ),
    );
}

/// Runs one rogue guest alone and checks that it was stopped, attributed, destroyed, and
/// that its device is back in quarantine doing no harm.
fn rogue_guest<V: Inspect>(
    hv: &mut Hypervisor<V>,
    svm: &mut Svm,
    edus: &[EduDevice],
    mut p: Plan,
    victim: Option<PhysAddr>,
    checks: &mut Checks,
    tallies: &mut Vec<Tally>,
) {
    let device = p.device;
    // A rogue DMA aims at another guest's buffer unless its module says otherwise.
    if let (Variant::RogueDma, Some(v)) = (p.variant, victim) {
        if !p.spec.cmdline.contains("other=") {
            let _ = write!(p.spec.cmdline, " other={:#x}", v.0);
        }
    }
    // Arm the device: its buffer gets a fresh pattern, so whatever it writes is recognisable.
    let edu = edus.iter().find(|d| d.sbdf == device);
    let armed = edu.and_then(|d| arm(hv, d));
    let outside = PhysAddr(p.spec.memory);
    let victim_before = victim.map(read_page);
    let outside_before = read_page(outside);
    let variant = p.variant;
    let Some(mut g) = start(hv, svm, p, checks) else {
        return;
    };
    let irq_before = crate::arch::idt::taken_snapshot();
    let report = run_all(hv, core::slice::from_mut(&mut g));
    let ending = g.ending.clone();
    let name = String::from(g.spec.name.as_str());
    let said = ending
        .as_ref()
        .map_or_else(|| String::from("still running"), |e| format!("{e}"));
    let _ = match variant {
        Variant::RogueDma => {
            let rids: Vec<_> = lock_rids(hv, device);
            let own: Vec<_> = report
                .faults
                .recorded
                .iter()
                .filter(|f| rids.contains(&f.requester))
                .collect();
            let victim_intact = victim
                .zip(victim_before)
                .is_none_or(|(v, before)| read_page(v) == before);
            let outside_intact = read_page(outside) == outside_before;
            let tried = ending == Some(Ending::Exited(GuestExit::RogueDmaTried.code()));
            checks.check(
                "rogue-dma-stopped",
                tried && armed.is_some() && victim_intact && outside_intact,
                format_args!(
                    "guest {name} {said}; its DMA into another guest's buffer {}, and into the frame at its IOVA {outside} past its memory {}",
                    if victim_intact { "changed nothing" } else { "LANDED" },
                    if outside_intact { "changed nothing" } else { "LANDED" },
                ),
            );
            if let Some(f) = own.first() {
                checks.check(
                    "rogue-dma-attributed",
                    true,
                    format_args!(
                        "the IOMMU recorded {} fault(s) from {device} (guest {name}), the first a {} at {:#x}: {}",
                        own.len(),
                        if f.write { "write" } else { "read" },
                        f.address,
                        f.reason
                    ),
                );
            } else if is_amd(hv) {
                say(format_args!("(QEMU's AMD-Vi writes no event log: the faults cannot be attributed here; design.md §6)"));
            } else {
                checks.check(
                    "rogue-dma-attributed",
                    false,
                    format_args!("no fault was recorded from {device} (guest {name})"),
                );
            }
            true
        }
        Variant::RogueMmio => checks.check(
            "rogue-mmio-stopped",
            matches!(ending, Some(Ending::NestedPageFault { gpa, .. }) if gpa >= g.spec.memory),
            format_args!("guest {name} {said}"),
        ),
        Variant::Crash => checks.check(
            "crash-contained",
            ending == Some(Ending::Shutdown),
            format_args!("guest {name} {said}; Lazaret carries on"),
        ),
        Variant::DmaStorm => {
            let (master_off, total) = hv.passthrough.as_ref().map_or((false, 0), |l| {
                let g = l.lock();
                g.state()
                    .device(device)
                    .map_or((false, 0), |d| (d.bus_master_disabled(), d.faults().total))
            });
            checks.check(
                "dma-storm-stopped",
                matches!(ending, Some(Ending::DmaFaults(_))) && master_off,
                format_args!(
                    "guest {name} {said}; {device} raised {total} fault(s) and Lazaret cleared its bus mastering {}",
                    if master_off { "(yes)" } else { "(NO)" }
                ),
            )
        }
        Variant::RogueIrq => rogue_irq::check(&g, &irq_before, is_amd(hv), checks),
        Variant::Good => false,
    };
    tallies.push(finish(hv, svm, g, &report.faults, checks));
    // A stormer stays stopped (bus mastering off) in quarantine: nothing to DMA with.
    if let Some(d) = edu.filter(|_| variant != Variant::DmaStorm) {
        back_in_quarantine(hv, d, checks);
    }
}

fn is_amd<V: Inspect>(hv: &Hypervisor<V>) -> bool {
    hv.passthrough
        .as_ref()
        .is_some_and(|l| l.lock().state().iommu_name().contains("AMD"))
}

fn lock_rids<V: Inspect>(hv: &Hypervisor<V>, sbdf: Sbdf) -> Vec<lazaret_types::Bdf> {
    hv.passthrough.as_ref().map_or_else(Vec::new, |l| {
        let g = l.lock();
        g.state()
            .device(sbdf)
            .map_or_else(Vec::new, |d| d.requester_ids().to_vec())
    })
}

/// Loads the device's buffer with a fresh pattern from its scratch page (it is still in
/// quarantine); returns the pattern.
fn arm<V: Inspect>(hv: &Hypervisor<V>, d: &EduDevice) -> Option<Vec<u8>> {
    let (_, lands_in) = groups::landing(&hv.pci, d.sbdf).unwrap_or((d.sbdf, d.sbdf));
    let page = hv
        .passthrough
        .as_ref()?
        .lock()
        .state()
        .scratch_page(lands_in)?;
    let pattern = fresh_pattern();
    DIRECT_MAP.write_bytes(page, &pattern);
    d.edu
        .dma_from_ram(0x7000, 0, DMA_LEN, edu::deadline())
        .ok()?;
    Some(pattern)
}

/// Back in quarantine the device's DMA lands in its own scratch page: the host puts a
/// pattern there, the device reads it and writes it back at another IOVA after the page is
/// wiped.
fn back_in_quarantine<V: Inspect>(hv: &Hypervisor<V>, d: &EduDevice, checks: &mut Checks) {
    let (_, lands_in) = groups::landing(&hv.pci, d.sbdf).unwrap_or((d.sbdf, d.sbdf));
    let Some((owner_ok, page)) = hv.passthrough.as_ref().map(|l| {
        let g = l.lock();
        let s = g.state();
        (
            s.owner_of(d.sbdf) == Some(s.dom_io()),
            s.scratch_page(lands_in),
        )
    }) else {
        return;
    };
    let Some(page) = page else {
        checks.check(
            "back-in-quarantine",
            false,
            format_args!("{} has no scratch page", d.sbdf),
        );
        return;
    };
    let pattern = fresh_pattern();
    DIRECT_MAP.write_bytes(page, &pattern);
    let read = d.edu.dma_from_ram(0x5000, 0, DMA_LEN, edu::deadline());
    DIRECT_MAP.zero(page, PAGE_SIZE);
    let write = d.edu.dma_to_ram(0x9000, 0, DMA_LEN, edu::deadline());
    let now = read_page(page);
    let landed = now[..DMA_LEN] == pattern[..DMA_LEN];
    checks.check(
        "back-in-quarantine",
        owner_ok && read.is_ok() && write.is_ok() && landed,
        format_args!(
            "{} is DomIO's again ({}) and its DMA {} its own scratch page",
            d.sbdf,
            if owner_ok { "yes" } else { "NO" },
            if landed {
                "lands in"
            } else {
                "does NOT land in"
            }
        ),
    );
}

/// Destroys a guest and says what that did.
fn finish<V: Inspect>(
    hv: &mut Hypervisor<V>,
    svm: &mut Svm,
    g: Guest<SvmVcpu>,
    faults: &FaultReport,
    checks: &mut Checks,
) -> Tally {
    let exits = g.exit_counts();
    let interrupts = g.irq.vlapic.counts().delivered;
    let name = String::from(g.spec.name.as_str());
    let device = g.devices.first().copied().unwrap_or_default();
    let ending = g
        .ending
        .as_ref()
        .map_or_else(|| String::from("still running"), |e| format!("{e}"));
    let short = ending.split(':').next().unwrap_or("").into();
    let d = lifecycle::destroy(hv, svm, g);
    checks.check(
        "guest-destroyed",
        d.clean && d.devices > 0,
        format_args!(
            "guest {name} destroyed: {} device(s) back in quarantine, {} KiB of its memory scrubbed before it was freed",
            d.devices,
            d.scrubbed_bytes >> 10
        ),
    );
    Tally {
        name,
        device,
        ending: short,
        exits,
        faults: faults.faults,
        interrupts,
    }
}
