//! An arena with generation-checked typed handles: a handle to a removed value (even when its
//! slot was reused) finds nothing, instead of aliasing the new occupant.
use alloc::vec::Vec;
use core::fmt;
use core::marker::PhantomData;

pub struct Handle<T> {
    index: u32,
    generation: u32,
    _kind: PhantomData<fn() -> T>,
}

impl<T> Handle<T> {
    pub fn index(self) -> u32 {
        self.index
    }

    pub fn generation(self) -> u32 {
        self.generation
    }
}

impl<T> Clone for Handle<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Handle<T> {}

impl<T> PartialEq for Handle<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.index, self.generation) == (other.index, other.generation)
    }
}

impl<T> Eq for Handle<T> {}

impl<T> PartialOrd for Handle<T> {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Handle<T> {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        (self.index, self.generation).cmp(&(other.index, other.generation))
    }
}

impl<T> fmt::Debug for Handle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "d{}.{}", self.index, self.generation)
    }
}

impl<T> fmt::Display for Handle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "d{}", self.index)
    }
}

enum Slot<T> {
    Occupied {
        generation: u32,
        value: T,
    },
    /// `next_free` threads the free list through the vacant slots themselves, so `remove`
    /// needs no memory of its own: domain destruction must not allocate (design.md §4).
    Vacant {
        generation: u32,
        next_free: Option<u32>,
    },
}

pub struct Arena<T> {
    slots: Vec<Slot<T>>,
    /// The most recently vacated reusable slot; each vacant slot names the next.
    free_head: Option<u32>,
    len: usize,
}

impl<T> Default for Arena<T> {
    fn default() -> Self {
        Arena {
            slots: Vec::new(),
            free_head: None,
            len: 0,
        }
    }
}

impl<T> Arena<T> {
    pub fn insert(&mut self, value: T) -> Handle<T> {
        let reused = self
            .free_head
            .and_then(|index| match self.slots.get(index as usize)? {
                Slot::Vacant {
                    generation,
                    next_free,
                } => Some((index, generation.wrapping_add(1), *next_free)),
                Slot::Occupied { .. } => None,
            });
        let (index, generation) = match reused {
            Some((index, generation, next_free)) => {
                self.free_head = next_free;
                self.slots[index as usize] = Slot::Occupied { generation, value };
                (index, generation)
            }
            None => {
                // Only reached with an empty free list (a head naming an occupied slot
                // cannot be built through this API; dropping it loses slots, not safety).
                self.free_head = None;
                let index = self.slots.len() as u32;
                self.slots.push(Slot::Occupied {
                    generation: 0,
                    value,
                });
                (index, 0)
            }
        };
        self.len += 1;
        Handle {
            index,
            generation,
            _kind: PhantomData,
        }
    }

    pub fn get(&self, h: Handle<T>) -> Option<&T> {
        match self.slots.get(h.index as usize)? {
            Slot::Occupied { generation, value } if *generation == h.generation => Some(value),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, h: Handle<T>) -> Option<&mut T> {
        match self.slots.get_mut(h.index as usize)? {
            Slot::Occupied { generation, value } if *generation == h.generation => Some(value),
            _ => None,
        }
    }

    pub fn contains(&self, h: Handle<T>) -> bool {
        self.get(h).is_some()
    }

    /// Never allocates: the slot joins the free list in place. A slot whose generation is
    /// exhausted is retired instead (never reused), so a handle can never match a later
    /// occupant by wrapping around.
    pub fn remove(&mut self, h: Handle<T>) -> Option<T> {
        self.get(h)?;
        let reusable = h.generation != u32::MAX;
        let slot = core::mem::replace(
            &mut self.slots[h.index as usize],
            Slot::Vacant {
                generation: h.generation,
                next_free: if reusable { self.free_head } else { None },
            },
        );
        if reusable {
            self.free_head = Some(h.index);
        }
        self.len -= 1;
        match slot {
            Slot::Occupied { value, .. } => Some(value),
            Slot::Vacant { .. } => None,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (Handle<T>, &T)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| match s {
            Slot::Occupied { generation, value } => Some((
                Handle {
                    index: i as u32,
                    generation: *generation,
                    _kind: PhantomData,
                },
                value,
            )),
            Slot::Vacant { .. } => None,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_handles_find_nothing_after_reuse() {
        let mut a: Arena<&str> = Arena::default();
        let x = a.insert("x");
        let y = a.insert("y");
        assert_eq!(a.remove(x), Some("x"));
        assert_eq!(a.get(x), None);
        let z = a.insert("z");
        assert_eq!(z.index(), x.index(), "the slot is reused");
        assert_ne!(z, x);
        assert_eq!(
            a.get(x),
            None,
            "the old handle does not alias the new value"
        );
        assert_eq!(a.remove(x), None);
        assert_eq!(a.get(z), Some(&"z"));
        assert_eq!(a.get(y), Some(&"y"));
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn freed_slots_are_reused_last_freed_first_and_none_is_lost() {
        let mut a: Arena<u32> = Arena::default();
        let h: Vec<Handle<u32>> = (0..5).map(|v| a.insert(v)).collect();
        for i in [1, 3, 0] {
            assert_eq!(a.remove(h[i]), Some(i as u32));
        }
        assert_eq!(a.len(), 2);
        let reused: Vec<u32> = (10..14).map(|v| a.insert(v).index()).collect();
        assert_eq!(reused, vec![0, 3, 1, 5], "the free list, then a new slot");
        assert_eq!(a.len(), 6);
        assert_eq!(a.iter().count(), 6);
        assert_eq!(a.get(h[2]), Some(&2));
        assert!(h
            .iter()
            .filter(|x| ![2, 4].contains(&x.index()))
            .all(|x| !a.contains(*x)));
    }

    #[test]
    fn a_slot_whose_generation_is_exhausted_is_retired() {
        let mut a: Arena<&str> = Arena::default();
        let x = a.insert("x");
        a.remove(x);
        // As if the slot had been reused until its generation ran out.
        a.slots[0] = Slot::Vacant {
            generation: u32::MAX - 1,
            next_free: None,
        };
        let last = a.insert("last");
        assert_eq!((last.index(), last.generation()), (0, u32::MAX));
        assert_eq!(a.remove(last), Some("last"));
        let next = a.insert("next");
        assert_eq!(
            next.index(),
            1,
            "slot 0 would wrap to generation 0: retired"
        );
        assert_eq!(a.get(x), None);
    }

    #[test]
    fn remove_makes_no_heap_allocation() {
        let mut a: Arena<u64> = Arena::default();
        let handles: Vec<Handle<u64>> = (0..1000).map(|v| a.insert(v)).collect();
        let ((), n) = crate::mm::heap::counting::heap_allocations_during(|| {
            for h in handles
                .iter()
                .rev()
                .step_by(2)
                .chain(handles.iter().step_by(2))
            {
                a.remove(*h);
            }
            a.remove(handles[0]); // stale: refused
        });
        assert_eq!(n, 0, "remove allocated");
        assert!(a.is_empty());
        let ((), n) = crate::mm::heap::counting::heap_allocations_during(|| {
            for v in 0..1000 {
                a.insert(v);
            }
        });
        assert_eq!(n, 0, "reinserting into freed slots needs no new memory");
    }
}
