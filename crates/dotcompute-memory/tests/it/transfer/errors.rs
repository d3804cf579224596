//! A failed transfer's report line carries the error itself: its kind can be matched, its
//! message read, and the report still serialises it as the message.

use dotcompute_memory::TransferError;
use dotcompute_memory::*;

/// A report whose only transfer failed permanently: op 1 allocates the device segment, op 2
/// uploads the buffer, op 3 is the engine's write of the new contents.
fn failed_report(mm: &MemoryManager) -> TransferReport {
    let mut buf = mm.allocate_from(&vec![7u32; 50_000]).unwrap();
    buf.ensure_on_device().unwrap();
    let new = vec![9u32; 50_000];
    let mut batch = TransferBatch::new();
    batch.upload(&new, &mut buf).unwrap();
    let options = TransferOptions::default().with_max_concurrency(1).with_pipelining(false);
    let report = mm.transfer_engine().execute(batch, options).unwrap();
    assert_eq!(buf.to_vec().unwrap(), vec![7u32; 50_000], "a failed upload changes nothing");
    report
}

fn faulty_sim() -> MemoryManager {
    MemoryManager::sim(
        SimOptions::default().with_faults(FaultPlan::default().with_fail_nth(Some(3)).with_transient(false)),
    )
}

#[test]
fn a_failed_transfer_reports_the_error_kind_and_its_message() {
    let report = failed_report(&faulty_sim());
    assert_eq!(report.failed, 1, "{report:?}");
    let err: &TransferError = report.failures().next().unwrap().error.as_ref().unwrap();
    assert!(matches!(err.error(), Some(Error::Backend { transient: false, .. })), "{err:?}");
    assert!(!err.error().unwrap().is_transient());
    assert!(err.message().contains("injected permanent fault"), "{err}");
    assert_eq!(err.to_string(), err.message());
    assert_eq!(err.error().unwrap().to_string(), err.message());
}

#[test]
fn a_report_serialises_the_error_as_its_message_and_reads_it_back() {
    let report = failed_report(&faulty_sim());
    let err = report.transfers[0].error.clone().unwrap();
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["transfers"][0]["error"], serde_json::Value::String(err.message().to_owned()));
    let back: TransferReport = serde_json::from_value(json).unwrap();
    let read = back.transfers[0].error.as_ref().unwrap();
    assert_eq!(read.message(), err.message());
    assert!(read.error().is_none(), "only the message survives serialisation");
    assert_eq!(back.transfers[0], report.transfers[0], "equal lines: same message");
}

#[test]
fn successful_transfers_carry_no_error() {
    let mm = MemoryManager::cpu();
    let data = vec![1.5f32; 1000];
    let mut buf = mm.allocate::<f32>(data.len()).unwrap();
    let mut batch = TransferBatch::new();
    batch.upload(&data, &mut buf).unwrap();
    let report = mm.transfer_engine().execute(batch, TransferOptions::default()).unwrap();
    assert!(report.transfers.iter().all(|t| t.error.is_none()), "{report:?}");
    let json = serde_json::to_value(&report).unwrap();
    assert!(json["transfers"][0]["error"].is_null());
}
