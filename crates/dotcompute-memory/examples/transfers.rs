//! The transfer engine: many uploads and downloads as one batch, with concurrency, small
//! uploads combined into one submission, and a report of what moved. Runs on the simulated
//! discrete device (`DCMEM_BACKEND` picks another through `MemoryManager::from_env`).
//!
//! Run: `cargo run -p dotcompute-memory --example transfers`.

use dotcompute_memory::*;

fn main() -> Result<()> {
    let mm = match std::env::var("DCMEM_BACKEND") {
        Ok(_) => MemoryManager::from_env()?,
        Err(_) => MemoryManager::sim(SimOptions::default()),
    };
    let engine = mm.transfer_engine();

    // 64 small buffers and one large one, uploaded in one batch.
    let small: Vec<Vec<u32>> = (0..64).map(|i| vec![i; 1024]).collect();
    let large: Vec<f32> = (0..(8 << 20)).map(|i| i as f32).collect();
    let mut small_bufs = (0..small.len()).map(|_| mm.allocate::<u32>(1024)).collect::<Result<Vec<_>>>()?;
    let mut large_buf = mm.allocate::<f32>(large.len())?;

    let mut batch = TransferBatch::new();
    for (data, buf) in small.iter().zip(&mut small_bufs) {
        batch.upload(data, buf)?;
    }
    batch.upload(&large, &mut large_buf)?;
    let report = engine.execute(batch, TransferOptions::default())?;
    assert!(report.is_success());
    println!(
        "uploaded {} transfers ({} batched into one submission), {} MiB in {:.1?}, {:.2} GB/s",
        report.transfers.len(),
        report.batched,
        report.total_bytes >> 20,
        report.duration,
        report.host_to_device_bandwidth / 1e9
    );

    // Back again, into fresh host memory.
    let mut out = vec![0.0f32; large.len()];
    let mut batch = TransferBatch::new();
    batch.download(&large_buf, &mut out)?;
    let report = engine.execute(batch, TransferOptions::default())?;
    assert!(report.is_success() && out == large);
    println!("downloaded {} MiB, {:.2} GB/s", report.total_bytes >> 20, report.device_to_host_bandwidth / 1e9);
    println!("{}", mm.statistics());
    Ok(())
}
