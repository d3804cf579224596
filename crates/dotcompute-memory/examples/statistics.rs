//! What a manager can tell about its memory: the counters (`statistics`), the device pool's
//! segments (`memory_snapshot`) and the live buffers with where they were allocated
//! (`diagnostics`). Runs on the simulated discrete device, so transfers show up.
//!
//! Run: `cargo run -p dotcompute-memory --example statistics`.

use dotcompute_memory::*;

fn main() -> Result<()> {
    let mm = MemoryManager::sim(SimOptions::default());
    mm.diagnostics().set_tracking(true);

    let data: Vec<f32> = (0..1 << 18).map(|i| i as f32).collect();
    let mut a = mm.allocate_from(&data)?;
    a.ensure_on_device()?; // one host-to-device transfer
    let b = mm.allocate::<u8>(3 << 20)?;
    let mut round_trip = vec![0.0f32; data.len()];
    a.copy_to(&mut round_trip)?;
    assert_eq!(round_trip, data);
    drop(b);
    let _c = mm.allocate::<u8>(3 << 20)?; // the pool serves it from b's block

    let stats = mm.statistics();
    println!("== statistics\n{stats}\n");
    println!("== device memory\n{}\n", mm.memory_snapshot());
    println!("== live buffers (tracking on)\n{}", mm.diagnostics().leak_report());

    assert_eq!(stats.host_to_device.count, 1);
    assert_eq!(stats.pool_hits, 1);
    assert_eq!(mm.diagnostics().live_count(), 2);
    Ok(())
}
