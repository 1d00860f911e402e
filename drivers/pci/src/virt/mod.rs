//! The virtual PCI bus a guest sees through ports 0xCF8/0xCFC (configuration mechanism #1,
//! PCI Local Bus Spec 3.0 §3.2.2.3.2).
//!
//! A [`VirtualBus`] holds only the guest's assigned functions, at virtual 00:00.0, 00:01.0, …
//! in the order given; every other BDF, every bus but 0 and every function but 0 reads all
//! ones and drops writes, as an empty slot does. An OS scanning the bus the usual way finds
//! exactly its devices and sizes their BARs. Reads come from the real function, except:
//! - BARs read as their place in the guest's MMIO window (memory BARs only; I/O BARs read as
//!   unimplemented) and answer sizing with the real size; a guest cannot move them (see
//!   `bar.rs` for the policy) and no BAR write ever reaches the device;
//! - the expansion ROM BAR reads 0, Header Type's multi-function bit reads 0;
//! - the capability list is the device's without MSI-X (see `caps.rs`), and the MSI capability
//!   reads as the guest's own copy ([`GuestMsi`]), never as the device's registers.
//!
//! Writes: the Command register is filtered (Interrupt Disable passes; Memory Space and Bus
//! Master pass only while Lazaret allows them, see [`VirtualBus::set_bus_master_allowed`];
//! nothing else changes), BAR and MSI writes stay virtual, every other write is dropped and
//! counted. Accesses allocate nothing and cannot panic whatever the guest sends; the only
//! register they can write on real hardware is the Command register of an assigned function.
//!
//! MSI: the exit loop takes [`VirtualBus::take_msi_changes`] after a configuration write, reads
//! [`VirtualBus::msi_request`], sets up remapping for it and programs the device with
//! [`VirtualBus::program_host_msi`] — the only path that writes a real MSI register.
use alloc::vec::Vec;

use lazaret_types::{Bdf, Sbdf};

use crate::{cap_id, find_capability, Bar, ConfigSpace};

mod address;
mod bar;
mod caps;
mod error;
mod function;
mod layout;
mod msi;

#[cfg(test)]
mod fixture;
#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod layout_tests;
#[cfg(test)]
mod msi_tests;
#[cfg(test)]
mod no_alloc;
#[cfg(test)]
mod placement_props;
#[cfg(test)]
mod tests;

pub use address::{CONFIG_ADDRESS_PORT, CONFIG_DATA_PORT};
pub use error::VirtualBusError;
pub use msi::GuestMsi;

use function::VirtualFunction;

/// Devices on one bus: virtual 00:00.0 to 00:1f.0.
pub const MAX_VIRTUAL_FUNCTIONS: usize = 32;

/// One BAR for the caller to map in nested paging: guest-physical `gpa .. gpa + size` onto
/// host-physical `host_phys`, uncached. Both ends are page aligned and `size` is a power of
/// two of at least 4 KiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarMapping {
    /// The real function the BAR belongs to, and its slot.
    pub function: Sbdf,
    pub index: u8,
    pub gpa: u64,
    pub host_phys: u64,
    pub size: u64,
}

/// One guest's PCI configuration space: its assigned functions behind ports 0xCF8–0xCFF.
#[derive(Clone, Debug)]
pub struct VirtualBus {
    functions: Vec<VirtualFunction>,
    mappings: Vec<BarMapping>,
    /// CONFIG_ADDRESS as the guest last wrote it (bits 1:0 read as zero).
    address: u32,
    dropped_writes: u64,
}

