//! What the kernel says about processes: CPU time and resident memory from
//! `/proc`, and the processes whose command line names something. Linux
//! only, as the tests and benchmarks are.

/// Clock ticks per second of `/proc/PID/stat`. Linux reports CPU times in
/// USER_HZ, which is 100 on every architecture it exports to user space.
const TICKS_PER_SECOND: f64 = 100.0;

/// The fields of `/proc/PID/stat` after the command name (which is in
/// parentheses and may hold spaces): state(0) ppid(1) ... utime(11)
/// stime(12) cutime(13) cstime(14).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn ticks(fields: &[String], range: std::ops::RangeInclusive<usize>) -> Option<f64> {
    let mut total = 0.0;
    for index in range {
        total += fields.get(index)?.parse::<f64>().ok()? / TICKS_PER_SECOND;
    }
    Some(total)
}

/// Every process id on the machine.
pub fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The parent of `pid`.
pub fn parent_of(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// CPU seconds (user + system) `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    ticks(&stat_fields(pid)?, 11..=12)
}

/// The same for `pid` and its children (a PostgreSQL postmaster and its
/// backends): its own time, what its exited children left it, and its live
/// children's own time.
pub fn cpu_seconds_tree(pid: u32) -> Option<f64> {
    let mut total = ticks(&stat_fields(pid)?, 11..=14)?;
    for child in pids() {
        if parent_of(child) == Some(pid) {
            total += cpu_seconds(child).unwrap_or(0.0);
        }
    }
    Some(total)
}

/// Busy CPU seconds of the whole machine so far (all CPUs, from the first
/// line of `/proc/stat`: everything but idle and iowait).
pub fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<f64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: f64 = fields
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .take(8)
        .map(|(_, v)| v)
        .sum();
    Some(busy / TICKS_PER_SECOND)
}

/// A `VmXXX:` field of `/proc/PID/status`, in bytes.
pub fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    let kib: u64 = line[field.len()..]
        .trim_start_matches(':')
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Resident memory now.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    status_bytes(pid, "VmRSS")
}

/// The highest resident memory since the process started.
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    status_bytes(pid, "VmHWM")
}

/// The command line of `pid`, its arguments joined by spaces.
pub fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(String::from_utf8_lossy(&raw).replace('\0', " "))
}

/// A process whose command line holds `needle`, among the children of
/// `parent` when given.
pub fn pid_with_cmdline(needle: &str, parent: Option<u32>) -> Option<u32> {
    pids().into_iter().find(|&pid| {
        parent.is_none_or(|p| parent_of(pid) == Some(p))
            && cmdline(pid).is_some_and(|line| line.contains(needle))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_seen() {
        let me = std::process::id();
        assert!(cpu_seconds(me).is_some());
        assert!(rss_bytes(me).unwrap() > 0);
        assert!(peak_rss_bytes(me).unwrap() >= rss_bytes(me).unwrap() / 2);
        assert!(machine_busy_seconds().unwrap() > 0.0);
        assert!(pids().contains(&me));
        assert!(cmdline(me).is_some());
    }
}
