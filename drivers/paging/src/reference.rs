//! Reference walker for the tests, written from AMD APM vol. 2 §5.3.3 (4-Kbyte and 2-Mbyte
//! translation, figures 5-17 and 5-25) and §5.4.1 — sharing nothing with the builder.
//!
//! From the root it enumerates every present leaf with the rights of its whole path: R/W and
//! U/S are ANDed over the levels, NX is ORed (§5.6). Reserved bits it knows about (PS in a
//! PML4E, bits 20:13 of a 2 MiB PDE) are reported as errors.
use std::string::String;
use std::vec::Vec;

use lazaret_types::{PhysAddr, PhysMem};

const P: u64 = 0x1;
const RW: u64 = 0x2;
const US: u64 = 0x4;
const PWT: u64 = 0x8;
const PCD: u64 = 0x10;
const PS: u64 = 0x80;
const NX: u64 = 0x8000_0000_0000_0000;
const TABLE_ADDRESS: u64 = 0x000f_ffff_ffff_f000;
const BIG_PAGE_ADDRESS: u64 = 0x000f_ffff_ffe0_0000;
const BIG_PAGE_RESERVED: u64 = 0x001f_e000;

/// One translation the tables provide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    pub va: u64,
    pub pa: u64,
    pub size: u64,
    pub writable: bool,
    pub user: bool,
    pub no_execute: bool,
    pub pcd: bool,
    pub pwt: bool,
}

struct Path {
    writable: bool,
    user: bool,
    no_execute: bool,
}

/// Every present leaf under `root`, in address order.
pub fn leaves(mem: &dyn PhysMem, root: PhysAddr) -> Result<Vec<Leaf>, String> {
    let mut out = Vec::new();
    let path = Path {
        writable: true,
        user: true,
        no_execute: false,
    };
    visit(mem, root.0, 4, 0, &path, &mut out)?;
    Ok(out)
}

fn visit(
    mem: &dyn PhysMem,
    table: u64,
    level: u32,
    base: u64,
    path: &Path,
    out: &mut Vec<Leaf>,
) -> Result<(), String> {
    // Level 4: bits 47:39, level 3: 38:30, level 2: 29:21, level 1: 20:12.
    let span = 1u64 << (12 + 9 * (level - 1));
    for i in 0..512u64 {
        let e = mem.read_u64(PhysAddr(table + i * 8));
        if e & P == 0 {
            continue;
        }
        let va = base + i * span;
        let here = Path {
            writable: path.writable && e & RW != 0,
            user: path.user && e & US != 0,
            no_execute: path.no_execute || e & NX != 0,
        };
        let leaf = |pa: u64| Leaf {
            va,
            pa,
            size: span,
            writable: here.writable,
            user: here.user,
            no_execute: here.no_execute,
            pcd: e & PCD != 0,
            pwt: e & PWT != 0,
        };
        match level {
            4 if e & PS != 0 => return Err(format!("PS set in PML4E {i} of {table:#x}")),
            3 if e & PS != 0 => return Err(format!("1 GiB page at {va:#x}: never built")),
            2 if e & PS != 0 => {
                if e & BIG_PAGE_RESERVED != 0 {
                    return Err(format!("reserved bits in the 2 MiB PDE for {va:#x}"));
                }
                out.push(leaf(e & BIG_PAGE_ADDRESS));
            }
            1 => out.push(leaf(e & TABLE_ADDRESS)),
            _ => visit(mem, e & TABLE_ADDRESS, level - 1, va, &here, out)?,
        }
    }
    Ok(())
}

/// Where `va` lands, by walking (not by enumerating).
pub fn translate(mem: &dyn PhysMem, root: PhysAddr, va: u64) -> Option<u64> {
    let mut table = root.0;
    for level in (1..=4u32).rev() {
        let shift = 12 + 9 * (level - 1);
        let e = mem.read_u64(PhysAddr(table + ((va >> shift) & 0x1ff) * 8));
        if e & P == 0 {
            return None;
        }
        if level == 2 && e & PS != 0 {
            return Some((e & BIG_PAGE_ADDRESS) | (va & 0x1f_ffff));
        }
        if level == 1 {
            return Some((e & TABLE_ADDRESS) | (va & 0xfff));
        }
        table = e & TABLE_ADDRESS;
    }
    None
}
