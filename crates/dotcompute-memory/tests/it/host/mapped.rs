//! File-backed buffers: create, write, flush, reopen read-only, empty files. Their bad inputs
//! are in `bad_input::shared_memory`.
#![cfg(not(miri))]

use dotcompute_memory::*;

fn temp_path(tag: &str) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("dcmem-mapped-{}-{tag}-{n}.bin", std::process::id()))
}

#[test]
fn write_through_a_mapping_and_read_it_back() {
    let path = temp_path("rw");
    {
        // SAFETY: the file is private to this test.
        let mut m = unsafe { MappedBufferMut::<f32>::create(&path, 1000) }.unwrap();
        assert_eq!(m.len(), 1000);
        assert!(m.iter().all(|&x| x == 0.0));
        m.iter_mut().enumerate().for_each(|(i, x)| *x = i as f32);
        m.flush().unwrap();
    }
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 4000);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(f32::from_le_bytes(bytes[4 * 999..].try_into().unwrap()), 999.0);
    // SAFETY: as above.
    let r = unsafe { MappedBuffer::<f32>::open(&path) }.unwrap();
    assert_eq!(r[123], 123.0);
    assert_eq!(r.as_ptr() as usize % 4096, 0);
    // SAFETY: as above.
    let mut w = unsafe { MappedBufferMut::<u32>::open(&path) }.unwrap();
    assert_eq!(w.len(), 1000);
    w[0] = 7;
    drop(w);
    assert_eq!(r[0].to_bits(), 7, "a shared mapping sees writes through another one");
    drop(r);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn empty_files_map_to_empty_slices() {
    let path = temp_path("empty");
    // SAFETY: the file is private to this test.
    let mut m = unsafe { MappedBufferMut::<f64>::create(&path, 0) }.unwrap();
    assert!(m.is_empty());
    assert!(m.iter_mut().next().is_none());
    m.flush().unwrap();
    // SAFETY: as above.
    let r = unsafe { MappedBuffer::<f64>::open(&path) }.unwrap();
    assert!(r.is_empty());
    std::fs::remove_file(&path).unwrap();
}
