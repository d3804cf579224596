//! `dcmem demo`: the walk through states, views, errors and statistics.

use crate::support::*;

#[test]
fn demo_walks_through_the_states() {
    for backend in ["sim", "cpu"] {
        let o = dcmem(&["demo", "--backend", backend]);
        assert!(o.status.success(), "stderr: {}", stderr(&o));
        let out = stdout(&o);
        for state in ["HostOnly", "Synchronized", "HostDirty", "DeviceDirty"] {
            assert!(out.contains(state), "{backend}: no {state}:\n{out}");
        }
        // The conflict, the length mismatch and the bad range are shown as errors.
        assert_eq!(out.matches("-> Error:").count(), 3, "{out}");
        assert!(out.contains("concurrent modification"), "{out}");
        assert!(out.contains("pool_hit_rate"), "{out}");
        // The kernel doubled the 42.0 written on the host, on the device.
        assert!(out.contains("double every element"), "{backend}: no kernel ran:\n{out}");
        assert!(out.contains("buf.as_slice()?[0] = 84 "), "{backend}: the kernel's result is not read back:\n{out}");
    }
}

/// Every line after a step names the buffer its state and counters belong to, and a new buffer
/// starts its own count.
#[test]
fn demo_labels_the_counters_of_each_buffer() {
    let o = dcmem(&["demo", "--backend", "sim"]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let out = stdout(&o);
    let counted: Vec<&str> = out.lines().filter(|l| l.contains("host→device")).collect();
    assert!(counted.len() > 10, "{out}");
    for line in &counted {
        let labelled = ["buf", "again"]
            .iter()
            .any(|b| line.contains(&format!("{b}.state() = ")) && line.contains(&format!("{b}.metrics(): ")));
        assert!(labelled, "unlabelled counters: {line}");
    }
    let upload = counted.iter().find(|l| l.contains("(upload once)")).expect("the upload step");
    assert!(upload.contains("buf.metrics(): 1 host→device, 0 device→host"), "{upload}");
    let again = counted.iter().find(|l| l.contains("let again")).expect("the reallocation step");
    assert!(again.contains("again.state() = HostOnly"), "{again}");
    assert!(again.contains("again.metrics(): 0 host→device, 0 device→host"), "{again}");
}

/// On unified memory the demo says nothing is copied and points to sim, where copies show.
#[test]
fn demo_on_cpu_points_to_sim_for_copies() {
    let o = dcmem(&["demo"]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("no step copies") && out.contains("`dcmem demo --backend sim`"), "{out}");
}