impl VirtualBus {
    /// A bus holding `functions` — each the real function and its BARs as enumeration found
    /// them ([`crate::PciFunction::bars`]) — at virtual devices 0, 1, … in this order, with
    /// their memory BARs placed in `window` = (guest-physical base, size). Nothing is read or
    /// written; on an error there is no bus and nothing to undo. The functions are meant to be
    /// type 0 endpoints: a bridge would read as one, with nothing behind it (bus ≠ 0 is empty).
    pub fn new(
        functions: &[(Sbdf, &[Bar])],
        window: (u64, u64),
    ) -> Result<VirtualBus, VirtualBusError> {
        let (registers, mappings) = layout::lay_out(functions, window)?;
        let functions = functions
            .iter()
            .zip(registers)
            .map(|(&(real, _), bars)| VirtualFunction::new(real, bars))
            .collect();
        Ok(VirtualBus {
            functions,
            mappings,
            address: 0,
            dropped_writes: 0,
        })
    }

    /// The PCI segment of every function on this bus (they share one: [`VirtualBusError::MixedSegments`]);
    /// the caller answers the guest's configuration accesses from that segment's space.
    pub fn segment(&self) -> u16 {
        self.functions.first().map_or(0, |f| f.real.segment)
    }

    /// The BARs the caller maps in nested paging, in function and slot order.
    pub fn mappings(&self) -> &[BarMapping] {
        &self.mappings
    }

    /// Whether `port` is one the virtual bus answers (0xCF8–0xCFF): the I/O intercepts.
    pub const fn handles_port(port: u16) -> bool {
        port >= CONFIG_ADDRESS_PORT && port <= CONFIG_DATA_PORT + 3
    }

    /// The virtual BDF of real function `real`.
    pub fn virtual_bdf(&self, real: Sbdf) -> Option<Bdf> {
        let n = self.functions.iter().position(|f| f.real == real)?;
        Bdf::new(0, u8::try_from(n).ok()?, 0)
    }

    /// The real function behind virtual `bdf`.
    pub fn real_function(&self, bdf: Bdf) -> Option<Sbdf> {
        self.functions.get(self.present(bdf)?).map(|f| f.real)
    }

    /// Whether the guest may turn Bus Master Enable on for `real` (default: yes). With
    /// `false`, every Command write the guest makes leaves Bus Master Enable clear. This does
    /// not touch the device: the caller clears the real bit itself (as the fault path does
    /// with [`crate::set_bus_master`]) — after which it stays clear.
    pub fn set_bus_master_allowed(
        &mut self,
        real: Sbdf,
        allowed: bool,
    ) -> Result<(), VirtualBusError> {
        self.function_mut(real)?.bus_master_allowed = allowed;
        Ok(())
    }

    /// Whether the guest may turn Memory Space Enable on for `real` (default: yes); as
    /// [`VirtualBus::set_bus_master_allowed`].
    pub fn set_memory_space_allowed(
        &mut self,
        real: Sbdf,
        allowed: bool,
    ) -> Result<(), VirtualBusError> {
        self.function_mut(real)?.memory_space_allowed = allowed;
        Ok(())
    }

    /// What the guest last wrote to the MSI capability of `real`, `None` when `real` is not on
    /// this bus. A function without MSI reports a request that was never enabled.
    pub fn msi_request(&self, real: Sbdf) -> Option<GuestMsi> {
        let function = self.functions.iter().find(|f| f.real == real)?;
        Some(function.msi.request())
    }

    /// The functions whose [`GuestMsi`] changed since the last call, in bus order; each is
    /// reported once. Allocates nothing.
    pub fn take_msi_changes(&mut self) -> MsiChanges {
        let mut changes = MsiChanges::default();
        for function in self.functions.iter_mut().filter(|f| f.msi_changed) {
            function.msi_changed = false;
            changes.push(function.real);
        }
        changes
    }

