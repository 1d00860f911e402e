//! The one path through which this crate writes IOMMU tables: a [`PhysMem`] plus the cache
//! flush that a non-coherent unit (ECAP.C = 0, §10.4.3) needs after every table write before
//! hardware may read it (ECAP.C: clflush on hardware).

use lazaret_types::{PhysAddr, PhysMem, PAGE_SIZE};

/// Makes CPU writes to `[addr, addr + len)` visible to a page walker that does not snoop
/// the CPU caches (clflush of every covered line on hardware).
pub trait CacheFlush {
    fn flush_range(&self, addr: PhysAddr, len: u64);
}

/// For coherent units (ECAP.C = 1): nothing to do.
#[derive(Clone, Copy, Debug, Default)]
pub struct Coherent;

impl CacheFlush for Coherent {
    fn flush_range(&self, _addr: PhysAddr, _len: u64) {}
}

/// Table memory: reads go straight to RAM, writes are followed by the caller's flush.
pub struct TableMemory<'a, M: PhysMem + ?Sized, F: CacheFlush + ?Sized> {
    mem: &'a M,
    flush: &'a F,
}

impl<M: PhysMem + ?Sized, F: CacheFlush + ?Sized> Clone for TableMemory<'_, M, F> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<M: PhysMem + ?Sized, F: CacheFlush + ?Sized> Copy for TableMemory<'_, M, F> {}

impl<'a, M: PhysMem + ?Sized> TableMemory<'a, M, Coherent> {
    /// Table memory of a coherent unit.
    pub fn coherent(mem: &'a M) -> Self {
        TableMemory {
            mem,
            flush: &Coherent,
        }
    }
}

impl<'a, M: PhysMem + ?Sized, F: CacheFlush + ?Sized> TableMemory<'a, M, F> {
    pub fn new(mem: &'a M, flush: &'a F) -> Self {
        TableMemory { mem, flush }
    }

    pub fn mem(&self) -> &'a M {
        self.mem
    }

    pub fn read_u64(&self, addr: PhysAddr) -> u64 {
        self.mem.read_u64(addr)
    }

    pub fn read_u128(&self, addr: PhysAddr) -> u128 {
        self.mem.read_u128(addr)
    }

    /// Writes one 8-byte table entry and flushes it.
    pub fn write_entry(&self, addr: PhysAddr, value: u64) {
        self.mem.write_u64(addr, value);
        self.flush.flush_range(addr, 8);
    }

    /// Atomically replaces a 16-byte entry if it still holds `current`, then flushes it.
    pub fn exchange_entry(&self, addr: PhysAddr, current: u128, new: u128) -> Result<(), u128> {
        self.mem.compare_exchange_u128(addr, current, new)?;
        self.flush.flush_range(addr, 16);
        Ok(())
    }

    /// Sets all 512 entries of a freshly allocated (not yet linked) table to `entry`, with one
    /// flush for the whole page.
    pub fn fill_table(&self, table: PhysAddr, entry: u64) {
        if entry == 0 {
            self.mem.zero(table, PAGE_SIZE);
        } else {
            for i in 0..512 {
                self.mem.write_u64(PhysAddr(table.0 + i * 8), entry);
            }
        }
        self.flush.flush_range(table, PAGE_SIZE);
    }
}

#[cfg(test)]
pub(crate) mod test_flush {
    use super::CacheFlush;
    use lazaret_types::PhysAddr;
    use std::cell::RefCell;
    use std::vec::Vec;

    /// Records every flushed range so tests can check that no table write went unflushed.
    #[derive(Default)]
    pub struct RecordingFlush(pub RefCell<Vec<(PhysAddr, u64)>>);

    impl RecordingFlush {
        pub fn covers(&self, addr: PhysAddr, len: u64) -> bool {
            self.0
                .borrow()
                .iter()
                .any(|&(a, l)| a.0 <= addr.0 && addr.0 + len <= a.0 + l)
        }
    }

    impl CacheFlush for RecordingFlush {
        fn flush_range(&self, addr: PhysAddr, len: u64) {
            self.0.borrow_mut().push((addr, len));
        }
    }
}
