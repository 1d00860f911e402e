//! A guest domain's I/O page tables of 4 KiB and 2 MiB pages: the map walk that allocates
//! every missing intermediate table before linking any, unmap, identity maps and freeing.
//! Whether a 2 MiB page may be used (VT-d CAP.SLLPS) is the caller's check.

use core::fmt;
use core::marker::PhantomData;

use lazaret_types::{FrameAllocator, PhysAddr, PhysMem, PAGE_SIZE};

use crate::depth::{index, Depth};
use crate::format::{EntryFormat, EntryKind, TableWriter};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError<L> {
    /// The frame allocator had no frame for a table (nothing was changed).
    OutOfFrames,
    /// IOVA or physical address not aligned to the page size.
    Unaligned { iova: u64, pa: PhysAddr },
    /// IOVA does not fit in the tables' address width (or the page size needs more levels).
    BeyondAddressWidth { iova: u64, levels: L },
    /// A leaf for this IOVA is already present: unmap it first.
    AlreadyMapped { iova: u64 },
    /// Neither read nor write requested: that is an unmap, not a map.
    NoAccess,
    /// `end` below `start`.
    EmptyRange { start: u64, end: u64 },
    /// An entry on the path is one these tables never build (AMD only: VT-d has no
    /// NextLevel field that could disagree with the level).
    Foreign { iova: u64, level: u32 },
    /// A 4 KiB operation inside a 2 MiB page: unmap the whole large page instead.
    InsideLargePage { iova: u64 },
}

impl<L: fmt::Display> fmt::Display for MapError<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapError::OutOfFrames => write!(f, "out of frames for IOMMU page tables"),
            MapError::Unaligned { iova, pa } => {
                write!(f, "iova {iova:#x} / pa {pa} not aligned to the page size")
            }
            MapError::BeyondAddressWidth { iova, levels } => {
                write!(f, "iova {iova:#x} beyond {levels} tables")
            }
            MapError::AlreadyMapped { iova } => write!(f, "iova {iova:#x} already mapped"),
            MapError::NoAccess => write!(f, "mapping without read or write permission"),
            MapError::EmptyRange { start, end } => write!(f, "empty range {start:#x}..={end:#x}"),
            MapError::Foreign { iova, level } => {
                write!(f, "unexpected entry at level {level} for iova {iova:#x}")
            }
            MapError::InsideLargePage { iova } => {
                write!(f, "iova {iova:#x} lies inside a 2 MiB page")
            }
        }
    }
}

/// The size of one leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageSize {
    /// A leaf in a level-1 table.
    Size4K,
    /// A leaf in a level-2 table (VT-d PS = 1, AMD NextLevel = 0).
    Size2M,
}

impl PageSize {
    pub const fn bytes(self) -> u64 {
        PAGE_SIZE << self.order()
    }

    /// log2 of the number of 4 KiB pages: an invalidation's address mask (VT-d §6.5.1.3).
    pub const fn order(self) -> u8 {
        match self {
            PageSize::Size4K => 0,
            PageSize::Size2M => 9,
        }
    }

    /// The level of the table that holds this leaf.
    pub const fn leaf_level(self) -> u32 {
        match self {
            PageSize::Size4K => 1,
            PageSize::Size2M => 2,
        }
    }

    /// The largest size that `iova`, `pa` and `remaining` bytes allow.
    pub const fn largest(iova: u64, pa: u64, remaining: u64) -> PageSize {
        let big = PageSize::Size2M.bytes();
        if iova.is_multiple_of(big) && pa.is_multiple_of(big) && remaining >= big {
            PageSize::Size2M
        } else {
            PageSize::Size4K
        }
    }
}

/// Page addresses of `[start, end_inclusive]`.
pub fn pages<L>(start: u64, end_inclusive: u64) -> Result<impl Iterator<Item = u64>, MapError<L>> {
    if end_inclusive < start {
        return Err(MapError::EmptyRange {
            start,
            end: end_inclusive,
        });
    }
    Ok((start / PAGE_SIZE..=end_inclusive / PAGE_SIZE).map(|p| p * PAGE_SIZE))
}

/// Checks an IOVA against the tables' width and page alignment.
fn check_iova<L: Depth>(levels: L, iova: u64) -> Result<(), MapError<L>> {
    if iova > levels.max_iova() {
        return Err(MapError::BeyondAddressWidth { iova, levels });
    }
    if !iova.is_multiple_of(PAGE_SIZE) {
        return Err(MapError::Unaligned {
            iova,
            pa: PhysAddr(0),
        });
    }
    Ok(())
}

