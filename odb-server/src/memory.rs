//! How much memory the machine gives the server, to derive defaults that scale with it: the
//! server-wide budget of bytes queued for clients
//! ([`ServerConfig::max_outbound_total_bytes`](crate::ServerConfig::max_outbound_total_bytes)).

use std::path::Path;

/// The budget of queued outbound bytes when none is configured and the memory cannot be read.
pub(crate) const FALLBACK_OUTBOUND_BUDGET: usize = 1 << 30;

/// The default server-wide budget of bytes queued for clients: a quarter of the memory
/// available to the server (the machine's `MemTotal`, or its cgroup's `memory.max` when that
/// is lower), or [`FALLBACK_OUTBOUND_BUDGET`] when neither can be read (not Linux).
pub(crate) fn default_outbound_budget() -> usize {
    let total = read(Path::new("/proc/meminfo")).and_then(|t| mem_total(&t));
    let cgroup = read(Path::new("/sys/fs/cgroup/memory.max")).and_then(|t| cgroup_max(&t));
    budget_of(total, cgroup)
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// A quarter of the smaller of the known amounts, in bytes.
fn budget_of(total: Option<u64>, cgroup: Option<u64>) -> usize {
    let available = match (total, cgroup) {
        (Some(t), Some(c)) => t.min(c),
        (Some(m), None) | (None, Some(m)) => m,
        (None, None) => return FALLBACK_OUTBOUND_BUDGET,
    };
    usize::try_from(available / 4).unwrap_or(usize::MAX).max(1)
}

/// `MemTotal` of /proc/meminfo, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

/// A cgroup v2 `memory.max`: a number of bytes, or `max` for no limit.
fn cgroup_max(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quarter_of_the_smaller_known_amount() {
        let meminfo = "MemTotal:       16318412 kB\nMemFree:          123 kB\n";
        let total = mem_total(meminfo);
        assert_eq!(total, Some(16318412 * 1024));
        assert_eq!(budget_of(total, None), 16318412 * 256);
        assert_eq!(budget_of(total, cgroup_max("4294967296\n")), 1 << 30);
        assert_eq!(budget_of(total, cgroup_max("max\n")), 16318412 * 256);
        assert_eq!(budget_of(None, None), FALLBACK_OUTBOUND_BUDGET);
        assert_eq!(mem_total("garbage"), None);
        assert!(default_outbound_budget() > 0);
    }
}
