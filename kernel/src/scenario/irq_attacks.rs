//! `scenario=irq-attacks` (IOMMU device with `intremap=on`; edu devices with
//! `dma_mask=0xffffffff`, so their DMA can reach the interrupt window): what a device can make
//! a host CPU take. Every host vector is watched (counted at the IDT, acknowledged at the local
//! APIC), so "blocked" below means: no interrupt on any vector arrived.
//!
//! 1. Assigned: Lazaret programs the device's entry 0 for a host vector it owns; only that
//!    vector arrives, and another (quarantined) device sending the same message gets nothing.
//! 2. Quarantined (deassigned): its stale message and remappable handles / offsets it was never
//!    given are blocked; the faults the IOMMU logs are attributed to it.
//! 3. In both states, apart (`*-compat`, `*-window`): a compatibility-format MSI at a host
//!    vector, and DMA writes into 0xFEE0_0000 / 0xFEE0_0010. QEMU gets these wrong (its
//!    intel-iommu passes compatibility format with CFIS clear; its device DMA carries no
//!    requester ID, which amd-iommu takes for the IOAPIC's): the sentence then says so.
//! 4. Storm: it raises its interrupt in a loop; none arrives, faults are rate-limited and past
//!    the threshold its Bus Master Enable is cleared (where the IOMMU logs them at all).
use lazaret_edu::{DmaMask, Edu};
use lazaret_pci::{find_capability, read_command, ConfigSpace};
use lazaret_types::{PhysMem, Sbdf};

use super::checks::{Checks, YesNo};
use super::edu::{self, EduDevice};
use crate::arch::idt::{take_pending_interrupts, taken_between, taken_snapshot, TakenCounts};
use crate::arch::lapic::SPURIOUS;
use crate::arch::mmio::MmioRegion;
use crate::arch::percpu::this_apic_id;
use crate::arch::tsc;
use crate::hypervisor::Hypervisor;
use crate::mm::direct_map::DIRECT_MAP;
use crate::passthrough::iommu::{FaultKind, Inspect, InterruptTarget, MsiAddress};
use crate::passthrough::{self, drain_faults, faults};

/// The host vector Lazaret gives the assigned device.
const HOST_VECTOR: u8 = 0x41;
/// The host vector the second owner gets after the device is reassigned.
const REASSIGNED_VECTOR: u8 = 0x42;
/// The host vector an attacker aims a compatibility-format MSI (or its DMA) at.
const ATTACK_VECTOR: u8 = 0x30;
/// A DMA target in the interrupt window naming VT-d handle 0 (remappable format; another
/// device's entry) — on AMD-Vi an address with extra bits, refused or remapped by offset.
const FORGED_WINDOW: u64 = 0xFEE0_0010;
/// Raises in the storm: enough to cross the threshold three times over.
const STORM: u32 = 3 * faults::THRESHOLD;
const GUEST_PAGES: usize = 16;
/// Guest page whose first dword the edu copies into its buffer: the "MSI data" its DMA into
/// the interrupt window then carries.
const DATA_GPA: u64 = 0x2000;
/// edu's interrupt cause bit for a raise from software (0x60).
const CAUSE: u32 = 1;
const MSI_CAP: u8 = 0x05;

