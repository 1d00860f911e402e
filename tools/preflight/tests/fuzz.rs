//! A bounded, deterministic fuzz run of both parsers, the defect checks, the reports and their
//! Display/JSON, seeded from the 28 real tables (`cargo fuzz` needs nightly). Mutations: bit
//! flips, byte sets, truncations, length-field corruption, splices of two real tables, chunk
//! duplication; most results are re-sealed (length field and checksum fixed) so they get past
//! the header checks into the structure walks. Bounded by execution count, never by time.
//!
//! `LAZARET_FUZZ_EXECUTIONS=1000000 cargo test -p lazaret-preflight --release --test fuzz --
//! --nocapture` runs longer; the seed is `LAZARET_FUZZ_SEED` (default fixed).
mod support;

use acpi_iommu::sdt::fix_checksum;
use acpi_iommu::{Dmar, Ivrs};
use lazaret_preflight::{report_bytes, text::render};
use support::real_tables;

/// Enough to reach every check many times; well under 20 s in a debug build on 2 cores.
const DEFAULT_EXECUTIONS: u64 = 80_000;
const DEFAULT_SEED: u64 = 0x1a2a_7e7f_00d5_eed5;

/// splitmix64: small, fast, and the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `0..n`; `n` > 0.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A real table and where its length fields are: (offset, width in bytes).
struct Seed {
    bytes: Vec<u8>,
    length_fields: Vec<(usize, usize)>,
}

/// Length fields of a valid table: the header's, each structure's / block's (u16 at +2), each
/// DMAR scope's (u8 at +1) and each IVHD entry's type byte (it sets the entry size).
fn length_fields(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = vec![(4, 4)];
    if let Ok(dmar) = Dmar::parse(bytes) {
        for s in dmar.structures() {
            out.push((s.offset() + 2, 2));
            out.extend(
                s.scopes()
                    .into_iter()
                    .flatten()
                    .map(|sc| (sc.offset + 1, 1)),
            );
        }
    } else if let Ok(ivrs) = Ivrs::parse(bytes) {
        for h in ivrs.ivhds() {
            out.push((h.offset + 2, 2));
            out.extend(h.entries.iter().map(|e| (e.offset, 1)));
        }
        out.extend(ivrs.ivmds().map(|m| (m.offset + 2, 2)));
    }
    out
}

const INTERESTING: [u64; 10] = [0, 1, 2, 3, 4, 6, 8, 0x7f, 0xff, 0xffff];

fn mutate(rng: &mut Rng, seeds: &[Seed]) -> Vec<u8> {
    let seed = &seeds[rng.below(seeds.len())];
    let mut t = seed.bytes.clone();
    for _ in 0..1 + rng.below(4) {
        if t.is_empty() {
            break;
        }
        match rng.below(7) {
            0 => {
                let i = rng.below(t.len());
                t[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(t.len());
                t[i] =
                    INTERESTING[rng.below(INTERESTING.len())] as u8 ^ (rng.below(2) as u8 * 0x80);
            }
            2 => t.truncate(rng.below(t.len() + 1)),
            3 | 4 => {
                let (at, width) = seed.length_fields[rng.below(seed.length_fields.len())];
                let value = match rng.below(3) {
                    0 => INTERESTING[rng.below(INTERESTING.len())],
                    1 => rng.next(),
                    _ => t.get(at).map_or(0, |&b| {
                        u64::from(b)
                            .wrapping_add(rng.below(5) as u64)
                            .wrapping_sub(2)
                    }),
                };
                for (k, byte) in value.to_le_bytes().iter().take(width).enumerate() {
                    if let Some(slot) = t.get_mut(at + k) {
                        *slot = *byte;
                    }
                }
            }
            5 => {
                // Splice: this table's head, another table's tail (same signature or not).
                let other = &seeds[rng.below(seeds.len())].bytes;
                let head = rng.below(t.len() + 1);
                let tail = rng.below(other.len() + 1);
                t.truncate(head);
                t.extend_from_slice(&other[tail..]);
            }
            _ => {
                let start = rng.below(t.len());
                let end = (start + 1 + rng.below(32)).min(t.len());
                let chunk = t[start..end].to_vec();
                let at = rng.below(t.len() + 1);
                t.splice(at..at, chunk);
            }
        }
    }
    if rng.below(8) != 0 && t.len() >= 10 {
        let len = t.len() as u32;
        t[4..8].copy_from_slice(&len.to_le_bytes());
        fix_checksum(&mut t);
    }
    t
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn fuzz_parsers_defects_and_reports() {
    let executions = env_u64("LAZARET_FUZZ_EXECUTIONS", DEFAULT_EXECUTIONS);
    let mut rng = Rng(env_u64("LAZARET_FUZZ_SEED", DEFAULT_SEED));
    let seeds: Vec<Seed> = real_tables()
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).unwrap();
            Seed {
                length_fields: length_fields(&bytes),
                bytes,
            }
        })
        .collect();
    let (mut parsed, mut dmar, mut warned, mut fatal) = (0u64, 0u64, 0u64, 0u64);
    for _ in 0..executions {
        let input = mutate(&mut rng, &seeds);
        // Through the tool's library: parse, defect checks, report, text and JSON.
        let Ok(report) = report_bytes("fuzz", &input) else {
            continue;
        };
        parsed += 1;
        dmar += u64::from(report.signature == "DMAR");
        warned += u64::from(!report.warnings.is_empty());
        fatal += u64::from(!report.can_run);
        assert!(render(&report).contains("VERDICT: Lazaret"));
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(
            serde_json::from_str::<lazaret_preflight::TableReport>(&json).unwrap(),
            report
        );
        // The parsers' own listings.
        if let Ok(t) = Dmar::parse(&input) {
            assert!(!t.to_string().is_empty());
        } else if let Ok(t) = Ivrs::parse(&input) {
            assert!(!t.to_string().is_empty());
        }
    }
    println!(
        "fuzz: {executions} executions, {parsed} inputs parsed ({dmar} DMAR, {} IVRS), \
         {warned} with warnings, {fatal} where Lazaret cannot run",
        parsed - dmar
    );
    // The mutator must reach past the header checks often, or the run proves little.
    assert!(
        parsed * 20 > executions,
        "only {parsed} of {executions} inputs parsed"
    );
    assert!(warned > 0 && fatal > 0);
}
