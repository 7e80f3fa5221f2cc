//! What an operator's machine exposes: the admin listener never serves
//! without a token off loopback.
use bulwark_testkit::{bulwark_bin, Process, PATIENCE};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

/// Run `cmd` to its end, bounded by [`PATIENCE`].
fn run(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let start = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if start.elapsed() > PATIENCE {
            let _ = child.kill();
            panic!("{cmd:?} did not end");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn lb_config(admin: &str) -> String {
    format!(
        "threads = 1\n[admin]\n{admin}\n[[frontend]]\nname = \"www\"\nbind = \"127.0.0.1:0\"\nbackend = \"web\"\n\
         [[backend]]\nname = \"web\"\n[[backend.server]]\nname = \"web1\"\naddress = \"127.0.0.1:9\"\n"
    )
}

#[test]
fn an_admin_listener_off_loopback_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");

    // Public address, no token: `check` and the lb itself refuse, naming
    // the file, line and key.
    std::fs::write(&path, lb_config("bind = \"0.0.0.0:0\"")).unwrap();
    let check = run({
        let mut c = Command::new(bulwark_bin());
        c.arg("check").arg("-c").arg(&path);
        c
    });
    let err = text(&check.stderr);
    assert!(!check.status.success(), "{err}");
    let expected = format!("{}:2: admin.token: required when the admin listener binds a non-loopback", path.display());
    assert!(err.contains(&expected), "{err}");
    let lb = run({
        let mut c = Command::new(bulwark_bin());
        c.arg("lb").arg("-c").arg(&path);
        c
    });
    assert!(!lb.status.success());
    assert!(text(&lb.stderr).contains("admin.token: required"), "{}", text(&lb.stderr));
    assert!(!text(&lb.stdout).contains("\"ready\""), "the lb started: {}", text(&lb.stdout));

    // An empty token is no token.
    std::fs::write(&path, lb_config("bind = \"[::]:0\"\ntoken = \"\"")).unwrap();
    let check = run({
        let mut c = Command::new(bulwark_bin());
        c.arg("check").arg("-c").arg(&path);
        c
    });
    assert!(text(&check.stderr).contains("admin.token: must not be empty"), "{}", text(&check.stderr));

    // With a token file, or on loopback, it is fine.
    for admin in ["bind = \"0.0.0.0:0\"\ntoken_file = \"/etc/bulwark/admin.token\"", "bind = \"127.0.0.1:0\""] {
        std::fs::write(&path, lb_config(admin)).unwrap();
        let check = run({
            let mut c = Command::new(bulwark_bin());
            c.arg("check").arg("-c").arg(&path);
            c
        });
        assert!(check.status.success(), "{admin}: {}", text(&check.stderr));
    }
    // Loopback without a token really serves (to this machine only).
    let lb = Process::start("lb", &lb_config("bind = \"127.0.0.1:0\""));
    assert_eq!(bulwark_testkit::get(lb.addr("admin"), "/stats").unwrap().status, 200);
}
