//! Logs written to a pipe (a supervisor, a file, the journal) carry no
//! terminal colour codes. The test runs itself again as a child process
//! whose stderr is a pipe, and reads what the child logged.

use std::process::Command;

const CHILD: &str = "BULWARK_TELEMETRY_LOG_CHILD";
const TEST: &str = "logs_to_a_pipe_have_no_colour_codes";

#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    if std::env::var_os(CHILD).is_some() {
        bulwark_telemetry::init_logging("info", false);
        tracing::warn!(server = "a", "marked down");
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    assert!(out.status.success(), "child failed: {}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line =
        stderr.lines().find(|l| l.contains("marked down")).unwrap_or_else(|| panic!("no log line in {stderr:?}"));
    assert!(!line.contains('\u{1b}'), "colour codes in a piped log line: {line:?}");
    assert!(line.contains("WARN") && line.contains("server=\"a\""), "{line:?}");
}
