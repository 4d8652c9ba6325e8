//! CPU time and memory of a process, from /proc (Linux).

use std::path::PathBuf;
use std::time::Duration;

/// Clock ticks per second of /proc/<pid>/stat times (`getconf CLK_TCK`; 100 on Linux).
const TICKS_PER_SECOND: u64 = 100;

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unexpected format of {0}")]
    Format(PathBuf),
}

/// One reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// User plus system CPU time.
    pub cpu: Duration,
    pub rss_bytes: u64,
}

/// Busy CPU time of the whole machine (all cores, idle and iowait excluded), from the
/// first line of /proc/stat.
pub fn machine_busy() -> Option<Duration> {
    parse_machine_busy(&std::fs::read_to_string("/proc/stat").ok()?)
}

pub fn parse_machine_busy(stat: &str) -> Option<Duration> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal …: busy = all but idle and iowait.
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4)?;
    Some(Duration::from_millis(
        (total - idle) * 1000 / TICKS_PER_SECOND,
    ))
}

/// `pid` or "self".
#[derive(Debug, Clone)]
pub struct Proc {
    dir: PathBuf,
}

impl Proc {
    pub fn new(pid: Option<u32>) -> Proc {
        Proc {
            dir: PathBuf::from(match pid {
                Some(p) => format!("/proc/{p}"),
                None => "/proc/self".to_owned(),
            }),
        }
    }

    pub fn sample(&self) -> Result<Sample, ProcError> {
        let stat_path = self.dir.join("stat");
        let stat = read(&stat_path)?;
        let cpu = parse_stat_cpu(&stat).ok_or(ProcError::Format(stat_path))?;
        let status_path = self.dir.join("status");
        let status = read(&status_path)?;
        let rss_bytes =
            parse_status_kib(&status, "VmRSS:").ok_or(ProcError::Format(status_path))? * 1024;
        Ok(Sample { cpu, rss_bytes })
    }
}

fn read(path: &PathBuf) -> Result<String, ProcError> {
    std::fs::read_to_string(path).map_err(|source| ProcError::Read {
        path: path.clone(),
        source,
    })
}

/// utime + stime from /proc/<pid>/stat. The command name (field 2) may contain spaces and
/// parentheses, so fields are counted after its closing parenthesis.
pub fn parse_stat_cpu(stat: &str) -> Option<Duration> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis(
        (utime + stime) * 1000 / TICKS_PER_SECOND,
    ))
}

/// A `Key:   123 kB` line of /proc/<pid>/status, in KiB.
pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_survives_odd_command_names() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 100 1000 200";
        assert_eq!(parse_stat_cpu(stat), Some(Duration::from_millis(3000)));
        assert_eq!(parse_stat_cpu("garbage"), None);
    }

    #[test]
    fn status_rss() {
        let status = "Name:\toxiscale\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(parse_status_kib(status, "VmRSS:"), Some(1024));
        assert_eq!(parse_status_kib(status, "VmHWM:"), Some(2048));
        assert_eq!(parse_status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn machine_busy_excludes_idle_and_iowait() {
        let stat = "cpu  100 5 50 1000 20 1 2 3 0 0\ncpu0 1 2 3\n";
        assert_eq!(parse_machine_busy(stat), Some(Duration::from_millis(1610)));
        assert_eq!(parse_machine_busy("intr 1 2"), None);
    }

    #[test]
    fn reads_this_process() {
        let s = Proc::new(None).sample().unwrap();
        assert!(s.rss_bytes > 0);
    }
}
