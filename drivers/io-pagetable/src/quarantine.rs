//! Per-device quarantine tables (design §4; Xen's "scratch page" quarantine since XSA-400).
//!
//! Built once, at device-add time, while the device lock is held; frozen afterwards: the type
//! has no mutating method, so no mapping lock is needed and the compiler says so.
//!
//! * scratch mode: one root and one table per lower level whose every entry points at the next
//!   level's single table, the leaf table's every entry at the device's own zeroed scratch page
//!   (R/W) — `levels + 1` pages in all. Identity ranges (VT-d RMRR, AMD IVMD unity ranges) are
//!   mapped on private copies of the tables along their path, so they override the scratch
//!   page for exactly those IOVAs.
//! * basic mode: only the identity maps; with none, the vendor decides
//!   ([`EntryFormat::EMPTY_ROOT_IN_BASIC_MODE`]) between no tables and an empty root.

use alloc::vec::Vec;
use core::fmt;
use core::marker::PhantomData;

use lazaret_types::{FrameAllocator, PhysAddr, PhysMem, PAGE_SIZE};

use crate::depth::{index, Depth};
use crate::format::{EntryFormat, EntryKind, TableWriter};
use crate::pagetable::pages;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuarantineError {
    OutOfFrames,
    /// An identity range is empty, grants no access, or does not fit in the tables' address
    /// width or an entry's address field.
    BadRange {
        start: u64,
        end: u64,
    },
}

impl fmt::Display for QuarantineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuarantineError::OutOfFrames => write!(f, "out of frames for quarantine tables"),
            QuarantineError::BadRange { start, end } => {
                write!(
                    f,
                    "reserved range {start:#x}..={end:#x} unusable for these tables"
                )
            }
        }
    }
}

/// A range to identity-map inside quarantine tables: `start..=end` bytes with its rights.
pub trait IdentityRange {
    fn bounds(&self) -> (u64, u64);
    /// `(read, write)`.
    fn access(&self) -> (bool, bool);
}

/// A VT-d RMRR `(start, end_inclusive)`: always read/write (§8.4 gives it no rights field).
impl IdentityRange for (u64, u64) {
    fn bounds(&self) -> (u64, u64) {
        (self.0, self.1)
    }
    fn access(&self) -> (bool, bool) {
        (true, true)
    }
}

/// An AMD IVMD unity range `(start, end_inclusive, read, write)`.
impl IdentityRange for (u64, u64, bool, bool) {
    fn bounds(&self) -> (u64, u64) {
        (self.0, self.1)
    }
    fn access(&self) -> (bool, bool) {
        (self.2, self.3)
    }
}

/// Frozen per-device quarantine tables.
pub struct QuarantineTables<E: EntryFormat> {
    root: Option<PhysAddr>,
    levels: E::Levels,
    scratch: Option<PhysAddr>,
    frames: Vec<PhysAddr>,
    format: PhantomData<fn() -> E>,
}

impl<E: EntryFormat> fmt::Debug for QuarantineTables<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuarantineTables")
            .field("root", &self.root)
            .field("levels", &self.levels)
            .field("scratch", &self.scratch)
            .field("frames", &self.frames)
            .finish()
    }
}

/// Construction state: every frame taken so far is in `frames`, so one error path frees all.
struct Builder<'a, E: EntryFormat, W: TableWriter<E>, A: FrameAllocator + ?Sized> {
    mem: W,
    alloc: &'a mut A,
    frames: Vec<PhysAddr>,
    /// Scratch mode: the shared table of each level (index = level), and the scratch page.
    shared: [Option<PhysAddr>; 8],
    scratch: Option<PhysAddr>,
    format: PhantomData<fn() -> E>,
}

