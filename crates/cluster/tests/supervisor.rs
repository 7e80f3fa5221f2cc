//! The supervisor with real child processes (`sh` scripts that print a
//! ready line), real signals and a real control socket.
use bulwark_cluster::{control_request, ChildSpec, ControlRequest, Readiness, RestartPolicy, Supervisor};
use std::time::Duration;

fn spec(dir: &std::path::Path, name: &str, stage: u8) -> ChildSpec {
    ChildSpec {
        name: name.into(),
        kind: bulwark_config::topology::RoleKind::Web,
        host: "h".into(),
        stage,
        program: "/bin/sh".into(),
        args: vec![
            "-c".into(),
            format!("echo started >> {}/{name}.starts; echo '{{\"ready\":{{\"role\":\"test\",\"listeners\":{{\"x\":\"127.0.0.1:1\"}}}}}}'; exec sleep 1000", dir.display()),
        ],
        log_path: dir.join(format!("{name}.log")),
        readiness: Readiness::ReadyLine,
    }
}

fn alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| s.contains(") Z ")).unwrap_or(true)
}

#[tokio::test(flavor = "current_thread")]
async fn starts_in_stages_restarts_crashes_obeys_control_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let policy = RestartPolicy { initial_backoff: Duration::from_millis(50), ..Default::default() };
    let sup = Supervisor::new(vec![spec(dir.path(), "db1", 0), spec(dir.path(), "web1", 1)], policy);
    let mut steps = Vec::new();
    sup.start_all(|s| steps.push(s.to_string())).await.unwrap();
    assert!(steps[0].contains("starting db1") && steps[2].contains("starting web1"), "{steps:?}");
    let web = sup.child("web1").unwrap();
    assert_eq!(web.state, "ready");
    assert_eq!(web.listeners["x"], "127.0.0.1:1");

    // A crash (SIGKILL) is restarted with backoff.
    let pid = web.pid.unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    assert!(
        sup.wait_state("web1", "backoff", Duration::from_secs(30)).await || sup.child("web1").unwrap().restarts > 0
    );
    sup.wait_ready("web1").await.unwrap();
    let web = sup.child("web1").unwrap();
    assert_eq!(web.restarts, 1);
    assert_ne!(web.pid.unwrap(), pid);
    assert_eq!(web.last_exit.as_deref(), Some("killed by SIGKILL"));

    // Control socket: stop keeps it down, start brings it back.
    let sock = dir.path().join("control.sock");
    let stop = tokio_util::sync::CancellationToken::new();
    sup.serve_control(&sock, stop.clone()).await.unwrap();
    let r = control_request(&sock, &ControlRequest::Stop { node: "web1".into() }).await.unwrap();
    assert!(r.ok, "{r:?}");
    let web = r.children.iter().find(|c| c.name == "web1").unwrap();
    assert_eq!(web.state, "stopped");
    let r = control_request(&sock, &ControlRequest::Stop { node: "nope".into() }).await.unwrap();
    assert!(!r.ok && r.error.unwrap().contains("no role named `nope`"));
    let r = control_request(&sock, &ControlRequest::Start { node: "web1".into() }).await.unwrap();
    assert!(r.ok, "{r:?}");
    // Kill: SIGKILL, and no restart until start.
    let pid = sup.child("web1").unwrap().pid.unwrap();
    let r = control_request(&sock, &ControlRequest::Kill { node: "web1".into() }).await.unwrap();
    assert!(r.ok, "{r:?}");
    let web = r.children.iter().find(|c| c.name == "web1").unwrap();
    assert_eq!((web.state.as_str(), web.pid, web.last_exit.as_deref()), ("stopped", None, Some("killed by SIGKILL")));
    assert!(!alive(pid), "killed child {pid} still running");
    let r = control_request(&sock, &ControlRequest::Start { node: "web1".into() }).await.unwrap();
    assert!(r.ok, "{r:?}");
    let pids: Vec<u32> = sup.status().iter().filter_map(|c| c.pid).collect();
    assert_eq!(pids.len(), 2);
    // Each start wrote a line before its ready line: 4 starts in all.
    let starts = std::fs::read_to_string(dir.path().join("web1.starts")).unwrap();
    assert_eq!(starts.lines().count(), 4);

    // Shutdown: every child gone.
    sup.shutdown().await;
    stop.cancel();
    for pid in pids {
        assert!(!alive(pid), "child {pid} still running after shutdown");
    }
    assert!(sup.status().iter().all(|c| c.state == "stopped"));
}

