//! Ring 1 (design.md §5): the vendor-generic passthrough tests (tests/common) on a simulated
//! VT-d unit, every table read back by the reference walker as hardware would walk it. The
//! VT-d-specific unit, error, failure-injection, fault and property tests live beside the
//! core in src/passthrough/tests/.
mod common;

use std::collections::BTreeMap;

use common::{Uncounted, Vendor};
use lazaret_kernel::iommu::vtd::{UnitConfig, VtdIommu};
use lazaret_types::poll::StepClock;
use lazaret_types::sim::{SimFrameAllocator, SimMemory};
use lazaret_types::{Bdf, PhysAddr};
use lazaret_vtd::sim_device::{SimRef, SimVtd};
use lazaret_vtd::Coherent;

struct Vtd;

impl Vendor for Vtd {
    type Sim = SimVtd;
    type Unit<'a> = VtdIommu<'a, SimMemory, Uncounted<SimRef<'a>>, StepClock>;

    fn sim() -> SimVtd {
        SimVtd::new()
    }

    fn mem(sim: &SimVtd) -> &SimMemory {
        &sim.mem
    }

    fn iommu<'a>(sim: &'a SimVtd, alloc: &mut SimFrameAllocator<'a>) -> Self::Unit<'a> {
        let unit = UnitConfig {
            regs: Uncounted(sim.mmio()),
            segment: 0,
            register_base: PhysAddr(0xfed9_0000),
            window_bytes: 0x1000,
            include_all: true,
        };
        VtdIommu::new(
            &*sim.mem,
            &Coherent,
            StepClock::default(),
            vec![unit],
            BTreeMap::new(),
            alloc,
        )
        .expect("bring-up")
    }

    fn dma(sim: &SimVtd, rid: Bdf, iova: u64, write: bool) -> Result<PhysAddr, String> {
        sim.dma(rid, iova, write).map_err(|f| f.to_string())
    }

    fn set_seed(sim: &SimVtd, seed: u64) {
        sim.set_seed(seed);
    }

    fn set_dma_during_invalidation(sim: &SimVtd, dma: Option<(Bdf, u64, bool)>) {
        sim.set_dma_during_invalidation(dma);
    }

    fn take_dmas_during_invalidation(sim: &SimVtd) -> Vec<Result<PhysAddr, String>> {
        let landed = sim.take_dma_during_invalidation();
        landed
            .into_iter()
            .map(|r| r.map_err(|f| f.to_string()))
            .collect()
    }

    fn msi(sim: &SimVtd, rid: Bdf, address: u64, data: u32) -> Result<u8, String> {
        sim.msi(rid, address, data)
            .map(|i| i.vector)
            .map_err(|f| format!("{f:?}"))
    }

    /// An IRTE verifies one requester ID (SVT = 01b, §9.10); a device with aliases can only
    /// be verified by bus range (SVT = 10b), from its lowest bus to its highest.
    fn may_use(rids: &[Bdf], rid: Bdf) -> bool {
        match rids {
            [own] => rid == *own,
            _ => {
                let buses = rids.iter().map(|r| r.bus());
                (buses.clone().min().unwrap_or(0)..=buses.max().unwrap_or(0)).contains(&rid.bus())
            }
        }
    }
}

// VT-d: device context-cache + domain IOTLB descriptors; AMD-Vi: INVALIDATE_DEVTAB_ENTRY +
// INVALIDATE_IOMMU_PAGES + COMPLETION_WAIT.
// Back to quarantine: one IEC descriptor for the device's index range.
vendor_tests!(Vtd, commands_per_switch: 2, interrupt_commands: 1);
