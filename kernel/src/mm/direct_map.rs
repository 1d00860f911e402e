//! Host physical memory through the identity map: the kernel's [`PhysMem`].
use lazaret_types::{PhysAddr, PhysMem};

/// RAM as table builders and IOMMU drivers see it. Every address handed in comes from the
/// frame allocator or from IOMMU tables the kernel built, all identity-mapped RAM.
pub struct DirectMap;

pub static DIRECT_MAP: DirectMap = DirectMap;

impl PhysMem for DirectMap {
    fn read_u64(&self, addr: PhysAddr) -> u64 {
        // SAFETY: identity-mapped RAM owned by the caller's tables (see the type's doc);
        // volatile because hardware (the IOMMU) reads and writes it too.
        unsafe { (addr.as_u64() as *const u64).read_volatile() }
    }

    fn write_u64(&self, addr: PhysAddr, value: u64) {
        // SAFETY: as for read_u64.
        unsafe { (addr.as_u64() as *mut u64).write_volatile(value) }
    }

    fn compare_exchange_u128(
        &self,
        addr: PhysAddr,
        current: u128,
        new: u128,
    ) -> Result<u128, u128> {
        let (mut lo, mut hi) = (current as u64, (current >> 64) as u64);
        // SAFETY: `addr` is a 16-byte aligned entry in identity-mapped RAM (context entries
        // and DTEs are); cmpxchg16b (checked present at boot) writes it atomically. RBX cannot
        // be named as an operand, so the new low half is swapped through it; the address and
        // that half sit in fixed registers so neither can be allocated to RBX.
        unsafe {
            core::arch::asm!(
                "xchg r8, rbx",
                "lock cmpxchg16b [rsi]",
                "mov rbx, r8",
                in("rsi") addr.as_u64(),
                inout("r8") new as u64 => _,
                in("rcx") (new >> 64) as u64,
                inout("rax") lo,
                inout("rdx") hi,
                options(nostack)
            );
        }
        let found = (lo as u128) | ((hi as u128) << 64);
        if found == current {
            Ok(found)
        } else {
            Err(found)
        }
    }

    fn zero(&self, addr: PhysAddr, len: u64) {
        // SAFETY: as for read_u64, for `len` bytes.
        unsafe { core::ptr::write_bytes(addr.as_u64() as *mut u8, 0, len as usize) }
    }

    fn read_bytes(&self, addr: PhysAddr, buf: &mut [u8]) {
        // SAFETY: as for read_u64, for `buf.len()` bytes.
        unsafe {
            core::ptr::copy_nonoverlapping(addr.as_u64() as *const u8, buf.as_mut_ptr(), buf.len())
        }
    }

    fn write_bytes(&self, addr: PhysAddr, data: &[u8]) {
        // SAFETY: as for read_u64, for `data.len()` bytes.
        unsafe {
            core::ptr::copy_nonoverlapping(data.as_ptr(), addr.as_u64() as *mut u8, data.len())
        }
    }
}

/// `true` when the CPU has cmpxchg16b (CPUID.1:ECX bit 13), which owner switches need.
pub fn cmpxchg16b_supported() -> bool {
    let ecx = core::arch::x86_64::__cpuid(1).ecx;
    ecx & (1 << 13) != 0
}

/// Cache flushing for IOMMU units that do not snoop CPU caches (VT-d ECAP.C = 0).
pub struct Clflush;

pub static CLFLUSH: Clflush = Clflush;

impl lazaret_vtd::CacheFlush for Clflush {
    fn flush_range(&self, addr: PhysAddr, len: u64) {
        let mut line = addr.as_u64() & !63;
        while line < addr.as_u64() + len {
            // SAFETY: clflush of an identity-mapped RAM line only writes it back.
            unsafe {
                core::arch::asm!("clflush [{}]", in(reg) line, options(nostack, preserves_flags))
            };
            line += 64;
        }
        // SAFETY: a fence orders the flushes before the hardware is told to look.
        unsafe { core::arch::asm!("mfence", options(nostack, preserves_flags)) };
    }
}
