//! Command buffer (AMD IOMMU spec §2.4): a ring of 16-byte commands in memory; software
//! writes commands at the tail and moves the Command Buffer Tail register, the IOMMU executes
//! from the head and moves the Head register (§3.4.7).
//!
//! Commands between two COMPLETION_WAITs may complete in any order (§2.4); a COMPLETION_WAIT
//! "does not finish until all older commands issued since a prior COMPLETION_WAIT have
//! completely executed" (§2.4.1) and younger commands wait for it. [`crate::switch`] orders
//! owner-switch batches with that; this module only moves commands and polls one store.
//!
//! A command the IOMMU refuses (ILLEGAL_COMMAND_ERROR, COMMAND_HARDWARE_ERROR, §2.5.5/§2.5.6)
//! stops the command processor: Status.CmdBufRun drops while CmdBufEn stays set, and the head
//! register stays on the offending command. Waits watch for that and report
//! [`CommandError::ProcessorStopped`] at once instead of timing out; the unit restarts the
//! ring ([`crate::AmdViUnit`]).

use core::fmt;

use lazaret_types::{Mmio, PhysAddr, PhysMem};

use crate::poll::{poll_until, Clock, TimedOut};
use crate::regs::{self, status, RingLength, RING_POINTER_MASK};

/// Bytes per command.
pub const COMMAND_BYTES: u64 = 16;

/// Opcodes, bits 63:60 of the first quadword (§2.4, Table "Command Codes").
pub mod opcode {
    pub const COMPLETION_WAIT: u8 = 0x01;
    pub const INVALIDATE_DEVTAB_ENTRY: u8 = 0x02;
    pub const INVALIDATE_IOMMU_PAGES: u8 = 0x03;
    pub const INVALIDATE_INTERRUPT_TABLE: u8 = 0x05;
    pub const INVALIDATE_IOMMU_ALL: u8 = 0x08;
}

/// INVALIDATE_IOMMU_PAGES address with S = 1 meaning "every page" (§2.4.3: all address bits
/// 62:12 set, bit 63 clear).
pub const ALL_PAGES_ADDRESS: u64 = 0x7fff_ffff_ffff_f000;

/// Which translations of a domain INVALIDATE_IOMMU_PAGES drops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageScope {
    /// Every cached translation of the domain (S = 1, address [`ALL_PAGES_ADDRESS`]).
    All,
    /// The 4 KiB page at this IOVA (S = 0).
    Page(u64),
    /// The 2 MiB page at this (2 MiB aligned) IOVA: S = 1 with address bits 19:12 set and
    /// bit 20 clear, a naturally aligned 2^(13 + 8) byte range (§2.4.3).
    Large(u64),
}

/// Address bits 19:12: with S = 1, eight ones above bit 12 name a 2 MiB range.
const LARGE_RANGE_BITS: u64 = 0xff << 12;

/// The commands this driver issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// §2.4.1: with `store`, writes the 64-bit value to the 8-byte aligned address (S = 1)
    /// once every older command has completed; `interrupt` sets Status.ComWaitInt (I = 1).
    CompletionWait {
        store: Option<(PhysAddr, u64)>,
        interrupt: bool,
    },
    /// §2.4.2: drop the cached DTE of DeviceID.
    InvalidateDevtabEntry { device_id: u16 },
    /// §2.4.3: drop cached translations (and, PDE = 1, page-directory entries) of a domain.
    InvalidateIommuPages { domain_id: u16, scope: PageScope },
    /// §2.4.5: drop the cached interrupt remapping entries of DeviceID (bits 15:0).
    InvalidateInterruptTable { device_id: u16 },
    /// §2.4.8: drop everything cached (only when EFR.IASup).
    InvalidateIommuAll,
}

const fn op(code: u8) -> u64 {
    (code as u64) << 60
}

