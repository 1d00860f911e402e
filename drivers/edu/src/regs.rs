//! BAR0 register map of QEMU's `edu` device (QEMU `docs/specs/edu.txt` and `hw/misc/edu.c`, as
//! shipped in QEMU 7.2).
//!
//! Access sizes matter: QEMU ignores accesses below 0x80 that are not 32 bits wide and accesses
//! at or above 0x80 that are neither 32 nor 64 bits wide. The DMA registers hold 64-bit values,
//! and a 32-bit write to one of them replaces the whole value, so they are written with 64-bit
//! accesses.

/// Size of BAR0 (a 1 MiB memory BAR).
pub const BAR0_SIZE: usize = 1 << 20;

/// Identification, `0xRRrr00ed`: major version `RR`, minor version `rr`.
pub const IDENTIFICATION: usize = 0x00;
/// Liveness check: reads back the bitwise inverse of the last value written.
pub const LIVENESS: usize = 0x04;
/// Factorial: a write starts computing `n!` (ignored while computing); a read returns the result.
pub const FACTORIAL: usize = 0x08;
/// Status: [`STATUS_COMPUTING`] and [`STATUS_IRQ_ON_FACTORIAL`].
pub const STATUS: usize = 0x20;
/// Interrupt status: the raised interrupt causes ([`IRQ_FACTORIAL`], [`IRQ_DMA`], or any value
/// written to [`IRQ_RAISE`]).
pub const IRQ_STATUS: usize = 0x24;
/// Writing ORs the value into the interrupt status and raises the interrupt.
pub const IRQ_RAISE: usize = 0x60;
/// Writing clears those bits of the interrupt status (and lowers INTx once it is zero).
pub const IRQ_ACK: usize = 0x64;
/// DMA source address: RAM-side IOVA (RAM→edu) or device address (edu→RAM).
pub const DMA_SRC: usize = 0x80;
/// DMA destination address: device address (RAM→edu) or RAM-side IOVA (edu→RAM).
pub const DMA_DST: usize = 0x88;
/// DMA byte count.
pub const DMA_COUNT: usize = 0x90;
/// DMA command: [`CMD_START`], [`CMD_EDU_TO_RAM`], [`CMD_IRQ`].
pub const DMA_CMD: usize = 0x98;

/// The low byte of [`IDENTIFICATION`] on every edu revision.
pub const ID_MAGIC: u8 = 0xed;

/// [`STATUS`] bit 0: a factorial is being computed.
pub const STATUS_COMPUTING: u32 = 0x01;
/// [`STATUS`] bit 7: raise [`IRQ_FACTORIAL`] when a factorial is done.
pub const STATUS_IRQ_ON_FACTORIAL: u32 = 0x80;

/// Interrupt cause: a factorial finished.
pub const IRQ_FACTORIAL: u32 = 0x001;
/// Interrupt cause: a DMA started with [`CMD_IRQ`] finished.
pub const IRQ_DMA: u32 = 0x100;

/// [`DMA_CMD`] bit 0: written 1 to start; reads 1 while the transfer is pending. A write
/// without it is ignored, and while it is set, writes to all DMA registers are ignored.
pub const CMD_START: u64 = 1 << 0;
/// [`DMA_CMD`] bit 1: direction, 1 = from the device buffer to RAM, 0 = from RAM to the buffer.
pub const CMD_EDU_TO_RAM: u64 = 1 << 1;
/// [`DMA_CMD`] bit 2: raise [`IRQ_DMA`] when the transfer is done.
pub const CMD_IRQ: u64 = 1 << 2;

/// Device address of the DMA buffer.
pub const BUFFER_BASE: u64 = 0x40000;
/// Size of the DMA buffer.
pub const BUFFER_SIZE: usize = 4096;

/// QEMU runs a DMA from a timer armed this many milliseconds of virtual time after the start
/// command (`edu_dma_timer`); size DMA deadlines well above it (TCG's virtual clock follows
/// the host's, and a loaded host is slow).
pub const QEMU_DMA_LATENCY_MS: u64 = 100;

/// Where `[device_addr, device_addr + len)` starts inside the DMA buffer, if QEMU 7.2 accepts
/// the range.
///
/// QEMU 7.2's `edu_check_range` requires `start <= addr < end`, `addr + len > addr` and
/// `start <= addr + len < end` with `end = 0x41000`: the transfer must be non-empty and its
/// exclusive end must lie *strictly* inside the buffer, so the buffer's last byte can never be
/// transferred (at most 4095 bytes from offset 0). This off-by-one was fixed only in QEMU 9.0
/// (QEMU issue #1254). On failure QEMU 7.2 calls `hw_error`, which aborts the whole emulator.
pub const fn buffer_offset(device_addr: u64, len: u64) -> Option<usize> {
    let end = BUFFER_BASE + BUFFER_SIZE as u64;
    let Some(xfer_end) = device_addr.checked_add(len) else {
        return None;
    };
    let start_inside = BUFFER_BASE <= device_addr && device_addr < end;
    let end_inside = xfer_end > device_addr && BUFFER_BASE <= xfer_end && xfer_end < end;
    if start_inside && end_inside {
        Some((device_addr - BUFFER_BASE) as usize)
    } else {
        None
    }
}

/// The version in an identification value, if its low byte is [`ID_MAGIC`].
pub const fn decode_identification(id: u32) -> Option<Version> {
    if id as u8 != ID_MAGIC {
        return None;
    }
    Some(Version {
        major: (id >> 24) as u8,
        minor: (id >> 16) as u8,
    })
}

/// Device version from [`IDENTIFICATION`] (QEMU 7.2 reports 1.0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Version {
    pub major: u8,
    pub minor: u8,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_range_follows_qemu_7_2_off_by_one() {
        assert_eq!(buffer_offset(BUFFER_BASE, 1), Some(0));
        assert_eq!(buffer_offset(BUFFER_BASE, 4095), Some(0));
        assert_eq!(buffer_offset(BUFFER_BASE + 0x800, 0x7ff), Some(0x800));
        // The whole buffer, or anything touching its last byte, makes QEMU 7.2 abort.
        assert_eq!(buffer_offset(BUFFER_BASE, 4096), None);
        assert_eq!(buffer_offset(BUFFER_BASE + 4095, 1), None);
        assert_eq!(buffer_offset(BUFFER_BASE + 10, 0), None, "empty transfer");
        assert_eq!(buffer_offset(BUFFER_BASE - 1, 2), None);
        assert_eq!(buffer_offset(BUFFER_BASE + 4096, 1), None);
        assert_eq!(buffer_offset(u64::MAX, 2), None, "wrapping end");
    }

    #[test]
    fn identification_needs_the_magic_low_byte() {
        assert_eq!(
            decode_identification(0x0100_00ed),
            Some(Version { major: 1, minor: 0 })
        );
        assert_eq!(
            decode_identification(0x0203_00ed),
            Some(Version { major: 2, minor: 3 })
        );
        assert_eq!(decode_identification(0xffff_ffff), None);
        assert_eq!(decode_identification(0x0100_00ee), None);
    }
}
