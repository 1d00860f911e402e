//! Depth-first enumeration of a segment through the bridges as firmware programmed them.
use alloc::vec::Vec;

use lazaret_types::{Bdf, Sbdf};

use crate::function::header_type;
use crate::regs;
use crate::{ConfigSpace, PciError, PciFunction};

/// Default bound on functions recorded per scan. Every bus is scanned at most once, so the
/// number of probes is bounded by 256 × 256 anyway; this bounds the memory a pathological
/// configuration space (one that answers everywhere) can make us allocate.
pub const MAX_FUNCTIONS: usize = 4096;

/// The functions found, in depth-first discovery order, and what was wrong on the way.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Enumeration {
    pub functions: Vec<PciFunction>,
    /// Malformed topology or registers; the scan went on past each of them.
    pub issues: Vec<PciError>,
}

impl Enumeration {
    pub fn get(&self, sbdf: Sbdf) -> Option<&PciFunction> {
        self.functions.iter().find(|f| f.sbdf == sbdf)
    }

    /// The bridge above `function`, if it sits behind one.
    pub fn parent(&self, function: &PciFunction) -> Option<&PciFunction> {
        function.parent_bridge.and_then(|p| self.get(p))
    }

    /// The bridges between `sbdf` and its root bus, nearest first. The chain is acyclic by
    /// construction (a parent is found before its children), and bounded by the bus count.
    pub fn ancestors(&self, sbdf: Sbdf) -> impl Iterator<Item = &PciFunction> + '_ {
        let mut current = self.get(sbdf);
        core::iter::from_fn(move || {
            let parent = self.parent(current?)?;
            current = Some(parent);
            Some(parent)
        })
        .take(256)
    }

    /// Functions on the secondary bus of `bridge`.
    pub fn children(&self, bridge: Sbdf) -> impl Iterator<Item = &PciFunction> + '_ {
        self.functions
            .iter()
            .filter(move |f| f.parent_bridge == Some(bridge))
    }

    /// Adds the result of scanning another segment.
    pub fn append(&mut self, mut other: Enumeration) {
        self.functions.append(&mut other.functions);
        self.issues.append(&mut other.issues);
    }
}

/// Scans `segment` from each of `root_buses` (bus 0, or the host bridges' buses from ACPI).
pub fn enumerate<C: ConfigSpace + ?Sized>(cfg: &C, segment: u16, root_buses: &[u8]) -> Enumeration {
    enumerate_bounded(cfg, segment, root_buses, MAX_FUNCTIONS)
}

/// [`enumerate`] with an explicit bound on the number of functions recorded.
pub fn enumerate_bounded<C: ConfigSpace + ?Sized>(
    cfg: &C,
    segment: u16,
    root_buses: &[u8],
    max_functions: usize,
) -> Enumeration {
    let mut scan = Scan {
        cfg,
        segment,
        max_functions,
        visited: BusSet::default(),
        stack: Vec::new(),
        result: Enumeration::default(),
    };
    for &bus in root_buses {
        if !scan.enter_bus(bus, None) {
            continue;
        }
        if scan.run().is_err() {
            break;
        }
    }
    scan.result
}

/// Buses already scanned (or queued): a bus is never scanned twice.
#[derive(Default)]
struct BusSet([u64; 4]);

impl BusSet {
    /// Marks `bus`; `false` if it was marked already.
    fn insert(&mut self, bus: u8) -> bool {
        let word = &mut self.0[usize::from(bus >> 6)];
        let bit = 1u64 << (bus & 63);
        let fresh = *word & bit == 0;
        *word |= bit;
        fresh
    }
}

/// One bus being scanned: where we are on it and who is above it.
struct Frame {
    bus: u8,
    parent: Option<Sbdf>,
    /// Next device/function to probe, 0..=256.
    devfn: u16,
    /// Functions implemented by the current device: 1, or 8 when function 0 says multi-function.
    functions: u16,
}

/// The function limit was hit: stop the whole scan.
struct LimitReached;

struct Scan<'a, C: ConfigSpace + ?Sized> {
    cfg: &'a C,
    segment: u16,
    max_functions: usize,
    visited: BusSet,
    stack: Vec<Frame>,
    result: Enumeration,
}

impl<C: ConfigSpace + ?Sized> Scan<'_, C> {
    /// Queues `bus` for scanning unless it was reached before.
    fn enter_bus(&mut self, bus: u8, parent: Option<Sbdf>) -> bool {
        if !self.visited.insert(bus) {
            self.result.issues.push(PciError::BusVisitedTwice {
                segment: self.segment,
                bus,
            });
            return false;
        }
        self.stack.push(Frame {
            bus,
            parent,
            devfn: 0,
            functions: 1,
        });
        true
    }

    /// Depth first: a bridge's secondary bus is scanned as soon as the bridge is found, and
    /// the parent bus resumes after it.
    fn run(&mut self) -> Result<(), LimitReached> {
        while let Some(frame) = self.stack.last_mut() {
            if frame.devfn > 0xff {
                self.stack.pop();
                continue;
            }
            let (bus, parent, devfn) = (frame.bus, frame.parent, frame.devfn);
            let function = devfn & 7;
            let Some(bdf) = Bdf::new(bus, (devfn >> 3) as u8, function as u8) else {
                frame.devfn += 1;
                continue;
            };
            let sbdf = Sbdf::new(self.segment, bdf);
            if function == 0 {
                if self.cfg.read16(sbdf, regs::ID) == regs::VENDOR_ABSENT {
                    frame.devfn += 8;
                    continue;
                }
                // Only function 0's Header Type bit 7 counts (PCI Local Bus Spec 3.0 §6.2.1):
                // single-function devices may not decode the function number at all.
                let multi = header_type(self.cfg, sbdf) & regs::HEADER_MULTI_FUNCTION != 0;
                frame.functions = if multi { 8 } else { 1 };
            }
            if function >= frame.functions {
                frame.devfn = (devfn | 7) + 1;
                continue;
            }
            frame.devfn += 1;
            self.visit(sbdf, parent)?;
        }
        Ok(())
    }

    fn visit(&mut self, sbdf: Sbdf, parent: Option<Sbdf>) -> Result<(), LimitReached> {
        if self.result.functions.len() >= self.max_functions {
            self.result.issues.push(PciError::FunctionLimit {
                limit: self.max_functions,
            });
            return Err(LimitReached);
        }
        let Some(function) = PciFunction::probe(self.cfg, sbdf, parent, &mut self.result.issues)
        else {
            return Ok(());
        };
        let bridged = function.bridged_buses();
        self.result.functions.push(function);
        if let Some((secondary, _)) = bridged {
            self.follow_bridge(sbdf, secondary);
        }
        Ok(())
    }

    /// Secondary bus 0 means firmware left the bridge unconfigured: nothing to follow.
    fn follow_bridge(&mut self, bridge: Sbdf, secondary: u8) {
        if secondary == 0 {
            return;
        }
        if secondary <= bridge.bdf.bus() {
            self.result
                .issues
                .push(PciError::BridgeLoop { bridge, secondary });
            return;
        }
        self.enter_bus(secondary, Some(bridge));
    }
}