impl Command {
    /// The two little-endian quadwords of the command.
    pub const fn encode(&self) -> [u64; 2] {
        match *self {
            Command::CompletionWait { store, interrupt } => {
                let i = if interrupt { 1 << 1 } else { 0 };
                match store {
                    Some((addr, value)) => [
                        op(opcode::COMPLETION_WAIT) | (addr.0 & 0x000f_ffff_ffff_fff8) | 1 | i,
                        value,
                    ],
                    None => [op(opcode::COMPLETION_WAIT) | i, 0],
                }
            }
            Command::InvalidateDevtabEntry { device_id } => {
                [op(opcode::INVALIDATE_DEVTAB_ENTRY) | device_id as u64, 0]
            }
            Command::InvalidateIommuPages { domain_id, scope } => {
                // PDE (bit 1) = 1: cached page-directory entries go too.
                let second = match scope {
                    PageScope::All => ALL_PAGES_ADDRESS | 0b11,
                    PageScope::Page(iova) => (iova & !0xfff) | 0b10,
                    PageScope::Large(iova) => (iova & !0x1f_ffff) | LARGE_RANGE_BITS | 0b11,
                };
                [
                    op(opcode::INVALIDATE_IOMMU_PAGES) | ((domain_id as u64) << 32),
                    second,
                ]
            }
            Command::InvalidateInterruptTable { device_id } => {
                [op(opcode::INVALIDATE_INTERRUPT_TABLE) | device_id as u64, 0]
            }
            Command::InvalidateIommuAll => [op(opcode::INVALIDATE_IOMMU_ALL), 0],
        }
    }

    /// Inverse of [`Command::encode`] for the commands above; `None` for anything else.
    pub const fn decode(raw: [u64; 2]) -> Option<Command> {
        let [q0, q1] = raw;
        match (q0 >> 60) as u8 {
            opcode::COMPLETION_WAIT => Some(Command::CompletionWait {
                store: if q0 & 1 != 0 {
                    Some((PhysAddr(q0 & 0x000f_ffff_ffff_fff8), q1))
                } else {
                    None
                },
                interrupt: q0 & 2 != 0,
            }),
            opcode::INVALIDATE_DEVTAB_ENTRY => Some(Command::InvalidateDevtabEntry {
                device_id: q0 as u16,
            }),
            opcode::INVALIDATE_IOMMU_PAGES => Some(Command::InvalidateIommuPages {
                domain_id: (q0 >> 32) as u16,
                scope: if q1 & 1 != 0 && q1 & 0x1f_f000 == LARGE_RANGE_BITS {
                    PageScope::Large(q1 & !0x1f_ffff)
                } else if q1 & 1 != 0 {
                    PageScope::All
                } else {
                    PageScope::Page(q1 & !0xfff)
                },
            }),
            opcode::INVALIDATE_INTERRUPT_TABLE => Some(Command::InvalidateInterruptTable {
                device_id: q0 as u16,
            }),
            opcode::INVALIDATE_IOMMU_ALL => Some(Command::InvalidateIommuAll),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandError {
    /// The IOMMU did not free ring space in time (head register did not move).
    QueueStalled(TimedOut),
    /// The completion-wait store did not arrive in time. State stays consistent: the wait's
    /// sequence number is never reused, so a late store cannot satisfy a later wait.
    WaitTimedOut(TimedOut),
    /// Status.CmdBufRun dropped: the IOMMU refused the command at byte offset `head` of the
    /// ring (`raw`, as read back) and stopped; later commands did not run.
    ProcessorStopped { head: u64, raw: [u64; 2] },
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::QueueStalled(t) => write!(f, "command buffer stalled: {t}"),
            CommandError::WaitTimedOut(t) => write!(f, "completion wait: {t}"),
            CommandError::ProcessorStopped { head, raw } => write!(
                f,
                "command processor stopped at ring offset {head:#x} (command {:#018x}_{:016x})",
                raw[1], raw[0]
            ),
        }
    }
}

/// Counters for the "invalidation round trips and MMIO writes per reassign" figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommandStats {
    pub commands: u64,
    pub waits: u64,
    pub mmio_writes: u64,
    pub timeouts: u64,
}

