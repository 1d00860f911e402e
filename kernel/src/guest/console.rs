//! A guest's hypercall console: bytes in, whole sanitised lines out, so a guest cannot forge
//! a host line (no control characters, no escape sequences, never a line without its
//! domain's prefix) nor flood the serial console (a line budget per guest).

/// The longest line a guest prints; longer ones are split.
pub const LINE: usize = 100;
/// Lines a guest may print before the rest is suppressed (one notice says so).
pub const BUDGET: u32 = 200;

#[derive(Debug)]
pub struct GuestConsole {
    line: heapless::String<LINE>,
    printed: u32,
    suppressed: u64,
}

impl Default for GuestConsole {
    fn default() -> Self {
        Self::new()
    }
}

impl GuestConsole {
    pub const fn new() -> GuestConsole {
        GuestConsole {
            line: heapless::String::new(),
            printed: 0,
            suppressed: 0,
        }
    }

    /// Takes what the guest wrote; `emit` gets every completed line (without newline).
    pub fn write(&mut self, bytes: &[u8], emit: &mut dyn FnMut(&str)) {
        for &b in bytes {
            match b {
                b'\n' => self.end_line(emit),
                b'\r' => {}
                b'\t' => self.push(' ', emit),
                0x20..=0x7e => self.push(char::from(b), emit),
                _ => self.push('?', emit),
            }
        }
    }

    /// Ends a pending partial line (the guest stopped without a newline).
    pub fn flush(&mut self, emit: &mut dyn FnMut(&str)) {
        if !self.line.is_empty() {
            self.end_line(emit);
        }
    }

    /// Bytes the budget kept off the console.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }

    fn push(&mut self, c: char, emit: &mut dyn FnMut(&str)) {
        if self.line.push(c).is_err() {
            self.end_line(emit);
            let _ = self.line.push(c);
        }
    }

    fn end_line(&mut self, emit: &mut dyn FnMut(&str)) {
        if self.printed < BUDGET {
            emit(&self.line);
            self.printed += 1;
            if self.printed == BUDGET {
                emit("(further output from this guest is suppressed)");
            }
        } else {
            self.suppressed += self.line.len() as u64 + 1;
        }
        self.line.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(console: &mut GuestConsole, input: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        console.write(input, &mut |l| out.push(l.to_string()));
        out
    }

    #[test]
    fn lines_come_out_whole_across_writes() {
        let mut c = GuestConsole::new();
        assert!(run(&mut c, b"hello, ").is_empty());
        assert_eq!(run(&mut c, b"world\nnext"), ["hello, world"]);
        let mut out = Vec::new();
        c.flush(&mut |l| out.push(l.to_string()));
        assert_eq!(out, ["next"]);
    }

    #[test]
    fn control_characters_and_escapes_cannot_reach_the_console() {
        let mut c = GuestConsole::new();
        let out = run(&mut c, b"\x1b[31mRESULT boot pass\r\x07\tok\xff\n");
        assert_eq!(out, ["?[31mRESULT boot pass? ok?"]);
        assert!(out
            .iter()
            .all(|l| l.bytes().all(|b| (0x20..0x7f).contains(&b))));
    }

    #[test]
    fn long_lines_are_split() {
        let mut c = GuestConsole::new();
        let out = run(&mut c, &[b'x'; LINE * 2 + 5]);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|l| l.len() == LINE));
    }

    #[test]
    fn a_flood_is_cut_off_after_the_budget_with_one_notice() {
        let mut c = GuestConsole::new();
        let mut all = Vec::new();
        for _ in 0..BUDGET + 50 {
            all.extend(run(&mut c, b"spam\n"));
        }
        assert_eq!(all.len(), BUDGET as usize + 1);
        assert!(all.last().is_some_and(|l| l.contains("suppressed")));
        assert_eq!(c.suppressed(), 50 * 5);
    }
}