/// Address of the entry for `iova` in `table`, a table at `level`.
const fn slot(table: PhysAddr, iova: u64, level: u32) -> PhysAddr {
    PhysAddr(table.0 + 8 * index(iova, level) as u64)
}

/// Where a walk for one IOVA stopped.
enum PathEnd {
    /// The deepest existing table on the path, and its level.
    Table { table: PhysAddr, level: u32 },
    /// A page above level 1 covers the IOVA: its entry's address, level and page.
    Page {
        at: PhysAddr,
        level: u32,
        page: PhysAddr,
    },
}

/// A mutable I/O page-table tree (a guest domain's). Not `Clone`: one owner frees it.
pub struct PageTable<E: EntryFormat> {
    root: PhysAddr,
    levels: E::Levels,
    format: PhantomData<fn() -> E>,
}

impl<E: EntryFormat> fmt::Debug for PageTable<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageTable")
            .field("root", &self.root)
            .field("levels", &self.levels)
            .finish()
    }
}

impl<E: EntryFormat> PageTable<E> {
    /// An empty tree: one zeroed root.
    pub fn new<W, A>(mem: W, alloc: &mut A, levels: E::Levels) -> Result<Self, MapError<E::Levels>>
    where
        W: TableWriter<E>,
        A: FrameAllocator + ?Sized,
    {
        let root = alloc.alloc_frame().ok_or(MapError::OutOfFrames)?;
        mem.fill_table(root, 0);
        Ok(PageTable {
            root,
            levels,
            format: PhantomData,
        })
    }

    pub fn root(&self) -> PhysAddr {
        self.root
    }

    pub fn levels(&self) -> E::Levels {
        self.levels
    }

    /// Follows present table entries from the root towards the table of `iova` at
    /// `leaf_level`.
    fn descend<W: TableWriter<E>>(
        &self,
        mem: &W,
        iova: u64,
        leaf_level: u32,
    ) -> Result<PathEnd, MapError<E::Levels>> {
        let mut table = self.root;
        let mut level = self.levels.count();
        while level > leaf_level {
            let at = slot(table, iova, level);
            match E::kind(mem.read_u64(at), level) {
                EntryKind::NotPresent => break,
                EntryKind::Table(next) => table = next,
                EntryKind::Page(page) => return Ok(PathEnd::Page { at, level, page }),
                EntryKind::Foreign => return Err(MapError::Foreign { iova, level }),
            }
            level -= 1;
        }
        Ok(PathEnd::Table { table, level })
    }

    /// Maps the 4 KiB page at `iova` to `pa`.
    pub fn map<W, A>(
        &mut self,
        mem: W,
        alloc: &mut A,
        iova: u64,
        pa: PhysAddr,
        perms: E::Perms,
    ) -> Result<(), MapError<E::Levels>>
    where
        W: TableWriter<E>,
        A: FrameAllocator + ?Sized,
    {
        self.map_sized(mem, alloc, iova, pa, perms, PageSize::Size4K)
    }

    /// Maps one page of `size` at `iova` (both `iova` and `pa` aligned to it) to `pa`. Needed
    /// tables are allocated first and the new branch is linked with one final entry write, so
    /// hardware never sees a half-built path.
    pub fn map_sized<W, A>(
        &mut self,
        mem: W,
        alloc: &mut A,
        iova: u64,
        pa: PhysAddr,
        perms: E::Perms,
        size: PageSize,
    ) -> Result<(), MapError<E::Levels>>
    where
        W: TableWriter<E>,
        A: FrameAllocator + ?Sized,
    {
        check_iova(self.levels, iova)?;
        if !pa.0.is_multiple_of(size.bytes()) || !iova.is_multiple_of(size.bytes()) {
            return Err(MapError::Unaligned { iova, pa });
        }
        let leaf_level = size.leaf_level();
        if leaf_level > self.levels.count() {
            return Err(MapError::BeyondAddressWidth {
                iova,
                levels: self.levels,
            });
        }
        if E::grants_nothing(perms) {
            return Err(MapError::NoAccess);
        }
        let (table, level) = match self.descend(&mem, iova, leaf_level)? {
            PathEnd::Page { .. } => return Err(MapError::AlreadyMapped { iova }),
            PathEnd::Table { table, level } => (table, level),
        };
        let page = E::page(pa, perms, leaf_level);
        if level == leaf_level {
            // Present here is a page, or (for 2 MiB) a table of 4 KiB pages: both refuse.
            let at = slot(table, iova, leaf_level);
            if E::kind(mem.read_u64(at), leaf_level) != EntryKind::NotPresent {
                return Err(MapError::AlreadyMapped { iova });
            }
            mem.write_entry(at, page);
            return Ok(());
        }
        // Tables for levels level-1 down to leaf_level, all taken before anything is linked.
        let missing = (level - leaf_level) as usize;
        let mut fresh = [PhysAddr(0); 5];
        for i in 0..missing {
            match alloc.alloc_frame() {
                Some(f) => fresh[i] = f,
                None => {
                    fresh[..i].iter().for_each(|f| alloc.free_frame(*f));
                    return Err(MapError::OutOfFrames);
                }
            }
        }
        // fresh[i] is the table of level level-1-i; chain them, the page last, link first last.
        for i in 0..missing {
            let table_level = level - 1 - i as u32;
            mem.fill_table(fresh[i], 0);
            let value = if i + 1 < missing {
                E::table(fresh[i + 1], table_level - 1)
            } else {
                page
            };
            mem.write_entry(slot(fresh[i], iova, table_level), value);
        }
        mem.write_entry(slot(table, iova, level), E::table(fresh[0], level - 1));
        Ok(())
    }

