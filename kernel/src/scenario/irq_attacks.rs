//! `scenario=irq-attacks` (IOMMU device with `intremap=on`; edu devices with
//! `dma_mask=0xffffffff`, so their DMA can reach the interrupt window): what a device can make
//! a host CPU take. Every host vector is watched (counted at the IDT, acknowledged at the local
//! APIC), so "blocked" below means: no interrupt on any vector arrived.
//!
//! 1. Assigned: Lazaret programs the device's entry 0 for a host vector it owns; only that
//!    vector arrives. A compatibility-format MSI from it, its DMA write into 0xFEE0_0000, and
//!    another (quarantined) device sending its message are all blocked.
//! 2. Quarantined (deassigned): its stale message, a compatibility-format MSI at a host
//!    vector, remappable handles / offsets it was never given, and a DMA write into the
//!    window are blocked; the faults the IOMMU logs are attributed to it.
//! 3. Storm: it raises its interrupt in a loop; none arrives, faults are rate-limited and past
//!    the threshold its Bus Master Enable is cleared (where the IOMMU logs them at all).
use lazaret_edu::{DmaMask, Edu};
use lazaret_pci::{find_capability, read_command, ConfigSpace};
use lazaret_types::{Mmio, PhysAddr, PhysMem, Sbdf};

use super::checks::{Checks, YesNo};
use super::edu::{self, EduDevice};
use crate::arch::idt::{interrupts_taken, take_pending_interrupts, watch_interrupts};
use crate::arch::mmio::MmioRegion;
use crate::arch::percpu::this_apic_id;
use crate::arch::tsc;
use crate::hypervisor::Hypervisor;
use crate::mm::direct_map::DIRECT_MAP;
use crate::passthrough::iommu::{FaultKind, Inspect, InterruptTarget, MsiAddress};
use crate::passthrough::{self, drain_faults, faults};

/// The host vector Lazaret gives the assigned device.
const HOST_VECTOR: u8 = 0x41;
/// The host vector an attacker aims a compatibility-format MSI (or its DMA) at.
const ATTACK_VECTOR: u8 = 0x30;
/// The spurious-interrupt vector programmed in the local APIC (not counted as delivered).
const SPURIOUS: u8 = 0xff;
/// Raises in the storm: enough to cross the threshold three times over.
const STORM: u32 = 3 * faults::THRESHOLD;
const GUEST_PAGES: usize = 16;
/// Guest page whose first dword the edu copies into its buffer: the "MSI data" its DMA into
/// the interrupt window then carries.
const DATA_GPA: u64 = 0x2000;
/// edu's interrupt cause bit for a raise from software (0x60).
const CAUSE: u32 = 1;
const MSI_CAP: u8 = 0x05;
/// IA32_APIC_BASE (Intel SDM Vol. 3A §11.4.4).
const IA32_APIC_BASE: u32 = 0x1b;