    /// Programs the real MSI capability of `real` with the host message (the remappable
    /// address/data the IOMMU seam returned): MSI disabled, message written (32- or 64-bit
    /// layout as the device has it, one vector, unmasked), then enabled if `enable`. The only
    /// path by which a device's MSI registers change.
    pub fn program_host_msi<C: ConfigSpace + ?Sized>(
        &self,
        cfg: &C,
        real: Sbdf,
        address: u64,
        data: u32,
        enable: bool,
    ) -> Result<(), VirtualBusError> {
        if !self.functions.iter().any(|f| f.real == real) {
            return Err(VirtualBusError::NotAssigned(real));
        }
        let offset = find_capability(cfg, real, cap_id::MSI).ok_or(VirtualBusError::NoMsi(real))?;
        msi::program_host(cfg, real, offset, address, data, enable)
    }

    /// Guest writes that changed nothing (absent BDFs, read-only or unvirtualised registers,
    /// non-configuration accesses such as a byte write to 0xCF9).
    pub fn dropped_writes(&self) -> u64 {
        self.dropped_writes
    }

    /// A guest `in` of `width` bytes (1, 2 or 4) from `port`: the value for AL/AX/EAX. Anything
    /// that is not a configuration access reads all ones.
    pub fn port_read<C: ConfigSpace + ?Sized>(&self, cfg: &C, port: u16, width: u8) -> u32 {
        if port == CONFIG_ADDRESS_PORT && width == 4 {
            return self.address;
        }
        self.target(port, width)
            .and_then(|(n, offset, lanes)| {
                let function = self.functions.get(n)?;
                Some(lanes.extract(function.read(cfg, offset)))
            })
            .unwrap_or_else(|| address::all_ones(width))
    }

    /// A guest `out` of the low `width` bytes (1, 2 or 4) of `value` to `port`.
    pub fn port_write<C: ConfigSpace + ?Sized>(
        &mut self,
        cfg: &C,
        port: u16,
        width: u8,
        value: u32,
    ) {
        // Only a dword at 0xCF8 is CONFIG_ADDRESS; narrower accesses there are other chipset
        // registers (0xCF9 is the reset control register), which a guest does not get.
        if port == CONFIG_ADDRESS_PORT && width == 4 {
            self.address = value & !0b11;
            return;
        }
        let written = match self.target(port, width) {
            Some((n, offset, lanes)) => self
                .functions
                .get_mut(n)
                .is_some_and(|function| function.write(cfg, offset, lanes, value)),
            None => false,
        };
        if !written {
            self.dropped_writes = self.dropped_writes.saturating_add(1);
        }
    }

    /// The function, dword and bytes a data-port access reaches, if it reaches one.
    fn target(&self, port: u16, width: u8) -> Option<(usize, u16, address::Lanes)> {
        let (bdf, offset, lanes) = address::decode(self.address, port, width)?;
        Some((self.present(bdf)?, offset, lanes))
    }

    /// The index of the function at virtual `bdf`.
    fn present(&self, bdf: Bdf) -> Option<usize> {
        let n = usize::from(bdf.device());
        (bdf.bus() == 0 && bdf.function() == 0 && n < self.functions.len()).then_some(n)
    }

    fn function_mut(&mut self, real: Sbdf) -> Result<&mut VirtualFunction, VirtualBusError> {
        self.functions
            .iter_mut()
            .find(|f| f.real == real)
            .ok_or(VirtualBusError::NotAssigned(real))
    }
}

/// The functions whose MSI request changed ([`VirtualBus::take_msi_changes`]): a fixed array,
/// as the exit path allocates nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct MsiChanges {
    functions: [Sbdf; MAX_VIRTUAL_FUNCTIONS],
    len: usize,
    next: usize,
}

impl MsiChanges {
    fn push(&mut self, real: Sbdf) {
        if let Some(slot) = self.functions.get_mut(self.len) {
            *slot = real;
            self.len += 1;
        }
    }
}

impl Iterator for MsiChanges {
    type Item = Sbdf;

    fn next(&mut self) -> Option<Sbdf> {
        let real = *self.functions.get(self.next..self.len)?.first()?;
        self.next += 1;
        Some(real)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.len.saturating_sub(self.next);
        (left, Some(left))
    }
}

impl ExactSizeIterator for MsiChanges {}
