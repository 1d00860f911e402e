//! Bytes in and out of a guest's memory by guest-physical address, page by page through its
//! memory map (runs need not be contiguous in host memory). A range that leaves the guest's
//! RAM is refused whole, before any byte moves: a guest's bad pointer never reaches the host.
use lazaret_types::{PhysAddr, PhysMem, PAGE_SIZE};

use crate::domain::GuestMemory;

/// The range `gpa .. gpa + len` is not all guest RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutsideGuest {
    pub gpa: u64,
    pub len: u64,
}

impl core::fmt::Display for OutsideGuest {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{} byte(s) at guest-physical {:#x} are not the guest's RAM",
            self.len, self.gpa
        )
    }
}

fn check(memory: &GuestMemory, gpa: u64, len: u64) -> Result<(), OutsideGuest> {
    match gpa.checked_add(len) {
        Some(end) if end <= memory.size() => Ok(()),
        _ => Err(OutsideGuest { gpa, len }),
    }
}

/// Calls `each(host, offset, n)` for every page-bounded piece of the range.
fn pieces(memory: &GuestMemory, gpa: u64, len: u64, mut each: impl FnMut(PhysAddr, usize, usize)) {
    let mut done = 0u64;
    while done < len {
        let at = gpa + done;
        let n = (PAGE_SIZE - at % PAGE_SIZE).min(len - done);
        if let Some(host) = memory.host_address(at) {
            each(host, done as usize, n as usize);
        }
        done += n;
    }
}

/// Writes `bytes` at guest-physical `gpa`.
pub fn write(
    mem: &(impl PhysMem + ?Sized),
    memory: &GuestMemory,
    gpa: u64,
    bytes: &[u8],
) -> Result<(), OutsideGuest> {
    check(memory, gpa, bytes.len() as u64)?;
    pieces(memory, gpa, bytes.len() as u64, |host, off, n| {
        mem.write_bytes(host, &bytes[off..off + n])
    });
    Ok(())
}

/// Reads `buf.len()` bytes from guest-physical `gpa`.
pub fn read(
    mem: &(impl PhysMem + ?Sized),
    memory: &GuestMemory,
    gpa: u64,
    buf: &mut [u8],
) -> Result<(), OutsideGuest> {
    check(memory, gpa, buf.len() as u64)?;
    pieces(memory, gpa, buf.len() as u64, |host, off, n| {
        mem.read_bytes(host, &mut buf[off..off + n])
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Run;
    use lazaret_types::sim::SimMemory;

    /// Two runs whose host frames are apart: gpa 0..8 KiB at 0x10_0000, 8..12 KiB at 0x50_0000.
    fn split_memory() -> GuestMemory {
        GuestMemory::from_runs(vec![
            Run {
                gpa: 0,
                hpa: PhysAddr(0x10_0000),
                pages: 2,
            },
            Run {
                gpa: 0x2000,
                hpa: PhysAddr(0x50_0000),
                pages: 1,
            },
        ])
        .unwrap()
    }

    #[test]
    fn a_range_across_runs_lands_in_each_runs_frames() {
        let mem = SimMemory::new();
        let memory = split_memory();
        let data: Vec<u8> = (0..32).collect();
        write(&mem, &memory, 0x1ff0, &data).unwrap();
        let mut a = [0u8; 16];
        mem.read_bytes(PhysAddr(0x10_1ff0), &mut a);
        assert_eq!(a[..], data[..16]);
        let mut b = [0u8; 16];
        mem.read_bytes(PhysAddr(0x50_0000), &mut b);
        assert_eq!(b[..], data[16..]);
        let mut back = [0u8; 32];
        read(&mem, &memory, 0x1ff0, &mut back).unwrap();
        assert_eq!(back[..], data[..]);
    }

    #[test]
    fn a_range_leaving_the_guest_moves_nothing() {
        let mem = SimMemory::new();
        let memory = split_memory();
        assert_eq!(
            write(&mem, &memory, 0x2ff0, &[1; 32]),
            Err(OutsideGuest {
                gpa: 0x2ff0,
                len: 32
            })
        );
        let mut b = [0u8; 16];
        mem.read_bytes(PhysAddr(0x50_0ff0), &mut b);
        assert_eq!(b, [0; 16], "not even the part inside was written");
        assert!(
            read(&mem, &memory, u64::MAX - 3, &mut [0; 8]).is_err(),
            "overflow"
        );
        assert!(
            read(&mem, &memory, 0x3000, &mut []).is_ok(),
            "an empty range at the end"
        );
    }
}