/// A child that says it cannot serve yet (a failed line: an app whose
/// program does not start) is reported by name and reason, and does not
/// stop the others of its stage from starting; it turns ready when it can.
#[tokio::test(flavor = "current_thread")]
async fn a_failing_child_is_named_and_the_rest_starts() {
    let dir = tempfile::tempdir().unwrap();
    let mut bad = spec(dir.path(), "app1", 0);
    let flag = dir.path().join("fixed");
    bad.args = vec![
        "-c".into(),
        format!(
            "echo '{{\"failed\":{{\"role\":\"app\",\"error\":\"program `x` not found\"}}}}'; \
             while [ ! -e {} ]; do sleep 0.05; done; \
             echo '{{\"ready\":{{\"role\":\"app\",\"listeners\":{{\"http\":\"127.0.0.1:1\"}}}}}}'; exec sleep 1000",
            flag.display()
        ),
    ];
    let sup = Supervisor::new(vec![bad, spec(dir.path(), "app2", 0), spec(dir.path(), "web1", 1)], Default::default());
    let mut steps = Vec::new();
    let failing = sup.start_all(|s| steps.push(s.to_string())).await.unwrap();
    assert_eq!(failing, ["app1"]);
    assert!(steps.iter().any(|s| s.contains("app1 FAILING: program `x` not found")), "{steps:?}");
    assert_eq!(sup.child("web1").unwrap().state, "ready");
    assert_eq!(sup.child("app1").unwrap().state, "failing");
    std::fs::write(&flag, "").unwrap();
    assert!(sup.wait_state("app1", "ready", Duration::from_secs(60)).await);
    sup.shutdown().await;
}

/// A child killed from outside, then stopped while its restart waits out
/// the backoff: it stays down, and its state says so.
#[tokio::test(flavor = "current_thread")]
async fn a_stop_during_the_restart_backoff_keeps_the_child_down() {
    let dir = tempfile::tempdir().unwrap();
    let policy = RestartPolicy { initial_backoff: Duration::from_millis(1500), ..Default::default() };
    let sup = Supervisor::new(vec![spec(dir.path(), "app1", 0)], policy);
    sup.start_all(|_| {}).await.unwrap();
    let pid = sup.child("app1").unwrap().pid.unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    assert!(sup.wait_state("app1", "backoff", Duration::from_secs(30)).await);
    let sock = dir.path().join("control.sock");
    let stop = tokio_util::sync::CancellationToken::new();
    sup.serve_control(&sock, stop.clone()).await.unwrap();
    let r = control_request(&sock, &ControlRequest::Stop { node: "app1".into() }).await.unwrap();
    assert!(r.ok, "{r:?}");
    let app = r.children.iter().find(|c| c.name == "app1").unwrap();
    assert_eq!((app.state.as_str(), app.pid), ("stopped", None), "{app:?}");
    // Past the backoff: still down, started once only.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let app = sup.child("app1").unwrap();
    assert_eq!((app.state.as_str(), app.pid), ("stopped", None), "{app:?}");
    let starts = std::fs::read_to_string(dir.path().join("app1.starts")).unwrap();
    assert_eq!(starts.lines().count(), 1, "restarted after the stop");
    sup.shutdown().await;
    stop.cancel();
}
