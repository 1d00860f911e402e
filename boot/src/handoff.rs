//! The multiboot1 information the loader hands the kernel, whatever the firmware gave it.
//!
//! The loader reads multiboot1 (QEMU `-kernel`, BIOS iPXE) or multiboot2 (GRUB, BIOS and
//! UEFI) and rebuilds one multiboot1 structure (Multiboot Specification 0.6.96, §3.3) in its
//! own memory, so the kernel has one reader and one module list for every boot path. The
//! RSDP, which multiboot1 cannot carry, goes on the command line as `acpi_rsdp=` (the name
//! Linux uses for the same purpose).
use lazaret_rt::multiboot::{Module, MultibootInfo, RegionKind, MAX_MODULES, MAX_REGIONS};

const FLAG_CMDLINE: u32 = 1 << 2;
const FLAG_MODS: u32 = 1 << 3;
const FLAG_MMAP: u32 = 1 << 6;

const MODULES_AT: usize = 64;
const MODULE_SIZE: usize = 16;
const MAP_AT: usize = MODULES_AT + MODULE_SIZE * MAX_MODULES;
const MAP_ENTRY_SIZE: usize = 24;

/// Bytes the rebuilt structure can need.
pub const SIZE: usize = MAP_AT + MAP_ENTRY_SIZE * MAX_REGIONS;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandoffError {
    /// Multiboot1 has 32-bit addresses: a module or string above 4 GiB cannot be described.
    Above4GiB(u64),
}

/// Writes the multiboot1 form of `info` into `out`, which the kernel will find at physical
/// address `base` (pointers inside are absolute). Modules for which `skip` holds (padding,
/// [`crate::cmdline::is_padding`]) are left out, so the kernel's module 0 is the kernel.
pub fn encode_v1(
    info: &MultibootInfo,
    base: u64,
    out: &mut [u8; SIZE],
    skip: impl Fn(&Module) -> bool,
) -> Result<(), HandoffError> {
    out.fill(0);
    let low = |a: u64| u32::try_from(a).map_err(|_| HandoffError::Above4GiB(a));
    let abs = |off: usize| low(base + off as u64);
    let mut put = |off: usize, bytes: &[u8]| out[off..off + bytes.len()].copy_from_slice(bytes);
    let mut flags = FLAG_MODS | FLAG_MMAP;
    if let Some(c) = info.cmdline {
        flags |= FLAG_CMDLINE;
        put(16, &low(c)?.to_le_bytes());
    }
    put(0, &flags.to_le_bytes());
    let mut count = 0u32;
    put(24, &abs(MODULES_AT)?.to_le_bytes());
    for (i, m) in info.modules().iter().filter(|m| !skip(m)).enumerate() {
        count += 1;
        let at = MODULES_AT + i * MODULE_SIZE;
        put(at, &low(m.start)?.to_le_bytes());
        put(at + 4, &low(m.end)?.to_le_bytes());
        put(at + 8, &low(m.string)?.to_le_bytes());
    }
    put(20, &count.to_le_bytes());
    put(
        44,
        &((info.regions().len() * MAP_ENTRY_SIZE) as u32).to_le_bytes(),
    );
    put(48, &abs(MAP_AT)?.to_le_bytes());
    for (i, r) in info.regions().iter().enumerate() {
        let at = MAP_AT + i * MAP_ENTRY_SIZE;
        // `size` counts the entry without itself (§3.3).
        put(at, &((MAP_ENTRY_SIZE - 4) as u32).to_le_bytes());
        put(at + 4, &r.base.to_le_bytes());
        put(at + 12, &r.len.to_le_bytes());
        put(at + 20, &kind_v1(r.kind).to_le_bytes());
    }
    Ok(())
}

