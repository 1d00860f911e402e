//! The hypercall console: `core::fmt` output gathered into lines, each line sent with one
//! `HC_CONSOLE_WRITE` (Lazaret prefixes every call with the domain's name, so one call per
//! line keeps the log readable). A line longer than one call carries is split at a character
//! boundary, so each call is valid UTF-8 on its own.

use core::fmt;

use lazaret_guest_abi::hypercall::CONSOLE_WRITE_MAX;

use crate::Platform;

pub struct Console<'p, P: Platform> {
    platform: &'p P,
    line: [u8; CONSOLE_WRITE_MAX],
    len: usize,
    /// Calls Lazaret refused (a bad gpa would be our bug; counted, never fatal).
    pub refused: u32,
}

impl<'p, P: Platform> Console<'p, P> {
    pub fn new(platform: &'p P) -> Console<'p, P> {
        Console {
            platform,
            line: [0; CONSOLE_WRITE_MAX],
            len: 0,
            refused: 0,
        }
    }

    /// Sends what is buffered (without a newline of its own: the caller's text decides).
    pub fn flush(&mut self) {
        if self.len == 0 {
            return;
        }
        let rax = self.platform.console_write(&self.line[..self.len]);
        if rax != lazaret_guest_abi::hypercall::HC_OK {
            self.refused = self.refused.saturating_add(1);
        }
        self.len = 0;
    }

    fn push_char(&mut self, c: char) {
        let mut utf8 = [0; 4];
        let bytes = c.encode_utf8(&mut utf8).as_bytes();
        if self.len + bytes.len() > self.line.len() {
            self.flush();
        }
        self.line[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
        if c == '\n' {
            self.flush();
        }
    }
}

impl<P: Platform> fmt::Write for Console<'_, P> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            self.push_char(c);
        }
        Ok(())
    }
}

impl<P: Platform> Drop for Console<'_, P> {
    fn drop(&mut self) {
        self.flush();
    }
}
