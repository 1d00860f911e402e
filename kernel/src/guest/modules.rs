//! The guest images the boot loader brought: every multiboot module after module 0 (the
//! kernel) whose string names a guest (`spec::parse`). Their bytes stay where the loader put
//! them, below the kernel, in memory the frame allocator never hands out.
use alloc::string::String;
use alloc::vec::Vec;

use lazaret_rt::multiboot::{c_string, Module};

use super::lifecycle::GuestImage;
use super::spec::{self, SpecError};

pub fn collect(modules: &[Module]) -> Vec<GuestImage> {
    let mut out = Vec::new();
    for (i, m) in modules.iter().enumerate().skip(1) {
        let line = match m.string {
            0 => String::new(),
            // SAFETY: the loader's module string, NUL-terminated, in identity-mapped RAM
            // below the kernel; `c_string` bounds its length.
            addr => match unsafe { c_string(addr) } {
                Ok(b) => String::from_utf8_lossy(b).into_owned(),
                Err(e) => {
                    log::warn!("module {i}: unreadable string ({e}); ignored");
                    continue;
                }
            },
        };
        match spec::parse(&line) {
            Ok(_) => {}
            Err(SpecError::NotAGuest) => {
                log::info!("module {i} (\"{line}\") is not a guest image; ignored");
                continue;
            }
            // A guest module with a bad string is kept: the scenario refuses it with its reason.
            Err(e) => log::warn!("module {i} (\"{line}\"): {e}"),
        }
        let Some(len) = m
            .end
            .checked_sub(m.start)
            .and_then(|l| usize::try_from(l).ok())
        else {
            log::warn!("module {i}: its end lies before its start; ignored");
            continue;
        };
        // SAFETY: the module's bytes as the loader placed them: identity-mapped RAM below the
        // kernel that nothing else owns or writes for the rest of the run.
        let bytes = unsafe { core::slice::from_raw_parts(m.start as *const u8, len) };
        out.push(GuestImage { line, bytes });
    }
    out
}
