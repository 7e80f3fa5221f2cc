//! Process metrics (the names the Prometheus client libraries use): CPU
//! seconds, resident and virtual memory, open and maximum file
//! descriptors, start time. Read from /proc/self at each scrape.
use crate::metrics::{Collector, DescriptorEncoder, Exposition};

/// How a child process ended, for a log line: `exit code 3`, `killed by
/// SIGKILL`.
pub fn describe_exit(st: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!(
            "killed by {}",
            nix::sys::signal::Signal::try_from(s).map(|s| s.as_str().to_string()).unwrap_or(s.to_string())
        ),
        _ => "exited".into(),
    }
}

/// The `process_*` metrics of this process; [`crate::metrics::render`]
/// adds them to every exposition. Metrics whose /proc file is unreadable
/// are left out.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
        let mut out = Exposition::new(encoder);
        let ticks = 100.0; // USER_HZ on Linux
        let page = 4096;
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the command name (which may contain spaces).
            if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                // rest[0] is field 3 (state): utime=14, stime=15, starttime=22, vsize=23, rss=24.
                let cpu = (num(11) + num(12)) as f64 / ticks;
                out.counter_f64("process_cpu_seconds", "Total user and system CPU time spent in seconds.", cpu)?;
                out.gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.", num(20))?;
                out.gauge("process_resident_memory_bytes", "Resident memory size in bytes.", num(21) * page)?;
                if let Some(boot) = boot_time() {
                    out.gauge(
                        "process_start_time_seconds",
                        "Start time of the process since unix epoch in seconds.",
                        boot + num(19) as f64 / ticks,
                    )?;
                }
            }
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            out.gauge("process_open_fds", "Number of open file descriptors.", dir.count() as u64)?;
        }
        if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
            if let Some(max) = limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse::<u64>().ok())
            {
                out.gauge("process_max_fds", "Maximum number of open file descriptors.", max)?;
            }
        }
        Ok(())
    }
}

fn boot_time() -> Option<f64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find(|l| l.starts_with("btime "))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reports_process_metrics() {
        let m = crate::metrics::render(Vec::new());
        assert!(m.contains("\nprocess_cpu_seconds_total "), "{m}");
        assert!(m.contains("\nprocess_open_fds "), "{m}");
        let rss: f64 = m
            .lines()
            .find(|l| l.starts_with("process_resident_memory_bytes "))
            .and_then(|l| l.split(' ').nth(1))
            .unwrap()
            .parse()
            .unwrap();
        assert!(rss > 100_000.0, "{rss}");
    }
}