pub fn run<V: Inspect>(hv: &mut Hypervisor<V>, checks: &mut Checks) {
    if let Err(e) = crate::arch::lapic::enable(&mut hv.frames) {
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
    // Another device sending its message: never delivered, on any IOMMU.
    let amd = lock.lock().state().iommu_name() == "AMD-Vi";
    let forged_other = other.and_then(|o| {
        let cap = find_capability(cfg, o.sbdf, MSI_CAP).map(u16::from)?;
        program_msi(cfg, o.sbdf, cap, message);
        Some((o.sbdf, raise_and_count(o, SPURIOUS).1))
    });
    checks.check(
        "irq-assigned-forged",
        forged_other.is_none_or(|(_, n)| n == 0),
        format_args!(
            "the assigned {}'s message (entry 0 → {HOST_VECTOR:#x}): {}",
            dev.sbdf,
            match forged_other {
                Some((o, n)) =>
                    alloc::format!("its message sent by quarantined {o}: {n} delivered"),
                None => "no second edu device for the other-source check".into(),
            }
        ),
    );
    let compat = compatibility_attack(dev, cfg, msi);
    program_msi(cfg, dev.sbdf, msi, message);
    compat_check(
        checks,
        "irq-assigned-compat",
        dev.sbdf,
        "assigned",
        compat,
        remapping,
    );
    window_check(
        checks,
        "irq-assigned-window",
        dev,
        "assigned",
        amd,
        loaded.is_ok(),
    );

    // 2. Reassigned to a second guest: the first guest's entry is gone with it.
    let owner =
        reassigned(lock, &mut hv.frames, checks, dev, (cfg, msi), dom, message).unwrap_or(dom);

    // 3. Back in quarantine: nothing it sends arrives.
    let mut g = lock.lock();
    let back = passthrough::deassign(&mut g, owner, dev.sbdf);
    let _ = drain_faults(&mut g, edu::now_ms(), &mut |_| false);
    drop(g);
    let stale = raise_and_count(dev, SPURIOUS).1;
    let mut forged = 0;
    let mut sent = 0;
    for attack in forged_messages(amd) {
        sent += 1;
        program_msi(cfg, dev.sbdf, msi, attack);
        forged += raise_and_count(dev, SPURIOUS).1;
    }
    let interrupt_faults = {
        let mut g = lock.lock();
        let report = drain_faults(&mut g, edu::now_ms(), &mut |_| false);
        report
            .recorded
            .iter()
            .filter(|f| matches!(f.kind, FaultKind::Interrupt { .. }))
            .filter(|f| {
                g.state()
                    .device_by_requester(f.segment, f.requester)
                    .is_some_and(|d| d.sbdf() == dev.sbdf)
            })
            .count()
    };
    checks.check(
        "irq-quarantined-blocked",
        back.is_ok() && stale == 0 && forged == 0,
        format_args!(
            "{} back in quarantine: its old message: {stale} delivered; {sent} forged remappable messages (handles and offsets never given): {forged} delivered; {interrupt_faults} interrupt fault(s) attributed to it{}",
            dev.sbdf,
            if interrupt_faults == 0 {
                " (this QEMU logs none: QEMU 7.2 records no VT-d interrupt faults, QEMU's AMD event log is unusable)"
            } else {
                ""
            }
        ),
    );
    let compat = compatibility_attack(dev, cfg, msi);
    compat_check(
        checks,
        "irq-quarantined-compat",
        dev.sbdf,
        "quarantined",
        compat,
        remapping,
    );
    window_check(
        checks,
        "irq-quarantined-window",
        dev,
        "quarantined",
        amd,
        true,
    );

    // 4. Storm, with its old (now blocked) message.
    program_msi(cfg, dev.sbdf, msi, message);
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
            "{} raised {STORM} interrupts in {ms} ms (the host kept running): {delivered} delivered; {faults_seen} fault(s) drained, {suppressed} not logged (rate limit); bus mastering {}",
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
    if owner != dom {
        let _ = passthrough::destroy_domain(&mut g, &mut hv.frames, owner);
    }
}

/// The device moves from guest `first` (its entry 0 → [`HOST_VECTOR`], `message` in its
/// capability) to a new guest. Until the new owner programs its own entry nothing the device
/// raises arrives — the first guest's vector least of all; then only the new owner's vector.
/// Returns the new owner.
fn reassigned<V: Inspect>(
    lock: &passthrough::DeviceLock<V>,
    frames: &mut crate::mm::frames::Frames,
    checks: &mut Checks,
    dev: &EduDevice,
    (cfg, msi): (&dyn ConfigSpace, u16),
    first: crate::domain::DomainId,
    message: MsiAddress,
) -> Option<crate::domain::DomainId> {
    let mut g = lock.lock();
    let second = passthrough::create_domain(&mut g, frames, "irq-guest-2", GUEST_PAGES);
    let moved = second
        .as_ref()
        .map_err(|e| alloc::format!("{e}"))
        .and_then(|&to| {
            passthrough::reassign(&mut g, frames, first, to, dev.sbdf)
                .map_err(|e| alloc::format!("{e}"))
        });
    drop(g);
    let (Ok(to), Ok(_)) = (second, moved.as_ref()) else {
        checks.check(
            "irq-reassigned-blocked",
            false,
            format_args!(
                "{} not reassigned: {}",
                dev.sbdf,
                moved.err().unwrap_or_default()
            ),
        );
        return None;
    };
    // The old message, still in the device: the first guest's entry must be blocked.
    program_msi(cfg, dev.sbdf, msi, message);
    let before = taken_snapshot();
    raise_and_count(dev, SPURIOUS);
    let (stale, stale_any) = delta(before, HOST_VECTOR);
    let target = InterruptTarget {
        vector: REASSIGNED_VECTOR,
        apic_id: this_apic_id(),
    };
    let mut g = lock.lock();
    let programmed = passthrough::program_interrupt(&mut g, to, dev.sbdf, 0, target);
    let refused_old = passthrough::program_interrupt(&mut g, first, dev.sbdf, 0, target).is_err();
    drop(g);
    let (now, others) = match programmed {
        Ok(m) => {
            program_msi(cfg, dev.sbdf, msi, m);
            raise_and_count(dev, REASSIGNED_VECTOR)
        }
        Err(_) => (0, 0),
    };
    checks.check(
        "irq-reassigned-blocked",
        stale + stale_any == 0 && refused_old && now == 1 && others == 0,
        format_args!(
            "{} reassigned from the first guest to a second: its old message (→ {HOST_VECTOR:#x}) delivered {stale} on the first guest's vector and {stale_any} on any; the first guest may{} program it; the second guest's entry 0 → {REASSIGNED_VECTOR:#x}: {now} on it, {others} on any other vector",
            dev.sbdf,
            if refused_old { " no longer" } else { " STILL" }
        ),
    );
    Some(to)
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

/// Remappable messages a device was never given: VT-d handles 0–3 (§5.1.5.2: address 19:5
/// handle, bit 4 format; other devices' entries), and on AMD-Vi offsets beyond its one entry
/// (§2.2.5: data 10:0 at 0xFEE0_0000 — on VT-d that is compatibility format, tested apart).
/// Every data value is at least 0x20, so a unit that wrongly passed one on would raise a
/// watched vector, not an exception.
fn forged_messages(amd: bool) -> impl Iterator<Item = MsiAddress> {
    let handle = |h: u64| MsiAddress {
        address: 0xFEE0_0000 | (h << 5) | (1 << 4),
        data: 0x20,
    };
    let offset = |o: u32| MsiAddress {
        address: 0xFEE0_0000,
        data: o,
    };
    let offsets = [offset(0x21), offset(0x22), offset(0x23)];
    [handle(0), handle(1), handle(2), handle(3)]
        .into_iter()
        .chain(offsets.into_iter().filter(move |_| amd))
}

/// The compatibility-format attack: its MSI capability aimed straight at a host vector, raised.
/// Returns what arrived on any vector.
fn compatibility_attack(d: &EduDevice, cfg: &dyn ConfigSpace, cap: u16) -> u64 {
    program_msi(cfg, d.sbdf, cap, compatibility(ATTACK_VECTOR));
    raise_and_count(d, SPURIOUS).1
}

/// The unit reports remapping on with compatibility format blocked (VT-d GSTS.IRES set, CFIS
/// clear), so anything that arrives is the IOMMU's failure — QEMU's intel-iommu up to 10.0.2
/// passes such interrupts on whatever CFIS says.
fn compat_check(
    checks: &mut Checks,
    name: &str,
    sbdf: Sbdf,
    state: &str,
    delivered: u64,
    remapping: bool,
) {
    checks.check(
        name,
        delivered == 0,
        format_args!(
            "{sbdf} {state}: compatibility-format MSI at host vector {ATTACK_VECTOR:#x}: {delivered} delivered{}",
            if delivered > 0 && remapping {
                " although the IOMMU reports compatibility format blocked (QEMU's intel-iommu passes it on: a QEMU defect; hardware blocks it, fault 0x25)"
            } else {
                ""
            }
        ),
    );
}

/// DMA writes of [`ATTACK_VECTOR`] into the interrupt window: at 0xFEE0_0000 (compatibility
/// format on VT-d, offset 0x30 on AMD-Vi) and at [`FORGED_WINDOW`] (a handle not its own).
/// QEMU issues device DMA without a requester ID: its intel-iommu then checks source ID
/// 0xffff (remappable blocked, compatibility passed as above), its amd-iommu takes the write
/// as the IOAPIC's (DeviceID 0xa0), whose interrupts pass by design.
fn window_check(
    checks: &mut Checks,
    name: &str,
    d: &EduDevice,
    state: &str,
    amd: bool,
    loaded: bool,
) {
    let (done_compat, compat) = dma_into_window(d, 0xFEE0_0000);
    let (done_forged, forged) = dma_into_window(d, FORGED_WINDOW);
    let note = match (compat + forged > 0, amd) {
        (false, _) => "",
        (true, true) => " (QEMU's amd-iommu takes a DMA write into the window as the IOAPIC's, DeviceID 0xa0, whose interrupts pass: a QEMU defect; hardware tags it with the device's requester ID)",
        (true, false) => " (QEMU's intel-iommu passes the compatibility-format write on: a QEMU defect; hardware blocks it, fault 0x25)",
    };
    checks.check(
        name,
        loaded && compat == 0 && forged == 0,
        format_args!(
            "{} {state}: DMA write of {ATTACK_VECTOR:#x} into 0xfee00000 ({}): {compat} delivered; into {FORGED_WINDOW:#x} ({}): {forged} delivered{note}",
            d.sbdf,
            if done_compat { "the DMA completed" } else { "the DMA failed" },
            if done_forged { "the DMA completed" } else { "the DMA failed" },
        ),
    );
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
    let before = taken_snapshot();
    d.edu.raise_interrupt(CAUSE);
    take_pending_interrupts();
    d.edu.ack_interrupt(CAUSE);
    take_pending_interrupts();
    delta(before, vector)
}

/// edu copies its buffer's first dword (the attack data, [`ATTACK_VECTOR`]) to IOVA `target`
/// in the interrupt window; returns whether the DMA completed and how many interrupts arrived
/// on any vector.
fn dma_into_window(d: &EduDevice, target: u64) -> (bool, u64) {
    let before = taken_snapshot();
    let done = d.edu.dma_to_ram(target, 0, 4, edu::deadline()).is_ok();
    take_pending_interrupts();
    (done, delta(before, SPURIOUS).1)
}

/// Interrupts on `vector` since `before`, and on every other device vector.
fn delta(before: TakenCounts, vector: u8) -> (u64, u64) {
    let now = taken_snapshot();
    taken_between(&before, &now).fold((0, 0), |(on, others), (v, n)| {
        if v == vector {
            (on + n, others)
        } else {
            (on, others + n)
        }
    })
}
