//! Tests that change the network (interfaces, addresses, iptables) run
//! inside private network and mount namespaces, so the host's network and
//! its `/run/netns` are never touched: the test re-runs itself there.
//! Tests that mount a small disk run in a private mount namespace alike.
//!
//! ```ignore
//! #[test]
//! fn my_network_test() {
//!     if !bulwark_testkit::netns::isolated("my_network_test") {
//!         return; // the run inside the namespaces passed
//!     }
//!     // ... inside: `ip`, `iptables`, `ip netns add` are private.
//! }
//! ```

use std::process::Command;

const INSIDE: &str = "BULWARK_TEST_IN_PRIVATE_NETNS";

/// Re-run test `name` (its exact name) inside new network and mount
/// namespaces (`unshare`, root) and assert that it passed there; returns
/// false. Inside, returns true at once: the caller then does the work.
pub fn isolated(name: &str) -> bool {
    rerun_in(name, &["--net", "--mount", "--propagation", "private"])
}

/// Like [`isolated`], in a new mount namespace only: the network stays the
/// host's (a test that mounts a small disk but talks over `127.0.0.1`).
pub fn isolated_mounts(name: &str) -> bool {
    rerun_in(name, &["--mount", "--propagation", "private"])
}

fn rerun_in(name: &str, namespaces: &[&str]) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        return true;
    }
    let status = Command::new("unshare")
        .args(namespaces)
        .arg("--")
        .arg(std::env::current_exe().expect("current_exe"))
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .status()
        .expect("running unshare (util-linux; tests that change the network need root)");
    assert!(status.success(), "{name} failed inside its private namespaces: {status}");
    false
}

/// Run a command and fail the test if it fails.
pub fn sh(cmd: &str, args: &[&str]) {
    let s = Command::new(cmd).args(args).status().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(s.success(), "{cmd} {args:?} failed: {s}");
}

/// Mount a private tmpfs on `/run/netns`, so `ip netns add` names stay
/// inside this test's mount namespace. Call once, inside [`isolated`].
pub fn private_run_netns() {
    assert!(std::env::var_os(INSIDE).is_some(), "private_run_netns outside the private namespaces");
    std::fs::create_dir_all("/run/netns").expect("mkdir /run/netns");
    sh("mount", &["-t", "tmpfs", "bulwark-test-netns", "/run/netns"]);
}