/// The command ring plus the 8-byte slot completion waits store into.
#[derive(Debug)]
pub struct CommandQueue {
    base: PhysAddr,
    length: RingLength,
    /// Software copy of the tail (byte offset), and whether the register lags it.
    tail: u64,
    unpublished: bool,
    /// Last head read from the register; re-read only when the ring looks full.
    head: u64,
    wait_slot: PhysAddr,
    next_sequence: u64,
    timeout_us: u64,
    stats: CommandStats,
}

impl CommandQueue {
    /// A queue over `base` (one 4 KiB frame for [`RingLength::ONE_PAGE`]), completion waits
    /// storing to `wait_slot` (8-byte aligned). Head and tail start at 0, as the IOMMU resets
    /// them when the base register is written.
    pub fn new(
        base: PhysAddr,
        length: RingLength,
        wait_slot: PhysAddr,
        timeout_us: u64,
    ) -> CommandQueue {
        CommandQueue {
            base,
            length,
            tail: 0,
            unpublished: false,
            head: 0,
            wait_slot: PhysAddr(wait_slot.0 & !7),
            next_sequence: 1,
            timeout_us,
            stats: CommandStats::default(),
        }
    }

    pub fn base(&self) -> PhysAddr {
        self.base
    }

    pub fn length(&self) -> RingLength {
        self.length
    }

    pub fn wait_slot(&self) -> PhysAddr {
        self.wait_slot
    }

    pub fn stats(&self) -> CommandStats {
        self.stats
    }

    fn bytes(&self) -> u64 {
        self.length.bytes()
    }

    fn next(&self, offset: u64) -> u64 {
        (offset + COMMAND_BYTES) % self.bytes()
    }

    /// One slot stays empty so that head == tail means "empty" (§3.4.7).
    fn full(&self) -> bool {
        self.next(self.tail) == self.head
    }

    fn read_head<R: Mmio + ?Sized>(&mut self, regs: &R) {
        self.head = (regs.read64(regs::COMMAND_HEAD) & RING_POINTER_MASK) % self.bytes();
    }

    /// `Some` when the processor stopped on an error (CmdBufRun clear), naming the command the
    /// head register points at.
    fn stopped<M, R>(&mut self, mem: &M, regs: &R) -> Option<CommandError>
    where
        M: PhysMem + ?Sized,
        R: Mmio + ?Sized,
    {
        if regs.read64(regs::STATUS) & status::CMD_BUF_RUN != 0 {
            return None;
        }
        self.read_head(regs);
        let at = PhysAddr(self.base.0 + self.head);
        let raw = [mem.read_u64(at), mem.read_u64(PhysAddr(at.0 + 8))];
        Some(CommandError::ProcessorStopped {
            head: self.head,
            raw,
        })
    }

    /// Forgets every unexecuted command: head and tail 0, as the unit sets them when the ring
    /// is restarted (CmdBufEn off, pointers rewritten, CmdBufEn on).
    pub fn reset(&mut self) {
        self.tail = 0;
        self.head = 0;
        self.unpublished = false;
    }

    /// Makes the IOMMU see every command written so far: one tail-register write.
    pub fn publish<R: Mmio + ?Sized>(&mut self, regs: &R) {
        if self.unpublished {
            regs.write64(regs::COMMAND_TAIL, self.tail);
            self.stats.mmio_writes += 1;
            self.unpublished = false;
        }
    }

