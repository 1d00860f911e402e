//! The structured console lines the kernel prints (documented in the README):
//! `RESULT <name> pass|fail <details>` and `FIGURE <name> <value> <unit>`.

/// Strips carriage returns and terminal escape sequences (SeaBIOS clears the screen).
pub fn clean(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                // ESC [ ... final byte (@ to ~), or ESC + one character.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for n in chars.by_ref() {
                        if ('@'..='~').contains(&n) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultLine {
    pub name: String,
    pub pass: bool,
    pub details: String,
}

impl ResultLine {
    pub fn parse(line: &str) -> Option<ResultLine> {
        let rest = line.strip_prefix("RESULT ")?;
        let mut words = rest.splitn(3, ' ');
        let name = words.next()?.to_string();
        let pass = match words.next()? {
            "pass" => true,
            "fail" => false,
            _ => return None,
        };
        Some(ResultLine {
            name,
            pass,
            details: words.next().unwrap_or("").to_string(),
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
}

impl Figure {
    pub fn parse(line: &str) -> Option<Figure> {
        let mut words = line.strip_prefix("FIGURE ")?.split_whitespace();
        let name = words.next()?.to_string();
        let value = words.next()?.parse().ok()?;
        let unit = words.next()?.to_string();
        Some(Figure { name, value, unit })
    }
}

/// A console line as the demo shows it on a terminal: RESULT verdicts green or red, phase
/// headings (`== …`) bold, warnings and errors coloured. Only ever applied when stdout is a
/// terminal and `NO_COLOR` is unset; the kernel's own bytes never carry escapes (`clean`).
pub fn paint(line: &str) -> String {
    const GREEN: &str = "\x1b[32m";
    const RED: &str = "\x1b[1;31m";
    const BOLD: &str = "\x1b[1m";
    const YELLOW: &str = "\x1b[33m";
    const RESET: &str = "\x1b[0m";
    if let Some(r) = ResultLine::parse(line) {
        let (colour, verdict) = if r.pass {
            (GREEN, "pass")
        } else {
            (RED, "FAIL")
        };
        return format!("RESULT {} {colour}{verdict}{RESET} {}", r.name, r.details);
    }
    if line.starts_with("==") {
        return format!("{BOLD}{line}{RESET}");
    }
    if line.contains(" ERROR ") || line.starts_with("LAZARET EXIT failure") {
        return format!("{RED}{line}{RESET}");
    }
    if line.contains(" WARN ") {
        return format!("{YELLOW}{line}{RESET}");
    }
    line.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paint_colours_verdicts_and_headings_and_nothing_else() {
        assert_eq!(
            paint("RESULT boot pass all good"),
            "RESULT boot \x1b[32mpass\x1b[0m all good"
        );
        assert!(paint("RESULT boot fail no").contains("\x1b[1;31mFAIL\x1b[0m"));
        assert_eq!(paint("== 2. quarantine"), "\x1b[1m== 2. quarantine\x1b[0m");
        assert_eq!(paint("plain text"), "plain text");
        assert_eq!(
            clean(paint("RESULT a pass b").as_bytes()),
            "RESULT a pass b"
        );
    }

    #[test]
    fn cleans_escape_sequences_and_carriage_returns() {
        assert_eq!(clean(b"\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS\r"), "SeaBIOS");
    }

    #[test]
    fn parses_structured_lines() {
        assert_eq!(
            ResultLine::parse("RESULT boot pass all stages done"),
            Some(ResultLine {
                name: "boot".into(),
                pass: true,
                details: "all stages done".into()
            })
        );
        assert_eq!(ResultLine::parse("RESULT x maybe"), None);
        assert_eq!(ResultLine::parse("[ 1.0] INFO RESULT"), None);
        assert_eq!(
            Figure::parse("FIGURE boot-to-ready 46.341 ms"),
            Some(Figure {
                name: "boot-to-ready".into(),
                value: 46.341,
                unit: "ms".into()
            })
        );
        assert_eq!(Figure::parse("FIGURE x y ms"), None);
    }
}
