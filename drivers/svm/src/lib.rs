//! AMD SVM (Secure Virtual Machine) as plain data and pure functions, so that everything but
//! VMRUN itself is tested on the host. Layouts follow the AMD64 Architecture Programmer's
//! Manual vol. 2 (document 24593, rev 3.4x): chapter 15 and appendix B.
//!
//! - [`vmcb`]: the VMCB's control and state-save areas at their appendix-B offsets, and the
//!   long-mode entry state of the guest contract.
//! - [`intercept`]: the intercept vectors (§15.9–§15.15, table B-1).
//! - [`event`]: EVENTINJ / EXITINTINFO encoding and the sanitising of EXITINTINFO before it
//!   is re-injected (§15.20, §15.7.2).
//! - [`delivery`]: an external interrupt into a guest — EVENTINJ when it can take one now, else
//!   a virtual-interrupt window (V_IRQ and the VINTR intercept, §15.21.4–§15.21.6).
//! - [`check`]: the VMRUN consistency checks of §15.5.1, as readable reasons.
//! - [`permission`]: the I/O (12 KiB) and MSR (8 KiB) permission maps (§15.10.1, §15.11).
//! - [`exit`]: exit codes (appendix C) and the decoding of EXITINFO1/2 (IOIO, NPF, …).
//! - [`decode`]: instruction lengths of the exits Lazaret completes, when the CPU has no
//!   NRIP save (QEMU's TCG).
//! - [`asid`]: per-CPU ASID generations and the TLB flush each entry needs (§15.16).
//! - [`features`]: CPUID 8000_0001 / 8000_000A and VM_CR as a capability set.
#![cfg_attr(not(test), no_std)]

pub mod asid;
pub mod check;
pub mod decode;
pub mod delivery;
pub mod event;
pub mod exit;
pub mod features;
pub mod intercept;
pub mod permission;
pub mod vmcb;

pub use asid::{AsidAllocator, AsidTag};
pub use check::{check_guest_state, StateError};
pub use decode::{decode_length, DecodeError, Instruction};
pub use event::{sanitize_exit_int_info, EventInj, EventType};
pub use exit::{Exit, IoExit, NpfExit};
pub use features::SvmFeatures;
pub use permission::{IoPermissionMap, MsrAccess, MsrPermissionMap, PermissionError};
pub use vmcb::{LongModeEntry, Segment, VIntr, Vmcb};
