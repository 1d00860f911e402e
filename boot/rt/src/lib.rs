//! What a freestanding binary on the `x86_64-unknown-linux-gnu` target needs and the target's
//! prebuilt libraries do not give it: the `mem*` functions libc would provide, port I/O, a way
//! to end a QEMU run with a status, and the multiboot1 and multiboot2 boot-information readers. Shared by the
//! loader and the kernel so neither carries its own copy.
#![cfg_attr(not(test), no_std)]

pub mod exit;
pub mod memfuncs;
pub mod multiboot;
pub mod multiboot2;
pub mod port;
