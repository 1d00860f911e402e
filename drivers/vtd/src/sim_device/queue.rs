//! The simulated invalidation queue (§6.5.2): fetches descriptors from IQH up to IQT, and lets
//! them take effect the way the spec allows rather than in queue order.
//!
//! Ordering (§6.5.2.8): a wait descriptor's status write happens only after every descriptor
//! before it has completed; with FN = 1 nothing after it is processed until it has completed;
//! with FN = 0 later descriptors may complete first. So the queue is cut into segments, each
//! ending at a fenced wait; inside a segment the next effect is picked by a seeded PRNG among
//! those allowed (any invalidation; a wait once everything before it is done), and the
//! configured "DMA during invalidation" runs between every two effects.
//!
//! Errors (§6.5.2.10, FSTS §10.4.9): an invalid descriptor (unknown type, reserved granularity,
//! or an injected one) stops the queue with IQH at it and FSTS.IQE set, after the earlier
//! descriptors completed; an injected invalidation time-out (ITE) completes the segment's
//! invalidations, aborts its waits (no status write), leaves IQH after the segment and stops;
//! an injected completion error (ICE) is reported and processing goes on. Processing resumes
//! from IQH when software clears IQE / ITE.

use alloc::vec::Vec;
use core::cell::RefCell;

use lazaret_types::{PhysAddr, PhysMem};

use super::caches::Request;
use super::interrupts;
use super::{dma_in, set_shadow_fsts, shadow_fsts, QueueFault, RegMap, State};
use crate::regs::{fsts, global, GSTS, IQA, IQH, IQT};

const SLOTS: usize = 256;
const TYPE_WAIT: u64 = 5;
const WAIT_SW: u64 = 1 << 5;
const WAIT_FN: u64 = 1 << 6;

fn is_wait(d: u128) -> bool {
    d as u64 & 0xf == TYPE_WAIT
}

/// Processes the queue from IQH to IQT as far as the unit may.
pub fn consume(r: &mut impl RegMap, mem: &impl PhysMem, log: &RefCell<Vec<u128>>, st: &mut State) {
    let stopped = u64::from(fsts::IQE | fsts::ITE);
    if r.val(GSTS) as u32 & global::QIE == 0 || shadow_fsts(r) & stopped != 0 {
        return;
    }
    let base = r.val(IQA) & !0xfff;
    let tail = ((r.val(IQT) >> 4) as usize) % SLOTS;
    let mut head = ((r.val(IQH) >> 4) as usize) % SLOTS;
    while head != tail {
        let mut segment = Vec::new();
        let mut invalid = false;
        while head != tail {
            let d = mem.read_u128(PhysAddr(base + head as u64 * 16));
            // An injected invalid descriptor stays invalid until software rewrites its slot.
            let injected = match st.inject {
                Some(QueueFault::InvalidDescriptor) => !is_wait(d),
                Some(QueueFault::InvalidInterruptEntry) => interrupts::is_iec_descriptor(d),
                _ => false,
            };
            if injected {
                st.inject = None;
                st.poisoned = Some((head, d));
            }
            let poisoned = st.poisoned == Some((head, d));
            let known = is_wait(d)
                || Request::from_descriptor(d).is_some()
                || interrupts::is_iec_descriptor(d);
            if poisoned || !known {
                invalid = true;
                break;
            }
            log.borrow_mut().push(d);
            segment.push(d);
            head = (head + 1) % SLOTS;
            if is_wait(d) && d as u64 & WAIT_FN != 0 {
                break;
            }
        }
        let timed_out =
            st.inject == Some(QueueFault::TimeOut) && segment.iter().any(|d| !is_wait(*d));
        if timed_out {
            st.inject = None;
        }
        perform(r, mem, st, &segment, timed_out);
        if timed_out || invalid {
            let bit = if invalid { fsts::IQE } else { fsts::ITE };
            set_shadow_fsts(r, shadow_fsts(r) | u64::from(bit));
            break;
        }
    }
    r.put(IQH, (head as u64) << 4);
}

/// Lets one segment's descriptors take effect in a PRNG order the spec allows.
fn perform(
    r: &mut impl RegMap,
    mem: &impl PhysMem,
    st: &mut State,
    segment: &[u128],
    waits_aborted: bool,
) {
    let mut done = alloc::vec![false; segment.len()];
    for step in 0..segment.len() {
        let ready: Vec<usize> = (0..segment.len())
            .filter(|&i| !done[i] && (!is_wait(segment[i]) || done[..i].iter().all(|d| *d)))
            .collect();
        // The earliest unfinished descriptor is always ready, so `ready` is never empty.
        let pick = ready[(st.next_random() % ready.len() as u64) as usize];
        if step > 0 {
            if let Some((sid, iova, write)) = st.dma_during_invalidation {
                let result = dma_in(r, mem, st, sid, iova, write);
                st.dma_during_results.push(result);
            }
        }
        done[pick] = true;
        effect(r, mem, st, segment[pick], waits_aborted);
    }
}

fn effect(r: &mut impl RegMap, mem: &impl PhysMem, st: &mut State, d: u128, waits_aborted: bool) {
    st.effects.push(d);
    let lo = d as u64;
    if is_wait(d) {
        if lo & WAIT_SW != 0 && !waits_aborted {
            let status = ((d >> 64) as u64) & !3;
            mem.write_bytes(PhysAddr(status), &((lo >> 32) as u32).to_le_bytes());
        }
        return;
    }
    if let Some(request) = Request::from_descriptor(d) {
        st.caches.invalidate(request);
    }
    if interrupts::is_iec_descriptor(d) {
        interrupts::iec_effect(st, d);
    }
    if st.inject == Some(QueueFault::CompletionError) {
        st.inject = None;
        set_shadow_fsts(r, shadow_fsts(r) | u64::from(fsts::ICE));
    }
}
