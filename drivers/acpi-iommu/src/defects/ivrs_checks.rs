//! IVRS defects (AMD I/O Virtualization Technology (IOMMU) Specification 48882 rev 3.x, §5.2).
//!
//! Firmware describes each IOMMU in up to three IVHD blocks (10h, 11h, 40h) and Lazaret reads
//! only one of them ([`Ivrs::selected_ivhds`]); a defect in a block it does not read is
//! reported with [`Action::Ignore`].
use super::alloc::format;
use super::alloc::string::String;
use super::alloc::vec::Vec;

use lazaret_types::Bdf;

use super::ranges::{range_defects, Shape, IVMD_CODES};
use super::{join, sorted, Action, Defect, IvmdDevices};
use crate::ivrs::{
    EntryDetail, FactError, Ivdb, Ivhd, IvhdFlags, IvhdType, Ivmd, IvmdType, SpecialVariety,
};
use crate::Ivrs;

/// The IOMMU Base Address register keeps bits 51:14 (capability offset 04h, "IOMMU Base
/// Address Low Register"), so the register block is 16 KiB aligned.
const IOMMU_BASE_ALIGN: u64 = 16 * 1024;

/// Every defect of `ivrs`, in table order (fatal ones last).
pub fn ivrs_defects(ivrs: &Ivrs<'_>) -> Vec<Defect> {
    let selected: Vec<usize> = ivrs.selected_ivhds().iter().map(|h| h.offset).collect();
    let mut out = unknown_parts(ivrs);
    out.extend(unit_defects(ivrs, &selected));
    for h in ivrs.ivhds() {
        let read = selected.contains(&h.offset);
        if let Err(e) = h.device_facts() {
            out.push(fact_defect(h, e, read));
        }
        out.extend(duplicate_type(ivrs, h));
        out.extend(reserved_flags(h));
    }
    out.extend(special_handle_defects(ivrs, &selected));
    for m in ivrs.ivmds() {
        out.extend(ivmd_defects(m));
    }
    sorted(out)
}

/// Blocks (e.g. 51h on recent laptops) and device entries no spec revision documents; the
/// parser skipped both by their length.
fn unknown_parts(ivrs: &Ivrs<'_>) -> Vec<Defect> {
    let mut out = Vec::new();
    for block in &ivrs.blocks {
        match block {
            Ivdb::Unknown {
                kind,
                offset,
                length,
            } => out.push(Defect::new(
                "ivrs-unknown-block",
                *offset,
                format!("IVDB block type {kind:02x}h ({length} bytes) is undocumented; skipped by its length"),
                Action::Ignore,
            )),
            Ivdb::Hardware(h) => {
                for e in &h.entries {
                    if let EntryDetail::Unknown { length } = e.detail {
                        out.push(Defect::new(
                            "ivhd-unknown-entry",
                            e.offset,
                            format!(
                                "IVHD {:02x}h device entry type {:02x}h ({length} bytes, device {}) \
                                 is undocumented; skipped, the device gets default settings",
                                h.kind.raw(),
                                e.kind,
                                e.device_id
                            ),
                            Action::Ignore,
                        ));
                    }
                }
            }
            Ivdb::Memory(_) => {}
        }
    }
    out
}

/// IVHDs whose register block cannot be where they say (base 0, misaligned) or that repeat
/// another IOMMU's base; with no usable IVHD left Lazaret has no IOMMU and cannot run.
fn unit_defects(ivrs: &Ivrs<'_>, selected: &[usize]) -> Vec<Defect> {
    let mut out = Vec::new();
    let mut usable: Vec<u64> = Vec::new();
    for h in ivrs.ivhds() {
        let read = selected.contains(&h.offset);
        let base = h.base_address.as_u64();
        let problem = if base == 0 {
            Some(("ivhd-base-zero", String::from("IOMMU base address is 0")))
        } else if base % IOMMU_BASE_ALIGN != 0 {
            Some((
                "ivhd-base-unaligned",
                format!("IOMMU base address {base:#x} is not 16 KiB aligned"),
            ))
        } else if read && usable.contains(&base) {
            Some((
                "ivhd-duplicate-base",
                format!("IOMMU base address {base:#x} repeats another IOMMU's"),
            ))
        } else {
            None
        };
        match problem {
            Some((code, what)) => out.push(Defect::new(
                code,
                h.offset,
                format!("{}: {what}{}", describe(h), superseded(read)),
                if read {
                    Action::IgnoreUnit
                } else {
                    Action::Ignore
                },
            )),
            None if read => usable.push(base),
            None => {}
        }
    }
    if selected.is_empty() {
        out.push(Defect::new(
            "ivrs-no-ivhd",
            0,
            String::from("the IVRS describes no IOMMU (no IVHD block)"),
            Action::CannotRun,
        ));
    } else if usable.is_empty() {
        out.push(Defect::new(
            "ivrs-no-usable-ivhd",
            0,
            format!(
                "none of the {} IOMMUs described can be used",
                selected.len()
            ),
            Action::CannotRun,
        ));
    }
    out
}

/// Entries that do not pair up into ranges (§5.2.2.3: a range start is closed by the next
/// range end). Without them Lazaret cannot tell which requester IDs the devices' DMA carries,
/// so it quarantines them but will not assign any.
fn fact_defect(h: &Ivhd<'_>, error: FactError, read: bool) -> Defect {
    let (code, offset) = match error {
        FactError::RangeWithoutEnd { offset } => ("ivhd-range-without-end", offset),
        FactError::EndWithoutStart { offset } => ("ivhd-range-end-without-start", offset),
        FactError::InvertedRange { offset, .. } => ("ivhd-range-inverted", offset),
    };
    let action = if read {
        Action::RefuseAssignment
    } else {
        Action::Ignore
    };
    let consequence = if read {
        "; requester IDs and aliases of this IOMMU's devices are unknown"
    } else {
        ""
    };
    Defect::new(
        code,
        offset,
        format!("{}: {error}{consequence}{}", describe(h), superseded(read)),
        action,
    )
}