pub fn run<V: Inspect>(hv: &mut Hypervisor<V>, checks: &mut Checks) {
    if let Err(e) = enable_local_apic(hv) {
        checks.check("irq-lapic", false, format_args!("{e}"));
        return;
    }
    let devices: alloc::vec::Vec<EduDevice> = edu::find(hv)
        .into_iter()
        .filter_map(|d| widen_dma_mask(d.sbdf, d.edu))
        .collect();
    let (Some(dev), Some(lock)) = (devices.first(), hv.passthrough.as_ref()) else {
        checks.check(
            "irq-setup",
            false,
            format_args!("needs an edu device and an IOMMU"),
        );
        return;
    };
    let Some(cfg) = hv.config.segment(dev.sbdf.segment) else {
        return;
    };
    let Some(msi) = find_capability(cfg, dev.sbdf, MSI_CAP).map(u16::from) else {
        checks.check(
            "irq-setup",
            false,
            format_args!("{} has no MSI capability", dev.sbdf),
        );
        return;
    };
    let other = devices.get(1);
    let remapping = {
        let g = lock.lock();
        let v = g.state().vendor();
        v.unit_of(dev.sbdf)
            .is_some_and(|u| v.interrupt_remapping(u))
    };
    checks.check(
        "irq-remapping",
        remapping,
        format_args!(
            "{}'s IOMMU remaps interrupts: {}",
            dev.sbdf,
            YesNo(remapping)
        ),
    );

    // 1. Assigned: only the programmed vector arrives.
    let mut g = lock.lock();
    let dom = match passthrough::create_domain(&mut g, &mut hv.frames, "irq-guest", GUEST_PAGES) {
        Ok(d) => d,
        Err(e) => {
            checks.check("irq-guest", false, format_args!("no guest: {e}"));
            return;
        }
    };
    let data_page = g
        .state()
        .domains()
        .get(dom)
        .and_then(|d| d.memory.host_address(DATA_GPA));
    if let Some(pa) = data_page {
        DIRECT_MAP.write_bytes(pa, &u32::from(ATTACK_VECTOR).to_le_bytes());
    }
    let assigned = passthrough::assign(&mut g, &mut hv.frames, dom, dev.sbdf);
    let target = InterruptTarget {
        vector: HOST_VECTOR,
        apic_id: this_apic_id(),
    };
    let programmed = assigned
        .as_ref()
        .map_err(|e| alloc::format!("{e}"))
        .and_then(|_| {
            passthrough::program_interrupt(&mut g, dom, dev.sbdf, 0, target)
                .map_err(|e| alloc::format!("{e}"))
        });
    drop(g);
    let Ok(message) = programmed else {
        checks.check(
            "irq-assigned",
            false,
            format_args!(
                "{} not assigned and programmed: {:?}",
                dev.sbdf,
                programmed.err()
            ),
        );
        return;
    };
    // The device's buffer gets the attack data while it can still read guest memory.
    let loaded = dev.edu.dma_from_ram(DATA_GPA, 0, 4, edu::deadline());
    program_msi(cfg, dev.sbdf, msi, message);
    let (delivered, others) = raise_and_count(dev, HOST_VECTOR);
    checks.check(
        "irq-assigned-delivered",
        delivered == 1 && others == 0,
        format_args!(
            "{} assigned, entry 0 → host vector {HOST_VECTOR:#x}: {delivered} interrupt(s) on it, {others} on any other vector",
            dev.sbdf
        ),
    );
    program_msi(cfg, dev.sbdf, msi, compatibility(ATTACK_VECTOR));
    let (_, forged) = raise_and_count(dev, HOST_VECTOR);
    program_msi(cfg, dev.sbdf, msi, message);
    let window = dma_into_window(dev);
    let forged_other = other.map(|o| {
        let cfg_ok = find_capability(cfg, o.sbdf, MSI_CAP).map(u16::from);
        cfg_ok.map_or(u64::MAX, |cap| {
            program_msi(cfg, o.sbdf, cap, message);
            raise_and_count(o, SPURIOUS).1
        })
    });
    checks.check(
        "irq-assigned-forged",
        forged == 0 && window.1 == 0 && forged_other.is_none_or(|n| n == 0) && loaded.is_ok(),
        format_args!(
            "from the assigned {}: compatibility-format MSI at vector {ATTACK_VECTOR:#x}: {forged} delivered; DMA write of {ATTACK_VECTOR:#x} into 0xfee00000 ({}): {} delivered; {}",
            dev.sbdf,
            if window.0 { "the DMA completed" } else { "the DMA failed" },
            window.1,
            match forged_other {
                Some(n) => alloc::format!("its message sent by quarantined {}: {n} delivered", other.map_or(dev.sbdf, |o| o.sbdf)),
                None => "no second edu device for the other-source check".into(),
            }
        ),
    );

    // 2. Back in quarantine: nothing it sends arrives.
    let mut g = lock.lock();
    let back = passthrough::deassign(&mut g, dom, dev.sbdf);
    let _ = drain_faults(&mut g, edu::now_ms(), &mut |_| false);
    drop(g);
    let (stale, _) = raise_and_count(dev, SPURIOUS);
    let mut forged = 0;
    for attack in attack_messages() {
        program_msi(cfg, dev.sbdf, msi, attack);
        forged += raise_and_count(dev, SPURIOUS).1;
    }
    let window = dma_into_window(dev);
    let (interrupt_faults, dma_faults) = {
        let mut g = lock.lock();
        let report = drain_faults(&mut g, edu::now_ms(), &mut |_| false);
        let mine = |f: &&passthrough::iommu::DmaFault| {
            g.state()
                .device_by_requester(f.segment, f.requester)
                .is_some_and(|d| d.sbdf() == dev.sbdf)
        };
        let ir = report
            .recorded
            .iter()
            .filter(mine)
            .filter(|f| matches!(f.kind, FaultKind::Interrupt { .. }))
            .count();
        (ir, report.recorded.len() - ir)
    };
    checks.check(
        "irq-quarantined-blocked",
        back.is_ok() && stale == 0 && forged == 0 && window.1 == 0,
        format_args!(
            "{} back in quarantine: its old message: {stale} delivered; {} forged messages (compatibility format at {ATTACK_VECTOR:#x}, handles and offsets never given): {forged} delivered; DMA write into 0xfee00000: {} delivered; {interrupt_faults} interrupt fault(s) attributed to it{}",
            dev.sbdf,
            attack_messages().len(),
            window.1,
            if interrupt_faults == 0 {
                " (this QEMU logs none: QEMU 7.2 records no VT-d interrupt faults; QEMU's AMD event log is unusable)"
            } else {
                ""
            }
        ),
    );
    let _ = dma_faults;

    // 3. Storm.
    program_msi(cfg, dev.sbdf, msi, compatibility(ATTACK_VECTOR));
    let start = tsc::micros_since_entry();
    let (mut delivered, mut faults_seen, mut suppressed) = (0, 0, 0);
    let mut disabled = false;
    for _ in 0..STORM {
        delivered += raise_and_count(dev, SPURIOUS).1;
        let mut g = lock.lock();
        let report = drain_faults(&mut g, edu::now_ms(), &mut |sbdf| {
            lazaret_pci::set_bus_master(cfg, sbdf, false).is_ok()
        });
        faults_seen += report.faults;
        suppressed += report.suppressed;
        disabled |= report.disabled.contains(&dev.sbdf);
    }
    let ms = (tsc::micros_since_entry() - start) / 1000;
    let bme_off = read_command(cfg, dev.sbdf).is_ok_and(|c| c & 0x4 == 0);
    let stopped = faults_seen == 0 || (disabled && bme_off);
    checks.check(
        "irq-storm",
        delivered == 0 && stopped,
        format_args!(
            "{} raised {STORM} interrupts in {ms} ms: {delivered} delivered; {faults_seen} fault(s) drained, {suppressed} not logged (rate limit); bus mastering {}",
            dev.sbdf,
            if disabled && bme_off {
                "cleared past the threshold"
            } else if faults_seen == 0 {
                "left on: this QEMU logs no interrupt faults, so the threshold cannot be reached"
            } else {
                "NOT cleared"
            }
        ),
    );
    let mut g = lock.lock();
    let _ = passthrough::destroy_domain(&mut g, &mut hv.frames, dom);
}

