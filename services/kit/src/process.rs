//! Figures about the running process read from procfs and cgroupfs: resident memory, the
//! memory it may use (the machine's, or its container's limit when that is lower) and CPU use
//! since the previous reading.

use std::sync::Mutex;
use std::time::Instant;

/// Clock ticks per second of `/proc/<pid>/stat` times (the Linux `USER_HZ`, 100 everywhere).
const TICKS_PER_SECOND: f64 = 100.0;

/// Returns the resident set size of this process in bytes, when procfs is available.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    kilobytes_field(&status, "VmRSS:").map(|kb| kb * 1024)
}

/// Returns the memory this process may use, in bytes: the machine's total, or its cgroup's
/// (its container's) limit when one is set and lower; `None` without procfs.
pub fn total_memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let machine = kilobytes_field(&meminfo, "MemTotal:")? * 1024;
    Some(cgroup_memory_limit().map_or(machine, |limit| limit.min(machine)))
}

/// Reads the memory limit of this process's cgroup: `memory.max` (cgroup v2) or
/// `memory.limit_in_bytes` (v1), under its own cgroup's directory or, inside a container whose
/// cgroup filesystem is its own, at the root. `None` when there is no limit.
fn cgroup_memory_limit() -> Option<u64> {
    let membership = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let (v2, v1) = cgroup_paths(&membership);
    let candidates = [
        v2.map(|path| format!("/sys/fs/cgroup{path}/memory.max")),
        Some("/sys/fs/cgroup/memory.max".to_owned()),
        v1.map(|path| format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes")),
        Some("/sys/fs/cgroup/memory/memory.limit_in_bytes".to_owned()),
    ];
    candidates
        .into_iter()
        .flatten()
        .find_map(|file| std::fs::read_to_string(file).ok())
        .and_then(|limit| parse_memory_limit(&limit))
}

/// The cgroup v2 path and the v1 memory controller's path of a `/proc/self/cgroup` text.
fn cgroup_paths(membership: &str) -> (Option<&str>, Option<&str>) {
    let mut v2 = None;
    let mut v1 = None;
    for line in membership.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if controllers.is_empty() {
            v2 = Some(path);
        } else if controllers
            .split(',')
            .any(|controller| controller == "memory")
        {
            v1 = Some(path);
        }
    }
    (v2, v1)
}

/// Reads a cgroup memory limit: `max` (v2) or a number at or past 2^60 (v1's "unlimited") is
/// no limit.
fn parse_memory_limit(text: &str) -> Option<u64> {
    let limit: u64 = text.trim().parse().ok()?;
    (limit < 1 << 60).then_some(limit)
}

fn kilobytes_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
}

/// Returns the CPU time this process has used, in seconds.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; fields after its closing parenthesis are plain.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let mut fields = after_name.split_whitespace().skip(11); // utime is field 14
    let user: f64 = fields.next()?.parse().ok()?;
    let system: f64 = fields.next()?.parse().ok()?;
    Some((user + system) / TICKS_PER_SECOND)
}

/// Measures the share of one CPU core this process used between two readings.
#[derive(Debug)]
pub struct CpuMeter {
    last: Mutex<(Instant, f64)>,
}

impl Default for CpuMeter {
    fn default() -> Self {
        Self {
            last: Mutex::new((Instant::now(), cpu_seconds().unwrap_or(0.0))),
        }
    }
}

impl CpuMeter {
    /// Returns the CPU use since the previous call (or since creation), in percent of one core.
    pub fn percent(&self) -> f64 {
        let Some(now_cpu) = cpu_seconds() else {
            return 0.0;
        };
        let now = Instant::now();
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let wall = now.duration_since(last.0).as_secs_f64();
        let used = now_cpu - last.1;
        *last = (now, now_cpu);
        if wall <= 0.0 {
            0.0
        } else {
            (used / wall * 100.0).max(0.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_memory_of_this_process() {
        let rss = resident_bytes().expect("procfs is available on linux");
        let total = total_memory_bytes().expect("procfs is available on linux");
        assert!(rss > 0 && rss < total);
    }

    #[test]
    fn a_container_limit_is_read_from_either_cgroup_version() {
        let v2 = "0::/kubepods/pod1/abc\n";
        assert_eq!(cgroup_paths(v2), (Some("/kubepods/pod1/abc"), None));
        let v1 = "9:name=systemd:/\n4:memory:/docker/abc\n0::/\n";
        assert_eq!(cgroup_paths(v1), (Some("/"), Some("/docker/abc")));
        assert_eq!(parse_memory_limit("536870912\n"), Some(512 * 1024 * 1024));
        assert_eq!(parse_memory_limit("max\n"), None);
        assert_eq!(parse_memory_limit("9223372036854771712\n"), None);
    }

    #[test]
    fn busy_work_shows_as_cpu_use() {
        let meter = CpuMeter::default();
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed().as_millis() < 200 {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        assert!(meter.percent() > 10.0);
    }
}
