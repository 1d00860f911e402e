//! Random damage to real DMAR tables: parsing never panics or hangs, and whatever parses
//! can be walked, printed and resolved without panicking.
mod dmar_support;

use std::sync::OnceLock;

use acpi_iommu::dmar::{covering_unit, Dmar, ResolvedScope, ResolvedUnit};
use dmar_support::{real_tables, reseal};
use lazaret_types::{Bdf, Sbdf};
use proptest::prelude::*;

fn tables() -> &'static [(String, Vec<u8>)] {
    static TABLES: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    TABLES.get_or_init(real_tables)
}

/// Everything a consumer can do with a parsed table.
fn exercise(dmar: &Dmar<'_>, len: usize) {
    let mut previous_end = 48;
    for structure in dmar.structures() {
        assert!(structure.offset() >= previous_end && structure.offset() < len);
        previous_end = structure.offset() + 4;
        for scope in structure.scopes().into_iter().flatten() {
            assert!(scope.offset > structure.offset() && scope.offset + 6 < len);
            assert!(scope.path().len() >= 1);
            let _ = scope.resolve(|b| Some(b.bus().wrapping_add(1)));
            let _ = ResolvedScope::resolve(&scope, |b| Some((b.bus(), b.bus().wrapping_add(3))));
        }
    }
    for andd in dmar.andds() {
        let _ = andd.name();
    }
    let units = dmar.resolve_units(|b| Some((b.bus().wrapping_add(1), b.bus().wrapping_add(4))));
    for bus in [0u8, 1, 0x80, 0xff] {
        let device = Sbdf::new(0, Bdf::new(bus, 0, 0).unwrap());
        if let Some(i) = covering_unit(units.iter().map(ResolvedUnit::unit_scopes), device) {
            assert!(i < units.len());
        }
    }
    let _ = dmar.to_string();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Overwrite a few bytes past the ACPI header, optionally truncate, and (usually) repair
    /// length and checksum so the damage reaches the structure parser.
    #[test]
    fn damaged_real_tables_never_panic(
        which in 0usize..17,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in prop::option::of(any::<prop::sample::Index>()),
        repair in prop::bool::weighted(0.9),
    ) {
        let mut t = tables()[which].1.clone();
        for (at, value) in &edits {
            let i = 36 + at.index(t.len() - 36);
            t[i] = *value;
        }
        if let Some(cut) = cut {
            t.truncate(cut.index(t.len() + 1));
        }
        if repair && t.len() >= 10 {
            reseal(&mut t);
        }
        if let Ok(dmar) = Dmar::parse(&t) {
            exercise(&dmar, t.len());
        }
    }

    /// Arbitrary bytes behind a valid DMAR header.
    #[test]
    fn random_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut t = tables()[0].1[..48].to_vec();
        t.extend(body);
        reseal(&mut t);
        if let Ok(dmar) = Dmar::parse(&t) {
            exercise(&dmar, t.len());
        }
    }
}
