//! Process metrics in Prometheus text (the names the Prometheus client
//! libraries use): CPU seconds, resident and virtual memory, open and
//! maximum file descriptors, start time. Read from /proc/self.
use std::fmt::Write;

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

/// `process_*` metrics for this process; empty where /proc is unreadable.
pub fn process_metrics() -> String {
    let mut out = String::new();
    let ticks = 100.0; // USER_HZ on Linux
    let page = 4096.0;
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name (which may contain spaces).
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            // rest[0] is field 3 (state): utime=14, stime=15, starttime=22, vsize=23, rss=24.
            let cpu = (num(11) + num(12)) / ticks;
            let _ = writeln!(out, "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.");
            let _ = writeln!(out, "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {cpu}");
            let _ = writeln!(out, "# HELP process_virtual_memory_bytes Virtual memory size in bytes.");
            let _ =
                writeln!(out, "# TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes {}", num(20));
            let _ = writeln!(out, "# HELP process_resident_memory_bytes Resident memory size in bytes.");
            let _ = writeln!(
                out,
                "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {}",
                num(21) * page
            );
            if let Some(boot) = boot_time() {
                let _ = writeln!(
                    out,
                    "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds."
                );
                let _ = writeln!(
                    out,
                    "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {}",
                    boot + num(19) / ticks
                );
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        let _ = writeln!(out, "# HELP process_open_fds Number of open file descriptors.");
        let _ = writeln!(out, "# TYPE process_open_fds gauge\nprocess_open_fds {}", dir.count());
    }
    if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
        if let Some(max) = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse::<f64>().ok())
        {
            let _ = writeln!(out, "# HELP process_max_fds Maximum number of open file descriptors.");
            let _ = writeln!(out, "# TYPE process_max_fds gauge\nprocess_max_fds {max}");
        }
    }
    out
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
        let m = super::process_metrics();
        assert!(m.contains("process_cpu_seconds_total "), "{m}");
        assert!(m.contains("process_resident_memory_bytes "), "{m}");
        assert!(m.contains("process_open_fds "), "{m}");
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
