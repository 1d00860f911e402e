//! A scenario's checks: each prints one `RESULT` line; the run fails if any failed.
use core::fmt;

use crate::console::result;

#[derive(Default)]
pub struct Checks {
    pub passed: usize,
    pub failed: usize,
}

impl Checks {
    pub fn check(&mut self, name: &str, pass: bool, details: fmt::Arguments) -> bool {
        result(name, pass, details);
        if pass {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
        pass
    }
}
