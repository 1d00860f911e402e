//! A fixed-size bit set of free frames: sized once when built, so marking a frame used or
//! free never touches the heap (frees run inside deassign and destroy, which must not
//! allocate).
use alloc::vec::Vec;

const BITS: usize = u64::BITS as usize;

/// Bit `i` set = frame `i` of the owning range is free. Bits past `len` stay clear, so they
/// are never found free.
pub struct FreeBitmap {
    words: Vec<u64>,
    len: usize,
}

impl FreeBitmap {
    /// `len` frames, all free; `None` when the heap cannot hold the bitmap (a memory map
    /// larger than the heap was sized for must not panic the boot).
    pub fn all_free(len: usize) -> Option<FreeBitmap> {
        let count = len.div_ceil(BITS);
        let mut words = Vec::new();
        words.try_reserve_exact(count).ok()?;
        words.resize(count, !0u64);
        if !len.is_multiple_of(BITS) {
            if let Some(last) = words.last_mut() {
                *last = (1u64 << (len % BITS)) - 1;
            }
        }
        Some(FreeBitmap { words, len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_free(&self, i: usize) -> bool {
        i < self.len && self.words[i / BITS] & (1 << (i % BITS)) != 0
    }

    /// Marks `i` used; false if it was not free (or out of range).
    pub fn take(&mut self, i: usize) -> bool {
        if !self.is_free(i) {
            return false;
        }
        self.words[i / BITS] &= !(1 << (i % BITS));
        true
    }

    /// Marks `i` free; false if it already was (a double free) or is out of range.
    pub fn give(&mut self, i: usize) -> bool {
        if i >= self.len || self.is_free(i) {
            return false;
        }
        self.words[i / BITS] |= 1 << (i % BITS);
        true
    }

    /// The first free bit at or after `from`, a word at a time.
    pub fn first_free_from(&self, from: usize) -> Option<usize> {
        if from >= self.len {
            return None;
        }
        let first_word = from / BITS;
        let mask = !0u64 << (from % BITS);
        let word = self.words[first_word] & mask;
        if word != 0 {
            return Some(first_word * BITS + word.trailing_zeros() as usize);
        }
        self.words[first_word + 1..]
            .iter()
            .position(|w| *w != 0)
            .map(|k| {
                (first_word + 1 + k) * BITS
                    + self.words[first_word + 1 + k].trailing_zeros() as usize
            })
    }

    /// The first used bit in `[start, end)` (`end <= len`), a word at a time: what ends a run
    /// of free frames.
    pub fn first_used_in(&self, start: usize, end: usize) -> Option<usize> {
        let mut i = start;
        while i < end {
            let word = !self.words[i / BITS] >> (i % BITS);
            if word != 0 {
                let found = i + word.trailing_zeros() as usize;
                return (found < end).then_some(found);
            }
            i = (i / BITS + 1) * BITS;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_past_the_end_are_never_free() {
        let b = FreeBitmap::all_free(70).expect("bitmap");
        assert!(b.is_free(69));
        assert!(!b.is_free(70));
        assert_eq!(b.first_free_from(70), None);
        assert_eq!(b.first_used_in(0, 70), None);
    }

    #[test]
    fn take_give_and_searches_agree_with_a_naive_scan() {
        let mut b = FreeBitmap::all_free(200).expect("bitmap");
        let used = [0usize, 1, 63, 64, 65, 127, 128, 190, 199];
        for u in used {
            assert!(b.take(u));
            assert!(!b.take(u), "already used");
        }
        for from in 0..=200 {
            let naive = (from..200).find(|i| !used.contains(i));
            assert_eq!(b.first_free_from(from), naive, "from {from}");
            for end in from..=200 {
                let naive = (from..end).find(|i| used.contains(i));
                assert_eq!(b.first_used_in(from, end), naive, "[{from}, {end})");
            }
        }
        assert!(b.give(64));
        assert!(!b.give(64), "double free refused");
        assert!(!b.give(200), "out of range refused");
        assert_eq!(b.first_free_from(63), Some(64));
    }
}
