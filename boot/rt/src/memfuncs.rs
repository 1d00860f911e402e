//! `memcpy`, `memmove`, `memset`, `memcmp` and `bcmp` for the freestanding binaries.
//!
//! The `x86_64-unknown-linux-gnu` target expects libc to provide them and its prebuilt
//! `compiler_builtins` does not export its own, so without these the link fails. They are
//! written with `rep movsb`/`rep stosb` and explicit loops the compiler cannot turn back into
//! calls to themselves.
//!
//! They are a macro, expanded once in each binary's `main.rs`: were they plain items of this
//! library, the host test builds of crates that depend on it would get a second `memcpy` and
//! `rust_eh_personality` beside std's.

/// Defines the libc memory functions and unwinding stubs in the invoking (binary) crate.
#[macro_export]
macro_rules! freestanding_runtime {
    () => {
    mod freestanding_runtime {
    use core::arch::asm;

    /// # Safety
    /// As C's `memcpy`: `dst` and `src` valid for `n` bytes and not overlapping.
    #[no_mangle]
    pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
        // Bytes up to an 8-aligned destination, then quadwords, then the tail: under TCG every
        // iteration of a `rep` string instruction costs about the same, whatever its width, so
        // quadwords are 8 times faster (and no slower on hardware).
        let head = (dst as usize).wrapping_neg() % 8;
        let (head, qwords, tail) = if n < 64 { (n, 0, 0) } else { (head, (n - head) / 8, (n - head) % 8) };
        // SAFETY: the caller guarantees both ranges are valid and disjoint; DF is clear by ABI;
        // head + 8 * qwords + tail == n.
        unsafe {
            asm!("rep movsb", "mov rcx, {q}", "rep movsq", "mov rcx, {t}", "rep movsb",
                 q = in(reg) qwords, t = in(reg) tail,
                 inout("rcx") head => _, inout("rdi") dst => _, inout("rsi") src => _,
                 options(nostack, preserves_flags));
        }
        dst
    }

    /// # Safety
    /// As C's `memmove`: both ranges valid for `n` bytes; they may overlap.
    #[no_mangle]
    pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
        if (dst as usize) <= (src as usize) || (dst as usize) >= (src as usize).wrapping_add(n) {
            // SAFETY: a forward copy is correct when dst does not start inside src.
            return unsafe { memcpy(dst, src, n) };
        }
        // Overlap with dst above src: copy backwards with the direction flag set.
        // SAFETY: the caller guarantees the ranges; DF is restored before returning.
        unsafe {
            asm!("std", "rep movsb", "cld",
                 inout("rcx") n => _,
                 inout("rdi") dst.wrapping_add(n).wrapping_sub(1) => _,
                 inout("rsi") src.wrapping_add(n).wrapping_sub(1) => _,
                 options(nostack));
        }
        dst
    }

    /// # Safety
    /// As C's `memset`: `dst` valid for `n` bytes.
    #[no_mangle]
    pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
        // As memcpy: bytes to an 8-aligned destination, quadwords, then the tail.
        let head = (dst as usize).wrapping_neg() % 8;
        let (head, qwords, tail) = if n < 64 { (n, 0, 0) } else { (head, (n - head) / 8, (n - head) % 8) };
        let pattern = u64::from(c as u8) * 0x0101_0101_0101_0101;
        // SAFETY: the caller guarantees the range; DF is clear by ABI; head + 8 * qwords +
        // tail == n, and `rep stosb` stores AL, the pattern's low byte.
        unsafe {
            asm!("rep stosb", "mov rcx, {q}", "rep stosq", "mov rcx, {t}", "rep stosb",
                 q = in(reg) qwords, t = in(reg) tail,
                 inout("rcx") head => _, inout("rdi") dst => _, in("rax") pattern,
                 options(nostack, preserves_flags));
        }
        dst
    }

    /// # Safety
    /// As C's `memcmp`: both ranges valid for `n` bytes.
    #[no_mangle]
    pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        let mut i = 0;
        // Quadwords while they match (unaligned loads are fine on x86), then bytes.
        while i + 8 <= n {
            // SAFETY: i + 8 <= n and the caller guarantees both ranges.
            let (x, y) = unsafe {
                (a.add(i).cast::<u64>().read_unaligned(), b.add(i).cast::<u64>().read_unaligned())
            };
            if x != y {
                break;
            }
            i += 8;
        }
        while i < n {
            // SAFETY: i < n and the caller guarantees both ranges.
            let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
            if x != y {
                return x as i32 - y as i32;
            }
            i += 1;
        }
        0
    }

    /// # Safety
    /// As [`memcmp`].
    #[no_mangle]
    pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        // SAFETY: same contract as memcmp.
        unsafe { memcmp(a, b, n) }
    }

    /// The prebuilt `core` is compiled with unwinding and names this symbol; with
    /// `panic = "abort"` it is never called.
    #[no_mangle]
    pub extern "C" fn rust_eh_personality() {}

    /// Referenced by `alloc`'s unwinding paths, which `panic = "abort"` never takes.
    #[no_mangle]
    pub extern "C" fn _Unwind_Resume() -> ! {
        $crate::exit::halt_forever()
    }
}
}
}
