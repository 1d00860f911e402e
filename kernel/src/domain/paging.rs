//! A guest's nested page tables and its own page tables, both from its memory map
//! ([`GuestMemory`]) — the same runs its IOMMU tables are built from — with 2 MiB pages
//! wherever a run's alignment allows (`lazaret_paging`).
use alloc::vec::Vec;

use lazaret_paging::{build, Cache, Config, Mapping, PageTables, PagingError, TableArea};
use lazaret_types::{FrameAllocator, PhysAddr, PhysMem, PAGE_SIZE};

use super::memory::GuestMemory;

/// A guest BAR: `len` bytes at `gpa` in the guest's MMIO window are the device's real BAR at
/// `hpa`, mapped uncached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioMapping {
    pub gpa: u64,
    pub hpa: PhysAddr,
    pub len: u64,
}

/// Where the guest contract puts things (`lazaret-guest-abi`'s constants).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestLayout {
    /// `PAGE_TABLES_GPA` and its size (64 KiB): the guest's own tables go there.
    pub page_tables_gpa: u64,
    pub page_tables_len: u64,
    /// `MMIO_WINDOW_GPA`, `MMIO_WINDOW_SIZE`: identity-mapped uncached in the guest's tables.
    pub mmio_window_gpa: u64,
    pub mmio_window_size: u64,
}

/// The nested page tables of a guest: all its RAM (writable, executable, write-back) and
/// its BARs (uncached; not executable when `host_nx`, i.e. the host runs with EFER.NXE).
/// Table pages come from `alloc` (host frames); the root is the VMCB's N_CR3.
pub fn build_nested_tables(
    mem: &(impl PhysMem + ?Sized),
    alloc: &mut (impl FrameAllocator + ?Sized),
    memory: &GuestMemory,
    mmio: &[MmioMapping],
    host_nx: bool,
) -> Result<PageTables, PagingError> {
    let mut maps = Vec::new();
    maps.try_reserve(memory.runs().len() + mmio.len())
        .map_err(|_| PagingError::OutOfMemory)?;
    maps.extend(memory.runs().iter().map(|r| Mapping {
        gpa: r.gpa,
        hpa: r.hpa.0,
        len: r.len(),
        writable: true,
        executable: true,
        cache: Cache::WriteBack,
    }));
    maps.extend(mmio.iter().map(|b| Mapping {
        gpa: b.gpa,
        hpa: b.hpa.0,
        len: b.len,
        writable: true,
        executable: !host_nx,
        cache: Cache::Uncached,
    }));
    build(mem, alloc, Config::nested(host_nx), &maps)
}

/// Writes the guest's own long-mode tables into its memory at `layout.page_tables_gpa`:
/// identity map of its RAM except page 0 (the null guard), and the MMIO window uncached.
/// Supervisor-only, no NX (the contract starts the guest without EFER.NXE). The root is
/// `page_tables_gpa`, the guest's CR3. The pages stay the guest's: nothing frees them.
pub fn build_guest_tables(
    mem: &(impl PhysMem + ?Sized),
    memory: &GuestMemory,
    layout: &GuestLayout,
) -> Result<PageTables, PagingError> {
    let pages = layout.page_tables_len / PAGE_SIZE;
    let mut frames = [PhysAddr(0); lazaret_paging::MAX_AREA_PAGES];
    let frames = frames
        .get_mut(..usize::try_from(pages).map_err(|_| PagingError::Empty { index: 0 })?)
        .ok_or(PagingError::OutOfRange { index: 0 })?;
    for (i, f) in frames.iter_mut().enumerate() {
        let gpa = layout.page_tables_gpa + i as u64 * PAGE_SIZE;
        *f = memory
            .host_address(gpa)
            .ok_or(PagingError::OutOfRange { index: 0 })?;
    }
    let mut area = TableArea::new(layout.page_tables_gpa, frames)?;
    let ram = |gpa: u64, len: u64| Mapping {
        gpa,
        hpa: gpa,
        len,
        writable: true,
        executable: true,
        cache: Cache::WriteBack,
    };
    let maps = [
        ram(PAGE_SIZE, memory.size().saturating_sub(PAGE_SIZE)),
        Mapping {
            cache: Cache::Uncached,
            ..ram(layout.mmio_window_gpa, layout.mmio_window_size)
        },
    ];
    let area_mem = area.mem(mem);
    build(&area_mem, &mut area, Config::guest(false), &maps)
}

#[cfg(test)]
mod tests;