impl<E: EntryFormat, W: TableWriter<E>, A: FrameAllocator + ?Sized> Builder<'_, E, W, A> {
    fn frame(&mut self) -> Result<PhysAddr, QuarantineError> {
        let f = self
            .alloc
            .alloc_frame()
            .ok_or(QuarantineError::OutOfFrames)?;
        self.frames.push(f);
        Ok(f)
    }

    /// The shared table of `level`, if there is one.
    fn shared(&self, level: u32) -> Option<PhysAddr> {
        self.shared.get(level as usize).copied().flatten()
    }

    /// What every entry of a fresh table at `level` holds: in scratch mode the shared path
    /// down to the scratch page, in basic mode nothing (not present).
    fn default_entry(&self, level: u32) -> u64 {
        match (level, self.scratch) {
            (_, None) => 0,
            (1, Some(scratch)) => E::page(scratch, E::perms(true, true), 1),
            (l, Some(_)) => self.shared(l - 1).map_or(0, |t| E::table(t, l - 1)),
        }
    }

    /// A new table at `level` filled with [`Builder::default_entry`].
    fn table(&mut self, level: u32) -> Result<PhysAddr, QuarantineError> {
        let t = self.frame()?;
        self.mem.fill_table(t, self.default_entry(level));
        Ok(t)
    }

    /// Identity-maps `page` with `(read, write)`, giving its path private tables where it
    /// would otherwise go through a shared one.
    fn identity(
        &mut self,
        root: PhysAddr,
        levels: E::Levels,
        page: u64,
        (read, write): (bool, bool),
    ) -> Result<(), QuarantineError> {
        let mut table = root;
        for level in (2..=levels.count()).rev() {
            let at = PhysAddr(table.0 + 8 * index(page, level) as u64);
            table = match E::kind(self.mem.read_u64(at), level) {
                EntryKind::Table(t) if Some(t) != self.shared(level - 1) => t,
                _ => {
                    let private = self.table(level - 1)?;
                    self.mem.write_entry(at, E::table(private, level - 1));
                    private
                }
            };
        }
        let at = PhysAddr(table.0 + 8 * index(page, 1) as u64);
        // Overlapping ranges add up; the scratch leaf never counts as a grant.
        let (r, w) = match E::kind(self.mem.read_u64(at), 1) {
            EntryKind::Page(p) if p == PhysAddr(page) => E::access(self.mem.read_u64(at)),
            _ => (false, false),
        };
        let perms = E::perms(read || r, write || w);
        self.mem.write_entry(at, E::page(PhysAddr(page), perms, 1));
        Ok(())
    }

    fn build(
        &mut self,
        levels: E::Levels,
        ranges: &[E::Range],
        scratch: bool,
    ) -> Result<Option<PhysAddr>, QuarantineError> {
        // Every range is checked before the first frame is taken. Identity maps need the
        // IOVA to be a host address too (the entry's address field).
        let limit = levels.max_iova().min(E::MAX_ADDRESS);
        for r in ranges {
            let ((start, end), (read, write)) = (r.bounds(), r.access());
            if end < start || end > limit || !(read || write) {
                return Err(QuarantineError::BadRange { start, end });
            }
        }
        let root = if scratch {
            let page = self.frame()?;
            self.mem.zero_page(page);
            self.scratch = Some(page);
            for level in 1..levels.count() {
                let t = self.table(level)?;
                self.shared[level as usize] = Some(t);
            }
            self.table(levels.count())?
        } else if !ranges.is_empty() || E::EMPTY_ROOT_IN_BASIC_MODE {
            self.table(levels.count())?
        } else {
            return Ok(None);
        };
        for r in ranges {
            let (start, end) = r.bounds();
            for page in pages::<E::Levels>(start, end)
                .map_err(|_| QuarantineError::BadRange { start, end })?
            {
                self.identity(root, levels, page, r.access())?;
            }
        }
        Ok(Some(root))
    }
}

impl<E: EntryFormat> QuarantineTables<E> {
    /// Builds a device's quarantine tables; on any error every frame taken is given back.
    pub fn build<W, A>(
        mem: W,
        alloc: &mut A,
        levels: E::Levels,
        ranges: &[E::Range],
        scratch: bool,
    ) -> Result<Self, QuarantineError>
    where
        W: TableWriter<E>,
        A: FrameAllocator + ?Sized,
    {
        let mut b = Builder {
            mem,
            alloc,
            frames: Vec::new(),
            shared: [None; 8],
            scratch: None,
            format: PhantomData,
        };
        match b.build(levels, ranges, scratch) {
            Ok(root) => Ok(QuarantineTables {
                root,
                levels,
                scratch: b.scratch,
                frames: b.frames,
                format: PhantomData,
            }),
            Err(e) => {
                b.frames.iter().for_each(|f| b.alloc.free_frame(*f));
                Err(e)
            }
        }
    }

    /// Root of the tables; `None` when there are none (basic mode, no ranges, a vendor
    /// without [`EntryFormat::EMPTY_ROOT_IN_BASIC_MODE`]).
    pub fn root(&self) -> Option<PhysAddr> {
        self.root
    }

    pub fn levels(&self) -> E::Levels {
        self.levels
    }

    pub fn scratch_page(&self) -> Option<PhysAddr> {
        self.scratch
    }

    /// Frames held, scratch page included.
    pub fn page_count(&self) -> usize {
        self.frames.len()
    }

    pub fn frames(&self) -> &[PhysAddr] {
        &self.frames
    }

    /// Zeroes the scratch page (data, not tables): done every time the device enters
    /// quarantine, before it is switched here.
    pub fn zero_scratch<M: PhysMem + ?Sized>(&self, mem: &M) {
        if let Some(page) = self.scratch {
            mem.zero(page, PAGE_SIZE);
        }
    }

    /// Gives every frame back. Only once no context entry / DTE points here any more (after
    /// the invalidation that follows the switch away).
    pub fn free<A: FrameAllocator + ?Sized>(self, alloc: &mut A) {
        self.frames.iter().for_each(|f| alloc.free_frame(*f));
    }
}