/// Two IVHDs of the same type for one IOMMU: Lazaret reads the first.
fn duplicate_type(ivrs: &Ivrs<'_>, h: &Ivhd<'_>) -> Option<Defect> {
    let earlier = ivrs
        .ivhds()
        .take_while(|e| e.offset != h.offset)
        .find(|e| e.iommu() == h.iommu() && e.kind == h.kind)?;
    let differs = if earlier.base_address == h.base_address {
        String::new()
    } else {
        format!(
            " with a different base ({:#x} vs {:#x})",
            earlier.base_address.as_u64(),
            h.base_address.as_u64()
        )
    };
    Some(Defect::new(
        "ivhd-duplicate-type",
        h.offset,
        format!(
            "{} repeats the IVHD {:02x}h @{:#x} for the same IOMMU{differs}; the first is used",
            describe(h),
            h.kind.raw(),
            earlier.offset
        ),
        Action::Ignore,
    ))
}

/// IVHD flags bits 7:6 (PrefSup, PPRSup) exist in type 10h only; in 11h/40h they are reserved
/// (§5.2.2.2), and the EFR image says what the IOMMU supports. Lazaret reads the EFR.
fn reserved_flags(h: &Ivhd<'_>) -> Option<Defect> {
    const TYPE_10H_ONLY: u8 = IvhdFlags::PREF_SUP | IvhdFlags::PPR_SUP;
    let set = h.flags.0 & TYPE_10H_ONLY;
    (h.kind != IvhdType::Fixed10 && set != 0).then(|| {
        Defect::new(
            "ivhd-reserved-flags",
            h.offset,
            format!(
                "{}: flags {:#04x} set reserved bits {set:#04x} (PrefSup/PPRSup exist in 10h only); \
                 the EFR image is used instead",
                describe(h),
                h.flags.0
            ),
            Action::Ignore,
        )
    })
}

/// The same IOAPIC or HPET handle (APIC ID / HPET number) listed more than once in the blocks
/// Lazaret reads (§5.2.2.3, entry 48h): only one requester ID can belong to it. Lazaret does
/// not remap interrupts; for the record it keeps the first.
fn special_handle_defects(ivrs: &Ivrs<'_>, selected: &[usize]) -> Vec<Defect> {
    let specials: Vec<(SpecialVariety, u8, Bdf, usize)> = ivrs
        .ivhds()
        .filter(|h| selected.contains(&h.offset))
        .flat_map(|h| h.entries.iter())
        .filter_map(|e| match e.detail {
            EntryDetail::Special {
                handle,
                source,
                variety,
            } => Some((variety, handle, source, e.offset)),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for (i, &(variety, handle, _, _)) in specials.iter().enumerate() {
        let same = |s: &&(SpecialVariety, u8, Bdf, usize)| s.0 == variety && s.1 == handle;
        if specials.iter().take(i).any(|s| same(&s)) {
            continue;
        }
        let all: Vec<_> = specials.iter().filter(same).collect();
        if let [first, second, ..] = all[..] {
            out.push(Defect::new(
                "ivhd-special-handle-duplicate",
                second.3,
                format!(
                    "{variety} handle {handle} is listed {} times ({}); the first (as {}) is used",
                    all.len(),
                    join(all.iter().map(|s| format!("as {} @{:#x}", s.2, s.3))),
                    first.2
                ),
                Action::Ignore,
            ));
        }
    }
    out
}

/// IVMD ranges (§5.2.3). Lazaret never programs the exclusion-range registers: they would let
/// the devices bypass translation for the whole range, around every per-device table. It maps
/// such a range as a read/write unity range for the devices named instead (as Linux does).
fn ivmd_defects(m: &Ivmd) -> Vec<Defect> {
    let raw = format!(
        "{:#x}+{:#x} (devices: {})",
        m.start.as_u64(),
        m.size,
        IvmdDevices(m)
    );
    let shape = Shape::from_start_size(m.start.as_u64(), m.size);
    let mut out = range_defects(&IVMD_CODES, m.offset, &raw, shape);
    let (first, last) = m.devices();
    if m.kind == IvmdType::Range && last < first {
        out.push(Defect::new(
            "ivmd-device-range-inverted",
            m.offset,
            format!("IVMD {raw}: the last device comes before the first"),
            Action::SkipRange,
        ));
    } else if m.flags.exclusion() && matches!(shape, Shape::Span { .. }) {
        out.push(Defect::new(
            "ivmd-exclusion-range",
            m.offset,
            format!(
                "IVMD {raw} asks for an exclusion range; Lazaret never uses the exclusion-range \
                 registers and maps it read/write 1:1 for those devices instead"
            ),
            Action::IdentityMapAnyway,
        ));
    }
    out
}

/// "IVHD 40h @0xd0 (IOMMU 0000:00:00.2)".
fn describe(h: &Ivhd<'_>) -> String {
    format!(
        "IVHD {:02x}h @{:#x} (IOMMU {})",
        h.kind.raw(),
        h.offset,
        h.iommu()
    )
}

fn superseded(read: bool) -> &'static str {
    if read {
        ""
    } else {
        " (a block Lazaret does not read: a later type describes this IOMMU)"
    }
}
