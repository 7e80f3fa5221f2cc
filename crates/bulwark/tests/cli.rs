//! One-shot commands whose reader goes away end quietly (SIGPIPE), as Unix
//! tools do, instead of panicking while printing.
use bulwark_testkit::config::DbConfig;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};

#[test]
fn a_one_shot_command_with_a_closed_stdout_ends_by_sigpipe_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("db.toml");
    std::fs::write(&cfg, DbConfig::new(1, Path::new("d"), "0123456789abcdef").to_toml()).unwrap();
    // A pipe whose read end is closed before the command starts.
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    let out = Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .args(["check", "-c"])
        .arg(&cfg)
        .stdout(Stdio::from(write))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.signal(), Some(nix::libc::SIGPIPE), "{:?}: {stderr}", out.status);
}