    /// Writes `cmd` into the ring without publishing it, first publishing and waiting
    /// (bounded) for space if the ring is full.
    pub fn push<M, R>(
        &mut self,
        mem: &M,
        regs: &R,
        clock: &(impl Clock + ?Sized),
        cmd: Command,
    ) -> Result<(), CommandError>
    where
        M: PhysMem + ?Sized,
        R: Mmio + ?Sized,
    {
        if self.full() {
            self.read_head(regs);
        }
        if self.full() {
            self.publish(regs);
            poll_until(clock, self.timeout_us, || {
                if let Some(e) = self.stopped(mem, regs) {
                    return Some(Err(e));
                }
                self.read_head(regs);
                (!self.full()).then_some(Ok(()))
            })
            .map_err(|t| {
                self.stats.timeouts += 1;
                CommandError::QueueStalled(t)
            })??;
        }
        let [q0, q1] = cmd.encode();
        let at = PhysAddr(self.base.0 + self.tail);
        mem.write_u64(at, q0);
        mem.write_u64(PhysAddr(at.0 + 8), q1);
        self.tail = self.next(self.tail);
        self.unpublished = true;
        self.stats.commands += 1;
        Ok(())
    }

    /// Queues `cmds`, then one COMPLETION_WAIT storing a fresh sequence number, publishes the
    /// lot with one tail write, and waits (bounded) for the store.
    pub fn submit_and_wait<M, R>(
        &mut self,
        mem: &M,
        regs: &R,
        clock: &(impl Clock + ?Sized),
        cmds: impl IntoIterator<Item = Command>,
    ) -> Result<(), CommandError>
    where
        M: PhysMem + ?Sized,
        R: Mmio + ?Sized,
    {
        for cmd in cmds {
            self.push(mem, regs, clock, cmd)?;
        }
        let sequence = self.next_sequence;
        self.next_sequence = self.next_sequence.wrapping_add(1).max(1);
        self.push(
            mem,
            regs,
            clock,
            Command::CompletionWait {
                store: Some((self.wait_slot, sequence)),
                interrupt: false,
            },
        )?;
        self.publish(regs);
        self.stats.waits += 1;
        let slot = self.wait_slot;
        poll_until(clock, self.timeout_us, || {
            if mem.read_u64(slot) == sequence {
                return Some(Ok(()));
            }
            self.stopped(mem, regs).map(Err)
        })
        .map_err(|t| {
            self.stats.timeouts += 1;
            CommandError::WaitTimedOut(t)
        })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poll::StepClock;
    use crate::sim_device::SimAmdVi;
    use lazaret_types::sim::{SimMemory, SimRegisters};
    use std::rc::Rc;

    #[test]
    fn encodings_match_the_spec_layouts() {
        let wait = Command::CompletionWait {
            store: Some((PhysAddr(0x1234_5678), 0xfeed)),
            interrupt: false,
        };
        assert_eq!(wait.encode(), [(1 << 60) | 0x1234_5678 | 1, 0xfeed]);
        assert_eq!(
            Command::InvalidateDevtabEntry { device_id: 0x0810 }.encode(),
            [(2 << 60) | 0x0810, 0]
        );
        assert_eq!(
            Command::InvalidateIommuPages {
                domain_id: 0x55,
                scope: PageScope::All
            }
            .encode(),
            [(3 << 60) | (0x55 << 32), 0x7fff_ffff_ffff_f003]
        );
        assert_eq!(Command::InvalidateIommuAll.encode(), [8 << 60, 0]);
        assert_eq!(
            Command::InvalidateInterruptTable { device_id: 0x0818 }.encode(),
            [(5 << 60) | 0x0818, 0]
        );
        for c in [
            wait,
            Command::InvalidateInterruptTable { device_id: 7 },
            Command::InvalidateIommuPages {
                domain_id: 3,
                scope: PageScope::Page(0x7000),
            },
            Command::InvalidateIommuPages {
                domain_id: 3,
                scope: PageScope::Large(0x4060_0000),
            },
            Command::InvalidateIommuAll,
        ] {
            assert_eq!(Command::decode(c.encode()), Some(c));
        }
        assert_eq!(Command::decode([0, 0]), None);
        // The 2 MiB range as §2.4.3 spells it: S = 1, address bits 19:12 ones, bit 20 zero.
        let large = Command::InvalidateIommuPages {
            domain_id: 3,
            scope: PageScope::Large(0x4060_0000),
        };
        assert_eq!(large.encode()[1], 0x406f_f003);
    }

    fn queue() -> (Rc<SimMemory>, SimRegisters, SimAmdVi, CommandQueue) {
        let mem = Rc::new(SimMemory::new());
        let regs = SimRegisters::new();
        let sim = SimAmdVi::install(&regs, mem.clone(), 0);
        let base = PhysAddr(0x40_0000);
        regs.write64(
            regs::COMMAND_BUFFER_BASE,
            RingLength::ONE_PAGE.base_register(base),
        );
        regs.write64(
            regs::CONTROL,
            regs::control::IOMMU_EN | regs::control::CMD_BUF_EN,
        );
        let q = CommandQueue::new(base, RingLength::ONE_PAGE, PhysAddr(0x41_0000), 50);
        (mem, regs, sim, q)
    }

    #[test]
    fn batch_is_one_tail_write_and_one_wait() {
        let (mem, regs, sim, mut q) = queue();
        let writes = regs.write_count();
        let batch = [
            Command::InvalidateDevtabEntry { device_id: 8 },
            Command::InvalidateIommuPages {
                domain_id: 4,
                scope: PageScope::All,
            },
        ];
        q.submit_and_wait(&*mem, &regs, &StepClock::default(), batch)
            .unwrap();
        assert_eq!(regs.write_count() - writes, 1);
        // Unfenced commands take effect in any order (the sim shuffles them); the wait last.
        let mut seen = sim.executed();
        assert!(matches!(seen.pop(), Some(Command::CompletionWait { .. })));
        assert_eq!(seen.len(), 2);
        assert!(batch.iter().all(|c| seen.contains(c)));
        assert_eq!(
            q.stats(),
            CommandStats {
                commands: 3,
                waits: 1,
                mmio_writes: 1,
                timeouts: 0
            }
        );
    }

    #[test]
    fn ring_wraps_many_times() {
        let (mem, regs, sim, mut q) = queue();
        for i in 0..300u16 {
            q.submit_and_wait(
                &*mem,
                &regs,
                &StepClock::default(),
                [Command::InvalidateDevtabEntry { device_id: i }],
            )
            .unwrap();
        }
        assert_eq!(sim.executed().len(), 600);
        assert_eq!(
            sim.executed()[598],
            Command::InvalidateDevtabEntry { device_id: 299 }
        );
    }

    #[test]
    fn a_stalled_iommu_times_out_with_an_error() {
        let (mem, regs, sim, mut q) = queue();
        sim.set_stalled(true);
        let r = q.submit_and_wait(&*mem, &regs, &StepClock::default(), []);
        assert!(matches!(r, Err(CommandError::WaitTimedOut(_))));
        assert_eq!(q.stats().timeouts, 1);
        // Ring fills: pushing more than its capacity reports a stall instead of spinning.
        let many = (0..300).map(|i| Command::InvalidateDevtabEntry { device_id: i });
        let r = q.submit_and_wait(&*mem, &regs, &StepClock::default(), many);
        assert!(matches!(r, Err(CommandError::QueueStalled(_))));
        // The IOMMU runs again (a tail rewrite kicks it, as on QEMU): the late store of the
        // timed-out wait (1) does not satisfy the new wait (2), which completes.
        sim.set_stalled(false);
        regs.write64(regs::COMMAND_TAIL, regs.get(regs::COMMAND_TAIL));
        assert_eq!(mem.read_u64(q.wait_slot()), 1);
        q.submit_and_wait(&*mem, &regs, &StepClock::default(), [])
            .unwrap();
        assert_eq!(mem.read_u64(q.wait_slot()), 2);
    }
}
