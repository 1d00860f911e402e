//! The demo's voice: numbered phases, short indented lines, and a closing table — printed
//! straight to the console (not through the logger) so the story reads the same at the quiet
//! default log level, on a projector, as in CI.
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write as _;

use crate::console;

/// `== N. Title`: a phase heading (the demo runner makes it bold on a terminal).
pub fn phase(number: u32, title: &str) {
    console::print(format_args!("== {number}. {title}\n"));
}

/// One line of the story, indented under its phase.
pub fn say(line: core::fmt::Arguments) {
    console::print(format_args!("   {line}\n"));
}

/// A table with a heading row, columns as wide as their widest cell.
#[derive(Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headings: &[&str]) -> Table {
        Table {
            rows: alloc::vec![headings.iter().map(|h| String::from(*h)).collect()],
        }
    }

    pub fn row(&mut self, cells: &[&dyn core::fmt::Display]) {
        self.rows
            .push(cells.iter().map(|c| alloc::format!("{c}")).collect());
    }

    /// The table's lines: headings, a rule, the rows; cells left-aligned, two spaces apart.
    pub fn render(&self) -> Vec<String> {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let width = |c: usize| {
            self.rows
                .iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..columns).map(width).collect();
        let line = |cells: &[String]| {
            let mut out = String::new();
            for (i, w) in widths.iter().enumerate() {
                let cell = cells.get(i).map_or("", String::as_str);
                let _ = write!(out, "{cell:<w$}  ");
            }
            String::from(out.trim_end())
        };
        let mut out = Vec::with_capacity(self.rows.len() + 1);
        if let Some((head, body)) = self.rows.split_first() {
            out.push(line(head));
            out.push(
                widths
                    .iter()
                    .map(|w| "-".repeat(*w))
                    .collect::<Vec<_>>()
                    .join("  "),
            );
            out.extend(body.iter().map(|r| line(r)));
        }
        out
    }

    /// Prints the table under the current phase.
    pub fn print(&self) {
        for l in self.render() {
            say(format_args!("{l}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let mut t = Table::new(&["domain", "devices"]);
        t.row(&[&"guest-alpha", &1]);
        t.row(&[&"DomIO", &"00:02.0 00:03.0"]);
        assert_eq!(
            t.render(),
            [
                "domain       devices",
                "-----------  ---------------",
                "guest-alpha  1",
                "DomIO        00:02.0 00:03.0",
            ]
        );
    }

    #[test]
    fn short_rows_and_an_empty_table_render() {
        let mut t = Table::new(&["a", "b", "c"]);
        t.row(&[&"x"]);
        assert_eq!(t.render()[2], "x");
        assert!(Table::default().render().is_empty());
    }
}
