//! The report for people: units and what they cover, reserved memory, other structures, then
//! the warnings with what Lazaret will do about each, then the verdict.
use std::fmt::{self, Write};

use crate::report::{TableReport, Unit};

/// Renders `report` as text.
pub fn render(report: &TableReport) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_report(&mut out, report);
    out
}

fn write_report(out: &mut String, r: &TableReport) -> fmt::Result {
    writeln!(out, "== {}: {}", r.file, r.summary)?;
    writeln!(out, "IOMMU units ({}):", r.units.len())?;
    for unit in &r.units {
        write_unit(out, unit)?;
    }
    if !r.reserved.is_empty() {
        writeln!(out, "Reserved memory ({}):", r.reserved.len())?;
        for m in &r.reserved {
            writeln!(out, "  {}", m.description)?;
            writeln!(out, "      for {}", m.devices.join(", "))?;
        }
    }
    if !r.other.is_empty() {
        writeln!(out, "Other structures ({}):", r.other.len())?;
        for o in &r.other {
            writeln!(out, "  {}", o.description)?;
            if !o.devices.is_empty() {
                writeln!(out, "      {}", o.devices.join(", "))?;
            }
        }
    }
    if r.warnings.is_empty() {
        writeln!(out, "WARNINGS: none")?;
    } else {
        writeln!(out, "WARNINGS ({}):", r.warnings.len())?;
        for w in &r.warnings {
            writeln!(out, "  [{}] @{:#x}: {}", w.code, w.offset, w.message)?;
            writeln!(out, "      Lazaret will: {}", w.action_text)?;
        }
    }
    match r.fatal_reason() {
        None => writeln!(
            out,
            "VERDICT: Lazaret can run on this table (warnings: {})",
            r.warnings.len()
        ),
        Some(w) => writeln!(out, "VERDICT: Lazaret cannot run: {}", w.message),
    }
}

fn write_unit(out: &mut String, u: &Unit) -> fmt::Result {
    let ignored = if u.ignored { "  [IGNORED]" } else { "" };
    writeln!(out, "  {}{ignored}", u.description)?;
    writeln!(out, "      capabilities: {}", u.capabilities.join(", "))?;
    if u.include_pci_all == Some(true) {
        writeln!(
            out,
            "      covers every device of segment {} that no other unit names",
            u.segment
        )?;
    }
    for s in u.scopes.iter().flatten() {
        let path: Vec<String> = s
            .path
            .iter()
            .map(|[d, f]| format!("{d:02x}.{f:x}"))
            .collect();
        let id = s
            .enumeration_id
            .map(|id| format!(" id {id}"))
            .unwrap_or_default();
        writeln!(
            out,
            "      {} {:02x}:{}{id}",
            s.scope_type,
            s.bus,
            path.join("/")
        )?;
    }
    for e in u.entries.iter().flatten() {
        writeln!(out, "      {}: {}", e.entry_type, e.description)?;
    }
    if let Some(blocks) = u.superseded_blocks.as_ref().filter(|b| !b.is_empty()) {
        let offsets: Vec<String> = blocks.iter().map(|o| format!("@{o:#x}")).collect();
        writeln!(
            out,
            "      also described by {} (not read: this is the most complete block)",
            offsets.join(", ")
        )?;
    }
    Ok(())
}