/// The multiboot1 `type` of a memory-map entry (§3.3).
fn kind_v1(kind: RegionKind) -> u32 {
    match kind {
        RegionKind::Available => 1,
        RegionKind::Reserved => 2,
        RegionKind::AcpiReclaimable => 3,
        RegionKind::AcpiNvs => 4,
        RegionKind::Defective => 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lazaret_rt::multiboot::BootMemory;

    /// Bytes seen at physical address `.0` onwards.
    struct At(u64, Vec<u8>);

    impl BootMemory for At {
        fn u32(&self, addr: u64) -> u32 {
            let a = (addr - self.0) as usize;
            u32::from_le_bytes(self.1[a..a + 4].try_into().expect("4 bytes"))
        }
    }

    /// Multiboot2 information with a command line, two modules and a map, for the round trip.
    fn multiboot2_sample() -> Vec<u8> {
        let mut b = vec![0u8; 8];
        let mut tag = |kind: u32, payload: &[u8]| {
            b.extend(kind.to_le_bytes());
            b.extend((8 + payload.len() as u32).to_le_bytes());
            b.extend(payload);
            while !b.len().is_multiple_of(8) {
                b.push(0);
            }
        };
        tag(1, b"/boot/lazaret-boot log=debug\0");
        let mut module = 0x20_0000u32.to_le_bytes().to_vec();
        module.extend(0x30_0000u32.to_le_bytes());
        module.extend(b"kernel\0");
        tag(3, &module);
        let mut guest = 0x30_0000u32.to_le_bytes().to_vec();
        guest.extend(0x30_2000u32.to_le_bytes());
        guest.extend(b"guest tiny\0");
        tag(3, &guest);
        let mut map = 24u32.to_le_bytes().to_vec();
        map.extend(0u32.to_le_bytes());
        for (base, len, kind) in [
            (0u64, 0x9fc00u64, 1u32),
            (0x10_0000, 0x7e0_0000, 1),
            (0x7f0_0000, 0x10_0000, 4),
            (0x1_0000_0000, 0x4000_0000, 1),
        ] {
            map.extend(base.to_le_bytes());
            map.extend(len.to_le_bytes());
            map.extend(kind.to_le_bytes());
            map.extend(0u32.to_le_bytes());
        }
        tag(6, &map);
        tag(0, &[]);
        let total = b.len() as u32;
        b[..4].copy_from_slice(&total.to_le_bytes());
        b
    }

    #[test]
    fn the_kernel_reads_back_what_multiboot2_said() {
        let original =
            MultibootInfo::read_v2_from(&At(0x9000, multiboot2_sample()), 0x9000).expect("valid");
        let mut out = Box::new([0u8; SIZE]);
        encode_v1(&original, 0x10_4000, &mut out, |_| false).expect("fits below 4 GiB");
        let seen =
            MultibootInfo::read_from(&At(0x10_4000, out.to_vec()), 0x10_4000).expect("valid v1");
        assert_eq!(seen.modules(), original.modules());
        assert_eq!(seen.modules().len(), 2);
        assert_eq!(seen.regions(), original.regions());
        assert_eq!(seen.regions()[2].kind, RegionKind::AcpiNvs);
        assert_eq!(seen.cmdline, original.cmdline);
        assert_eq!(seen.top_of_ram(), 0x1_4000_0000);
    }

    #[test]
    fn padding_modules_are_left_out_and_the_rest_keep_their_order() {
        let original =
            MultibootInfo::read_v2_from(&At(0x9000, multiboot2_sample()), 0x9000).expect("valid");
        let mut out = Box::new([0u8; SIZE]);
        let first = original.modules()[0];
        encode_v1(&original, 0x10_4000, &mut out, |m| *m == first).expect("fits");
        let seen = MultibootInfo::read_from(&At(0x10_4000, out.to_vec()), 0x10_4000).expect("v1");
        assert_eq!(seen.modules(), &original.modules()[1..]);
    }

    #[test]
    fn refuses_what_multiboot1_cannot_address() {
        // Multiboot2 module addresses are 32-bit already; the structure's own place is not.
        let original =
            MultibootInfo::read_v2_from(&At(0x9000, multiboot2_sample()), 0x9000).expect("valid");
        let mut out = Box::new([0u8; SIZE]);
        assert_eq!(
            encode_v1(&original, 0x1_0000_0000, &mut out, |_| false),
            Err(HandoffError::Above4GiB(0x1_0000_0000 + MODULES_AT as u64))
        );
    }
}