/// Maps the local APIC, software-enables it (SVR bit 8, spurious vector 0xff) with TPR 0, and
/// has the IDT count every vector from now on.
fn enable_local_apic<V: Inspect>(hv: &mut Hypervisor<V>) -> Result<(), alloc::string::String> {
    // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU; reading it has no side effect.
    let base = unsafe { x86::msr::rdmsr(IA32_APIC_BASE) } & 0x000f_ffff_ffff_f000;
    let lapic = MmioRegion::map(PhysAddr(base), 0x1000, &mut hv.frames)
        .map_err(|e| alloc::format!("cannot map the local APIC at {base:#x}: {e}"))?;
    lapic.write32(0x80, 0);
    let svr = lapic.read32(0xf0);
    lapic.write32(0xf0, svr | 0x100 | u32::from(SPURIOUS));
    watch_interrupts(lapic);
    take_pending_interrupts();
    Ok(())
}

/// The edu's driver again, allowed 32-bit IOVAs (the QEMU device has `dma_mask=0xffffffff`).
fn widen_dma_mask(sbdf: Sbdf, edu: Edu<MmioRegion>) -> Option<EduDevice> {
    let mask = DmaMask::from_bits(32).ok()?;
    match Edu::probe_with_mask(edu.into_regs(), mask) {
        Ok(edu) => Some(EduDevice { sbdf, edu }),
        Err(e) => {
            log::warn!("edu {sbdf}: {e}");
            None
        }
    }
}

