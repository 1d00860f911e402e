//! Validation of a DMA request into the register values that start it.
//!
//! Every check happens before the device is touched, because the device itself either kills
//! the emulator (device-side range, QEMU 7.2 `hw_error`) or silently redirects the transfer
//! (RAM-side address, `edu_clamp_addr` masks it with `dma_mask`).

use crate::regs::{self, CMD_EDU_TO_RAM, CMD_IRQ, CMD_START};
use crate::EduError;

/// Which way a DMA copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmaDirection {
    /// From RAM (at an IOVA) into the device buffer: command bit 1 clear.
    RamToEdu,
    /// From the device buffer to RAM (at an IOVA): command bit 1 set.
    EduToRam,
}

/// The RAM-side addresses the device can emit: QEMU's `dma_mask` property, `(1 << 28) - 1` by
/// default (`edu_instance_init`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaMask(u64);

impl DmaMask {
    /// Address bits of QEMU's default `dma_mask`.
    pub const DEFAULT_BITS: u32 = 28;
    /// QEMU's default: IOVAs below 256 MiB.
    pub const DEFAULT: DmaMask = DmaMask((1 << Self::DEFAULT_BITS) - 1);

    /// A mask of the low `bits` address bits (1 to 64).
    pub const fn from_bits(bits: u32) -> Result<DmaMask, EduError> {
        if bits == 0 || bits > 64 {
            return Err(EduError::InvalidDmaMaskBits(bits));
        }
        Ok(DmaMask(u64::MAX >> (64 - bits)))
    }

    pub const fn value(self) -> u64 {
        self.0
    }

    /// Whether every byte of `[iova, iova + len)` is reachable without clamping. QEMU masks
    /// only the start address and lets the transfer run on from there, so the whole range is
    /// checked, not just its start.
    pub const fn covers(self, iova: u64, len: u64) -> bool {
        if len == 0 {
            return iova <= self.0;
        }
        match iova.checked_add(len - 1) {
            Some(last) => last <= self.0,
            None => false,
        }
    }
}

impl Default for DmaMask {
    fn default() -> DmaMask {
        DmaMask::DEFAULT
    }
}

/// The four DMA register values that carry out one validated request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DmaProgram {
    pub src: u64,
    pub dst: u64,
    pub count: u64,
    pub cmd: u64,
}

/// Checks a request and encodes it, or says why the device must not see it.
pub(crate) fn program(
    dir: DmaDirection,
    iova: u64,
    edu_offset: usize,
    len: usize,
    mask: DmaMask,
    irq_when_done: bool,
) -> Result<DmaProgram, EduError> {
    if len == 0 {
        return Err(EduError::EmptyTransfer);
    }
    let out_of_buffer = EduError::BufferRange {
        offset: edu_offset,
        len,
    };
    let device_addr = (edu_offset as u64)
        .checked_add(regs::BUFFER_BASE)
        .ok_or(out_of_buffer)?;
    if regs::buffer_offset(device_addr, len as u64).is_none() {
        return Err(out_of_buffer);
    }
    if !mask.covers(iova, len as u64) {
        return Err(EduError::IovaOutOfRange {
            iova,
            len,
            mask: mask.value(),
        });
    }
    let irq = if irq_when_done { CMD_IRQ } else { 0 };
    let (src, dst, dir_bit) = match dir {
        DmaDirection::RamToEdu => (iova, device_addr, 0),
        DmaDirection::EduToRam => (device_addr, iova, CMD_EDU_TO_RAM),
    };
    Ok(DmaProgram {
        src,
        dst,
        count: len as u64,
        cmd: CMD_START | dir_bit | irq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_bits_are_validated() {
        assert_eq!(DmaMask::from_bits(28), Ok(DmaMask::DEFAULT));
        assert_eq!(DmaMask::from_bits(64).map(DmaMask::value), Ok(u64::MAX));
        assert_eq!(DmaMask::from_bits(1).map(DmaMask::value), Ok(1));
        assert_eq!(DmaMask::from_bits(0), Err(EduError::InvalidDmaMaskBits(0)));
        assert_eq!(
            DmaMask::from_bits(65),
            Err(EduError::InvalidDmaMaskBits(65))
        );
    }

    #[test]
    fn mask_covers_whole_ranges_only() {
        let m = DmaMask::DEFAULT;
        assert!(m.covers(0, 1 << 28));
        assert!(m.covers((1 << 28) - 16, 16));
        assert!(!m.covers((1 << 28) - 16, 17), "tail crosses 256 MiB");
        assert!(!m.covers(1 << 28, 1));
        let all = DmaMask::from_bits(64).unwrap();
        assert!(all.covers(u64::MAX, 1));
        assert!(!all.covers(u64::MAX, 2), "wraps around");
    }

    #[test]
    fn directions_put_the_iova_on_the_ram_side() {
        let to_ram = program(
            DmaDirection::EduToRam,
            0x5000,
            0x10,
            0x20,
            DmaMask::DEFAULT,
            true,
        );
        assert_eq!(
            to_ram,
            Ok(DmaProgram {
                src: regs::BUFFER_BASE + 0x10,
                dst: 0x5000,
                count: 0x20,
                cmd: CMD_START | CMD_EDU_TO_RAM | CMD_IRQ,
            })
        );
        let from_ram = program(
            DmaDirection::RamToEdu,
            0x5000,
            0,
            8,
            DmaMask::DEFAULT,
            false,
        );
        assert_eq!(
            from_ram,
            Ok(DmaProgram {
                src: 0x5000,
                dst: regs::BUFFER_BASE,
                count: 8,
                cmd: CMD_START,
            })
        );
    }

    #[test]
    fn bad_requests_are_refused_with_the_reason() {
        let m = DmaMask::DEFAULT;
        let dir = DmaDirection::EduToRam;
        assert_eq!(
            program(dir, 0, 0, 0, m, false),
            Err(EduError::EmptyTransfer)
        );
        assert_eq!(
            program(dir, 0, 0, 4096, m, false),
            Err(EduError::BufferRange {
                offset: 0,
                len: 4096
            })
        );
        assert_eq!(
            program(dir, 0, usize::MAX, 1, m, false),
            Err(EduError::BufferRange {
                offset: usize::MAX,
                len: 1
            })
        );
        assert_eq!(
            program(dir, 1 << 28, 0, 1, m, false),
            Err(EduError::IovaOutOfRange {
                iova: 1 << 28,
                len: 1,
                mask: (1 << 28) - 1
            })
        );
        let wide = DmaMask::from_bits(32).unwrap();
        assert!(program(dir, 1 << 28, 0, 1, wide, false).is_ok());
    }
}
