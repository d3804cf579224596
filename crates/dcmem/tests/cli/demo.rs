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