    /// Removes the leaf for `iova`; returns the page it mapped, if any (see
    /// [`PageTable::unmap_sized`]).
    pub fn unmap<W: TableWriter<E>>(
        &mut self,
        mem: W,
        iova: u64,
    ) -> Result<Option<PhysAddr>, MapError<E::Levels>> {
        Ok(self.unmap_sized(mem, iova)?.map(|(pa, _)| pa))
    }

    /// Removes the page that starts at `iova`, 4 KiB or 2 MiB; returns it and its size (what
    /// the invalidation must cover). An `iova` inside a 2 MiB page but not at its start is
    /// refused. Tables stay (unmap neither allocates nor frees); [`PageTable::free`] takes
    /// them all.
    pub fn unmap_sized<W: TableWriter<E>>(
        &mut self,
        mem: W,
        iova: u64,
    ) -> Result<Option<(PhysAddr, PageSize)>, MapError<E::Levels>> {
        check_iova(self.levels, iova)?;
        let table = match self.descend(&mem, iova, 1)? {
            PathEnd::Page { at, level, page } => {
                // Only level-2 pages are ever built here.
                if level != 2 || !iova.is_multiple_of(PageSize::Size2M.bytes()) {
                    return Err(MapError::InsideLargePage { iova });
                }
                mem.write_entry(at, 0);
                return Ok(Some((page, PageSize::Size2M)));
            }
            PathEnd::Table { table, level: 1 } => table,
            PathEnd::Table { .. } => return Ok(None),
        };
        let at = slot(table, iova, 1);
        match E::kind(mem.read_u64(at), 1) {
            EntryKind::Page(page) => {
                mem.write_entry(at, 0);
                Ok(Some((page, PageSize::Size4K)))
            }
            _ => Ok(None),
        }
    }

    /// Maps every page of `[start, end_inclusive]` to itself. On failure the pages this call
    /// mapped are unmapped again (tables it allocated stay in the tree until
    /// [`PageTable::free`]).
    pub fn identity_map<W, A>(
        &mut self,
        mem: W,
        alloc: &mut A,
        start: u64,
        end_inclusive: u64,
        perms: E::Perms,
    ) -> Result<(), MapError<E::Levels>>
    where
        W: TableWriter<E> + Copy,
        A: FrameAllocator + ?Sized,
    {
        for page in pages(start, end_inclusive)? {
            if let Err(e) = self.map(mem, alloc, page, PhysAddr(page), perms) {
                for done in pages(start, end_inclusive)?.take_while(|p| *p < page) {
                    self.unmap(mem, done)?;
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Frees every table of the tree (not the mapped pages). Only once no context entry /
    /// DTE points here any more.
    pub fn free<M, A>(self, mem: &M, alloc: &mut A)
    where
        M: PhysMem + ?Sized,
        A: FrameAllocator + ?Sized,
    {
        free_tree::<E, M, A>(mem, alloc, self.root, self.levels.count());
    }
}

/// Frees the table at `table` (of `level`) and every table below it.
fn free_tree<E, M, A>(mem: &M, alloc: &mut A, table: PhysAddr, level: u32)
where
    E: EntryFormat,
    M: PhysMem + ?Sized,
    A: FrameAllocator + ?Sized,
{
    if level > 1 {
        for i in 0..PAGE_SIZE / 8 {
            if let EntryKind::Table(next) = E::kind(mem.read_u64(PhysAddr(table.0 + 8 * i)), level)
            {
                free_tree::<E, M, A>(mem, alloc, next, level - 1);
            }
        }
    }
    alloc.free_frame(table);
}
