//! Host vectors for guests' device interrupts: each device a guest enables MSI on gets one
//! host vector of its own on the CPU that runs the guest, so the vector alone says whose
//! interrupt arrived. 0x80–0xEF: above the vectors scenarios aim at on purpose (0x20–0x7F) and
//! below the high-priority classes (0xF0–0xFF: the spurious vector lives at 0xFF).
pub const FIRST: u8 = 0x80;
pub const LAST: u8 = 0xEF;

/// Which of [`FIRST`]..=[`LAST`] are in use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostVectors {
    used: u128,
}

impl HostVectors {
    /// The lowest free vector; `None` when all are taken. Never allocates memory.
    pub fn alloc(&mut self) -> Option<u8> {
        let slot = (0..=(LAST - FIRST)).find(|i| self.used & (1 << i) == 0)?;
        self.used |= 1 << slot;
        Some(FIRST + slot)
    }

    /// Gives `vector` back; a vector outside the range or already free is ignored.
    pub fn free(&mut self, vector: u8) {
        if (FIRST..=LAST).contains(&vector) {
            self.used &= !(1 << (vector - FIRST));
        }
    }

    pub fn in_use(&self) -> u32 {
        self.used.count_ones()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_unique_until_freed_and_run_out_cleanly() {
        let mut v = HostVectors::default();
        let all: Vec<u8> = core::iter::from_fn(|| v.alloc()).collect();
        assert_eq!(all.len(), usize::from(LAST - FIRST) + 1);
        assert_eq!(all.first(), Some(&FIRST));
        assert_eq!(all.last(), Some(&LAST));
        assert_eq!(v.alloc(), None);
        v.free(0x90);
        v.free(0x20);
        v.free(0xFF);
        assert_eq!(v.in_use(), u32::from(LAST - FIRST));
        assert_eq!(v.alloc(), Some(0x90));
        assert_eq!(v.alloc(), None);
    }
}
