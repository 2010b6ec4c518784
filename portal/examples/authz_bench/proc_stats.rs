//! CPU and memory figures from /proc: per process, and for the whole
//! machine, so the bench can say who used the cores during a phase.

/// Clock ticks per second of `/proc/*/stat` times (USER_HZ).
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// User + system CPU seconds used so far by process `pid` (all threads).
pub fn process_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces; fields resume after ')'.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after ')'.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    ticks / ticks_per_second()
}

/// Busy and total CPU seconds of the whole machine (all cores).
pub fn machine_cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next() else {
        return (0.0, 0.0);
    };
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is in user).
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    let hz = ticks_per_second();
    ((total - idle) / hz, total / hz)
}

pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// CPU use over an interval, in percent of one core.
pub struct CpuWindow {
    portal_pid: u32,
    start: Sample,
}

struct Sample {
    at: std::time::Instant,
    portal: f64,
    load: f64,
    machine_busy: f64,
    machine_total: f64,
}

fn sample(portal_pid: u32) -> Sample {
    let (machine_busy, machine_total) = machine_cpu_seconds();
    Sample {
        at: std::time::Instant::now(),
        portal: process_cpu_seconds(portal_pid),
        load: process_cpu_seconds(std::process::id()),
        machine_busy,
        machine_total,
    }
}

/// Percent of one core: the portal, this load generator, everything else
/// on the machine, and how many cores' worth the machine had.
#[derive(Debug, Clone, Copy)]
pub struct CpuUse {
    pub portal: f64,
    pub load: f64,
    pub other: f64,
    pub cores: f64,
}

impl CpuWindow {
    pub fn start(portal_pid: u32) -> Self {
        Self {
            portal_pid,
            start: sample(portal_pid),
        }
    }

    pub fn finish(&self) -> CpuUse {
        let end = sample(self.portal_pid);
        let wall = end.at.duration_since(self.start.at).as_secs_f64();
        let pct = |a: f64, b: f64| 100.0 * (b - a) / wall;
        let portal = pct(self.start.portal, end.portal);
        let load = pct(self.start.load, end.load);
        let busy = pct(self.start.machine_busy, end.machine_busy);
        CpuUse {
            portal,
            load,
            other: (busy - portal - load).max(0.0),
            cores: (end.machine_total - self.start.machine_total) / wall,
        }
    }
}

impl std::fmt::Display for CpuUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CPU portal {:.0}%, load generator {:.0}%, other processes {:.0}% (of {:.0}%)",
            self.portal,
            self.load,
            self.other,
            self.cores * 100.0
        )
    }
}
