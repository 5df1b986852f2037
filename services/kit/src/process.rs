//! Figures about the running process read from procfs: resident memory, the machine's memory
//! and CPU use since the previous reading.

use std::sync::Mutex;
use std::time::Instant;

/// Clock ticks per second of `/proc/<pid>/stat` times (the Linux `USER_HZ`, 100 everywhere).
const TICKS_PER_SECOND: f64 = 100.0;

/// Returns the resident set size of this process in bytes, when procfs is available.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    kilobytes_field(&status, "VmRSS:").map(|kb| kb * 1024)
}

/// Returns the machine's total memory in bytes, when procfs is available.
pub fn total_memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    kilobytes_field(&meminfo, "MemTotal:").map(|kb| kb * 1024)
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
