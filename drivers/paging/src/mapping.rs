//! What to map, how, and what can go wrong.
use core::fmt;

use lazaret_types::PAGE_SIZE;

/// A PDE leaf (PS = 1) maps this much.
pub const LARGE_PAGE_SIZE: u64 = 2 << 20;
/// 4-level tables translate 48-bit addresses (APM vol. 2 §5.3.1).
const TRANSLATED_BITS: u32 = 48;
/// Entries hold 52-bit physical addresses (§5.4.1, bits 51:12).
const PHYSICAL_BITS: u32 = 52;

/// Memory type of a mapping, through the PAT index PCD/PWT select with PAT = 0 (APM vol. 2
/// §7.8.2): `WriteBack` is index 0 (WB at reset), `Uncached` index 3 (UC at reset). In nested
/// tables this is the host's type, combined with the guest's (§15.25.8): device BARs must be UC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cache {
    WriteBack,
    Uncached,
}

/// `len` bytes at guest-physical (or, for the guest's own tables, virtual) `gpa` map to
/// host-physical (guest-physical) `hpa`. All three are 4 KiB multiples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub gpa: u64,
    pub hpa: u64,
    pub len: u64,
    pub writable: bool,
    pub executable: bool,
    pub cache: Cache,
}

/// Which table format to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Nested page tables (§15.25.5): the walk is a user access, so U is set at every level
    /// (QEMU TCG checks it too).
    Nested,
    /// The guest's own tables: supervisor-only (U clear), its kernel runs at CPL 0.
    Guest,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub format: Format,
    /// Whether the walker runs with EFER.NXE (the host's for nested tables, the guest's for
    /// its own). Without it bit 63 is reserved (§5.4.1): a non-executable mapping is refused.
    pub nx_enabled: bool,
}

impl Config {
    pub const fn nested(nx_enabled: bool) -> Config {
        Config {
            format: Format::Nested,
            nx_enabled,
        }
    }

    pub const fn guest(nx_enabled: bool) -> Config {
        Config {
            format: Format::Guest,
            nx_enabled,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingError {
    /// No frame (or no heap for the page list); nothing stays allocated.
    OutOfMemory,
    /// Mapping `index` has a gpa, hpa or length that is not a multiple of 4 KiB.
    Misaligned { index: usize },
    /// Mapping `index` is empty.
    Empty { index: usize },
    /// Mapping `index` reaches beyond 48-bit gpa (47 bits for the guest's own tables: the
    /// lower canonical half) or 52-bit hpa.
    OutOfRange { index: usize },
    /// Mappings `first` and `second` cover the same gpa.
    Overlap { first: usize, second: usize },
    /// Mapping `index` is not executable but the walker has no EFER.NXE.
    NoExecuteUnavailable { index: usize },
    /// A table area handed out an address it cannot translate (a bug, reported not trusted).
    Inconsistent,
}

impl fmt::Display for PagingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PagingError::OutOfMemory => f.write_str("out of memory for page tables"),
            PagingError::Misaligned { index } => write!(f, "mapping {index} not 4 KiB aligned"),
            PagingError::Empty { index } => write!(f, "mapping {index} is empty"),
            PagingError::OutOfRange { index } => {
                write!(f, "mapping {index} beyond the tables' address width")
            }
            PagingError::Overlap { first, second } => {
                write!(f, "mappings {first} and {second} overlap")
            }
            PagingError::NoExecuteUnavailable { index } => {
                write!(f, "mapping {index} asks for NX, which the walker lacks")
            }
            PagingError::Inconsistent => f.write_str("table area returned a foreign page"),
        }
    }
}

impl Mapping {
    /// One past the last gpa, or `None` on overflow.
    pub(crate) fn gpa_end(&self) -> Option<u64> {
        self.gpa.checked_add(self.len)
    }

    fn check(&self, index: usize, config: Config) -> Result<(), PagingError> {
        if self.len == 0 {
            return Err(PagingError::Empty { index });
        }
        if [self.gpa, self.hpa, self.len]
            .iter()
            .any(|v| !v.is_multiple_of(PAGE_SIZE))
        {
            return Err(PagingError::Misaligned { index });
        }
        let gpa_bits = match config.format {
            Format::Nested => TRANSLATED_BITS,
            Format::Guest => TRANSLATED_BITS - 1,
        };
        let fits =
            |start: u64, bits: u32| start.checked_add(self.len).is_some_and(|e| e <= 1 << bits);
        if !fits(self.gpa, gpa_bits) || !fits(self.hpa, PHYSICAL_BITS) {
            return Err(PagingError::OutOfRange { index });
        }
        if !self.executable && !config.nx_enabled {
            return Err(PagingError::NoExecuteUnavailable { index });
        }
        Ok(())
    }
}

/// Checks every mapping and that no two overlap (quadratic, allocation-free: the lists are
/// a guest's RAM runs and BARs).
pub(crate) fn check_all(mappings: &[Mapping], config: Config) -> Result<(), PagingError> {
    for (i, m) in mappings.iter().enumerate() {
        m.check(i, config)?;
    }
    for (i, a) in mappings.iter().enumerate() {
        for (j, b) in mappings.iter().enumerate().skip(i + 1) {
            // Ends cannot overflow: checked above.
            if a.gpa < b.gpa_end().unwrap_or(u64::MAX) && b.gpa < a.gpa_end().unwrap_or(u64::MAX) {
                return Err(PagingError::Overlap {
                    first: i,
                    second: j,
                });
            }
        }
    }
    Ok(())
}
