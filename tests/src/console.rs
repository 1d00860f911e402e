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

#[cfg(test)]
mod tests {
    use super::*;

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
