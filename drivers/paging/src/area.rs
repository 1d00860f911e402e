//! Table pages for the guest's own page tables: a fixed region of the guest's RAM
//! (`PAGE_TABLES_GPA`, 64 KiB in the guest contract), handed out by guest-physical address.
//!
//! The tables the guest's MMU walks must hold guest-physical addresses, while Lazaret writes
//! them through host-physical ones. [`TableArea`] is the allocator (gpa out), [`AreaMem`] the
//! memory (gpa in, host frame behind it). The guest owns these pages once it runs and may
//! rewrite them: nothing of Lazaret ever walks them again.
use lazaret_types::{FrameAllocator, PhysAddr, PhysMem, PAGE_SIZE};

use crate::mapping::PagingError;

/// Pages one area can hold (the contract's 64 KiB is 16).
pub const MAX_AREA_PAGES: usize = 64;

/// `pages` guest-physical pages from `base`, each backed by its own host frame.
#[derive(Clone, Debug)]
pub struct TableArea {
    base: u64,
    frames: [PhysAddr; MAX_AREA_PAGES],
    pages: usize,
    /// Bit `i` set: page `i` handed out.
    used: u64,
}

impl TableArea {
    /// `frames[i]` is the host frame behind gpa `base + i * 4 KiB`.
    pub fn new(base: u64, frames: &[PhysAddr]) -> Result<TableArea, PagingError> {
        let len = frames.len() as u64 * PAGE_SIZE;
        if frames.is_empty() || frames.len() > MAX_AREA_PAGES {
            return Err(PagingError::Empty { index: 0 });
        }
        if !base.is_multiple_of(PAGE_SIZE)
            || base.checked_add(len).is_none()
            || frames.iter().any(|f| !f.is_page_aligned())
        {
            return Err(PagingError::Misaligned { index: 0 });
        }
        let mut all = [PhysAddr(0); MAX_AREA_PAGES];
        all[..frames.len()].copy_from_slice(frames);
        Ok(TableArea {
            base,
            frames: all,
            pages: frames.len(),
            used: 0,
        })
    }

    /// The host address behind `gpa`, if it lies in the area.
    pub fn host_address(&self, gpa: u64) -> Option<PhysAddr> {
        let i = usize::try_from(gpa.checked_sub(self.base)? / PAGE_SIZE).ok()?;
        (i < self.pages).then(|| PhysAddr(self.frames[i].0 + gpa % PAGE_SIZE))
    }

    /// The area's memory, gpa-addressed, over the host's `mem`.
    pub fn mem<'m, M: PhysMem + ?Sized>(&self, mem: &'m M) -> AreaMem<'m, M> {
        AreaMem {
            mem,
            area: self.clone(),
        }
    }

    fn page_index(&self, gpa: PhysAddr) -> Option<usize> {
        if !gpa.is_page_aligned() {
            return None;
        }
        let i = usize::try_from(gpa.0.checked_sub(self.base)? / PAGE_SIZE).ok()?;
        (i < self.pages).then_some(i)
    }
}

impl FrameAllocator for TableArea {
    /// The lowest free page, so the first table built (the root) is the area's base: the
    /// contract's CR3. Zeroed by the builder through [`AreaMem`].
    fn alloc_frame(&mut self) -> Option<PhysAddr> {
        let i = (0..self.pages).find(|i| self.used & (1 << i) == 0)?;
        self.used |= 1 << i;
        Some(PhysAddr(self.base + i as u64 * PAGE_SIZE))
    }

    /// Pages not from this area, or not handed out, are ignored.
    fn free_frame(&mut self, frame: PhysAddr) {
        if let Some(i) = self.page_index(frame) {
            self.used &= !(1 << i);
        }
    }

    fn frames_in_use(&self) -> usize {
        self.used.count_ones() as usize
    }
}

/// Guest-physical access to a [`TableArea`]. Addresses outside it read as zero (not present)
/// and writes to them are dropped: the builder only touches pages the area handed out.
pub struct AreaMem<'m, M: ?Sized> {
    mem: &'m M,
    area: TableArea,
}

impl<M: PhysMem + ?Sized> AreaMem<'_, M> {
    /// `len` bytes at `gpa` lie in one page of the area: its host address.
    fn at(&self, gpa: PhysAddr, len: u64) -> Option<PhysAddr> {
        let end = gpa.0.checked_add(len.checked_sub(1)?)?;
        (gpa.0 / PAGE_SIZE == end / PAGE_SIZE)
            .then(|| self.area.host_address(gpa.0))
            .flatten()
    }

    /// Splits `[gpa, gpa + len)` into in-page pieces: (host address, offset in the request, len).
    fn pieces(
        &self,
        gpa: PhysAddr,
        len: u64,
    ) -> impl Iterator<Item = (Option<PhysAddr>, u64, u64)> + '_ {
        let mut done = 0;
        core::iter::from_fn(move || {
            if done >= len {
                return None;
            }
            let at = gpa.0.wrapping_add(done);
            let n = (PAGE_SIZE - at % PAGE_SIZE).min(len - done);
            let piece = (self.at(PhysAddr(at), n), done, n);
            done += n;
            Some(piece)
        })
    }
}

impl<M: PhysMem + ?Sized> PhysMem for AreaMem<'_, M> {
    fn read_u64(&self, addr: PhysAddr) -> u64 {
        self.at(addr, 8).map_or(0, |h| self.mem.read_u64(h))
    }

    fn write_u64(&self, addr: PhysAddr, value: u64) {
        if let Some(h) = self.at(addr, 8) {
            self.mem.write_u64(h, value);
        }
    }

    fn compare_exchange_u128(
        &self,
        addr: PhysAddr,
        current: u128,
        new: u128,
    ) -> Result<u128, u128> {
        match self.at(addr, 16) {
            Some(h) => self.mem.compare_exchange_u128(h, current, new),
            None => Err(0),
        }
    }

    fn zero(&self, addr: PhysAddr, len: u64) {
        for (host, _, n) in self.pieces(addr, len) {
            if let Some(h) = host {
                self.mem.zero(h, n);
            }
        }
    }

    fn read_bytes(&self, addr: PhysAddr, buf: &mut [u8]) {
        for (host, off, n) in self.pieces(addr, buf.len() as u64) {
            let part = &mut buf[off as usize..(off + n) as usize];
            match host {
                Some(h) => self.mem.read_bytes(h, part),
                None => part.fill(0),
            }
        }
    }

    fn write_bytes(&self, addr: PhysAddr, data: &[u8]) {
        for (host, off, n) in self.pieces(addr, data.len() as u64) {
            if let Some(h) = host {
                self.mem
                    .write_bytes(h, &data[off as usize..(off + n) as usize]);
            }
        }
    }
}
