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
    Occupied { generation: u32, value: T },
    Vacant { generation: u32 },
}

pub struct Arena<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
}

impl<T> Default for Arena<T> {
    fn default() -> Self {
        Arena {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> Arena<T> {
    pub fn insert(&mut self, value: T) -> Handle<T> {
        match self.free.pop() {
            Some(index) => {
                let slot = &mut self.slots[index as usize];
                let generation = match slot {
                    Slot::Vacant { generation } => generation.wrapping_add(1),
                    Slot::Occupied { .. } => unreachable!("free list names an occupied slot"),
                };
                *slot = Slot::Occupied { generation, value };
                Handle {
                    index,
                    generation,
                    _kind: PhantomData,
                }
            }
            None => {
                let index = self.slots.len() as u32;
                self.slots.push(Slot::Occupied {
                    generation: 0,
                    value,
                });
                Handle {
                    index,
                    generation: 0,
                    _kind: PhantomData,
                }
            }
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

    pub fn remove(&mut self, h: Handle<T>) -> Option<T> {
        self.get(h)?;
        let slot = core::mem::replace(
            &mut self.slots[h.index as usize],
            Slot::Vacant {
                generation: h.generation,
            },
        );
        self.free.push(h.index);
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
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
}