/// A compatibility-format MSI (address 0xFEE0_0000 | destination << 12, bit 4 = 0) at
/// `vector`, fixed delivery: what a device without remapping would use to hit the host.
fn compatibility(vector: u8) -> MsiAddress {
    MsiAddress {
        address: 0xFEE0_0000 | (u64::from(this_apic_id() & 0xff) << 12),
        data: u32::from(vector),
    }
}

/// Messages a quarantined device was never given: compatibility format at a host vector,
/// VT-d remappable handles 0–3 (§5.1.5.2: address 19:5 handle, bit 4 format), AMD offsets 0–3
/// at 0xFEE0_0000 (§2.2.5).
fn attack_messages() -> [MsiAddress; 9] {
    let handle = |h: u64| MsiAddress {
        address: 0xFEE0_0000 | (h << 5) | (1 << 4),
        data: 0,
    };
    let offset = |o: u32| MsiAddress {
        address: 0xFEE0_0000,
        data: o,
    };
    [
        compatibility(ATTACK_VECTOR),
        handle(0),
        handle(1),
        handle(2),
        handle(3),
        offset(0),
        offset(1),
        offset(2),
        offset(3),
    ]
}

/// Writes `m` into the MSI capability at `cap` and enables it (one message); PCI Local Bus
/// Spec 3.0 §6.8.1: control at +2 (bit 0 enable, bit 7 64-bit), address at +4 (+8 upper),
/// data at +8 (32-bit) or +0xC (64-bit).
fn program_msi(cfg: &dyn ConfigSpace, sbdf: Sbdf, cap: u16, m: MsiAddress) {
    let header = cfg.read32(sbdf, cap);
    let control = (header >> 16) as u16;
    let wide = control & (1 << 7) != 0;
    let off = (control & !1 & !(0b111 << 4)) as u32;
    cfg.write32(sbdf, cap, (header & 0xffff) | (off << 16));
    cfg.write32(sbdf, cap + 4, m.address as u32);
    let data_at = if wide {
        cfg.write32(sbdf, cap + 8, (m.address >> 32) as u32);
        cap + 0xc
    } else {
        cap + 8
    };
    let old = cfg.read32(sbdf, data_at);
    cfg.write32(sbdf, data_at, (old & 0xffff_0000) | (m.data & 0xffff));
    cfg.write32(sbdf, cap, (header & 0xffff) | ((off | 1) << 16));
}

/// Raises edu's interrupt once, opens an interrupt window, acknowledges it at the device;
/// returns (interrupts on `vector`, interrupts on every other vector but the spurious one).
fn raise_and_count(d: &EduDevice, vector: u8) -> (u64, u64) {
    let before = snapshot();
    d.edu.raise_interrupt(CAUSE);
    take_pending_interrupts();
    d.edu.ack_interrupt(CAUSE);
    take_pending_interrupts();
    delta(before, vector)
}

/// edu copies its buffer's first dword (the attack data) to IOVA 0xFEE0_0000; returns
/// whether the DMA completed and how many interrupts arrived on any vector.
fn dma_into_window(d: &EduDevice) -> (bool, u64) {
    let before = snapshot();
    let done = d.edu.dma_to_ram(0xFEE0_0000, 0, 4, edu::deadline()).is_ok();
    take_pending_interrupts();
    (done, delta(before, SPURIOUS).1)
}

type Counts = [u64; 256];

fn snapshot() -> Counts {
    let mut c = [0; 256];
    for (v, n) in c.iter_mut().enumerate() {
        *n = interrupts_taken(v as u8);
    }
    c
}

/// (new interrupts on `vector`, new interrupts on the other device vectors but spurious).
fn delta(before: Counts, vector: u8) -> (u64, u64) {
    let now = snapshot();
    let new = |v: usize| now[v] - before[v];
    let others = (32..256)
        .filter(|&v| v != usize::from(vector) && v != usize::from(SPURIOUS))
        .map(new)
        .sum();
    (new(usize::from(vector)), others)
}
