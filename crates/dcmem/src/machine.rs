//! What machine the numbers come from: CPU model, cores, memory, OS.

use serde::Serialize;

/// The machine a benchmark ran on, as far as the OS tells.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPU model (`model name` in /proc/cpuinfo), or the architecture when unknown.
    pub cpu: String,
    /// Logical CPUs this process may use.
    pub logical_cores: usize,
    /// Total RAM in bytes, when known.
    pub memory_bytes: Option<u64>,
    /// Operating system (PRETTY_NAME in /etc/os-release), or the target OS.
    pub os: String,
    /// Kernel release, when known.
    pub kernel: Option<String>,
    /// Target architecture.
    pub arch: &'static str,
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

impl Machine {
    /// Looks the machine up (Linux files, with portable fallbacks).
    pub fn detect() -> Self {
        let cpu = read("/proc/cpuinfo")
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name") || l.starts_with("Model") || l.starts_with("cpu model"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        let memory_bytes = read("/proc/meminfo").and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        });
        let os = read("/etc/os-release")
            .and_then(|s| {
                s.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=")).map(|v| v.trim().trim_matches('"').to_string())
            })
            .unwrap_or_else(|| std::env::consts::OS.to_string());
        Machine {
            cpu,
            logical_cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            memory_bytes,
            os,
            kernel: read("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()),
            arch: std::env::consts::ARCH,
        }
    }

    /// One line: `"AMD EPYC 7B13, 2 logical cores, 23.4 GiB, Debian GNU/Linux 13 (kernel 6.1)"`.
    pub fn summary(&self) -> String {
        let mut s = format!("{}, {} logical cores", self.cpu, self.logical_cores);
        if let Some(m) = self.memory_bytes {
            s += &format!(", {:.1} GiB RAM", m as f64 / (1u64 << 30) as f64);
        }
        s += &format!(", {}", self.os);
        if let Some(k) = &self.kernel {
            s += &format!(" (kernel {k})");
        }
        s
    }
}
