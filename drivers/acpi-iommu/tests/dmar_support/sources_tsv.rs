//! Reading the free-text "notable features" column of `testdata/SOURCES.tsv`, e.g.
//! "rev 1, 400 bytes; 4 DRHD (1 INCLUDE_PCI_ALL), 3 RMRR; HAW 46; flags INTR_REMAP".

/// The number written just before `word` the first time it appears in `text` (0 if absent or
/// written as "no WORD").
pub fn count_of(text: &str, word: &str) -> usize {
    let tokens: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || ",;():".contains(c))
        .filter(|t| !t.is_empty())
        .collect();
    tokens
        .windows(2)
        .find(|w| w[1] == word && w[0].parse::<usize>().is_ok())
        .map_or(0, |w| w[0].parse().unwrap())
}

/// The token after `word` the first time it appears.
pub fn after<'t>(text: &'t str, word: &str) -> &'t str {
    let mut tokens = text
        .split(|c: char| c.is_whitespace() || ",;".contains(c))
        .filter(|t| !t.is_empty());
    tokens.find(|t| *t == word).unwrap();
    tokens.next().unwrap()
}

pub fn flag_bits(names: &str) -> u8 {
    if names == "none" {
        return 0;
    }
    names
        .split('|')
        .map(|n| match n {
            "INTR_REMAP" => 1,
            "X2APIC_OPT_OUT" => 2,
            "DMA_CTRL_OPT_IN" => 4,
            other => panic!("unknown flag {other} in SOURCES.tsv"),
        })
        .sum()
}
