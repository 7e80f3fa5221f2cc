//! Floating addresses on real interfaces: two routers (and keepalived,
//! the reference implementation) in two network namespaces joined by a
//! veth pair. Every test re-runs itself inside a private network and mount
//! namespace (`unshare`, needs root as the test environment has), so the
//! host's network and /run/netns are never touched.
//!
//! Each Bulwark router runs on its own thread, moved into its namespace
//! with setns(2), with a current-thread runtime: its raw socket and netlink
//! socket are that namespace's.

use bulwark_config::vrrp::VrrpInstance;
use bulwark_testkit::netns::{isolated as inside, private_run_netns, sh};
use bulwark_testkit::wait_until;
use bulwark_vrrp::instance::{run, InstanceStatus};
use bulwark_vrrp::router::State;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const VIP: &str = "10.9.0.100";

/// Hosts `a` (10.9.0.1) and `b` (10.9.0.2), each with `eth0` on one veth pair.
fn two_hosts() {
    private_run_netns();
    sh("ip", &["netns", "add", "a"]);
    sh("ip", &["netns", "add", "b"]);
    sh("ip", &["link", "add", "eth0", "netns", "a", "type", "veth", "peer", "name", "eth0", "netns", "b"]);
    for (ns, ip) in [("a", "10.9.0.1/24"), ("b", "10.9.0.2/24")] {
        sh("ip", &["-n", ns, "addr", "add", ip, "dev", "eth0"]);
        sh("ip", &["-n", ns, "link", "set", "eth0", "up"]);
        sh("ip", &["-n", ns, "link", "set", "lo", "up"]);
    }
}

fn holds_vip(ns: &str) -> bool {
    let out = Command::new("ip").args(["-n", ns, "-4", "-o", "addr", "show", "dev", "eth0"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).contains(&format!("inet {VIP}/"))
}

fn config(priority: u8) -> VrrpInstance {
    let text = format!(
        "name = \"www\"\ninterface = \"eth0\"\nvrid = 51\npriority = {priority}\n\
         advert_interval = \"100ms\"\naddresses = [\"{VIP}/24\"]\n"
    );
    bulwark_config::from_str(&text, "test").unwrap_or_else(|e| panic!("{e}"))
}

/// One Bulwark router in namespace `ns`.
struct Speaker {
    status: Arc<InstanceStatus>,
    stop: CancellationToken,
    serving: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl Speaker {
    fn start(ns: &str, config: VrrpInstance) -> Speaker {
        let status = Arc::new(InstanceStatus::default());
        let stop = CancellationToken::new();
        let (serving, health) = watch::channel(true);
        let netns = File::open(format!("/run/netns/{ns}")).unwrap();
        let (st, sp) = (status.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            // SAFETY: setns(2) on a valid descriptor; it moves this thread only.
            let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(run(config, health, sp, st)).expect("vrrp instance failed");
        });
        Speaker { status, stop, serving, thread: Some(thread) }
    }

    fn state(&self) -> State {
        self.status.state()
    }

    /// A clean stop: priority 0, addresses released.
    fn stop(mut self) {
        self.stop.cancel();
        self.thread.take().unwrap().join().expect("vrrp thread panicked");
    }
}

impl Drop for Speaker {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// keepalived (its parent and VRRP child) in namespace `ns`, as a peer of
/// the same virtual router, in a process group of its own.
struct Keepalived(Child);

impl Keepalived {
    /// kill -9 of every keepalived process, as when its host dies.
    fn kill(mut self) {
        let group = nix::unistd::Pid::from_raw(-(self.0.id() as i32));
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
        self.0.wait().unwrap();
        wait_until("every keepalived process to be gone", || nix::sys::signal::kill(group, None).is_err());
    }
}

fn keepalived(ns: &str, priority: u8) -> Keepalived {
    static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = format!("/tmp/bulwark-vrrp-test-{}-{n}", std::process::id());
    std::fs::create_dir_all(&dir).unwrap();
    let conf = format!("{dir}/keepalived.conf");
    std::fs::write(
        &conf,
        format!(
            "global_defs {{\n  router_id {ns}\n}}\nvrrp_instance www {{\n  state BACKUP\n  interface eth0\n  \
             virtual_router_id 51\n  priority {priority}\n  advert_int 0.1\n  version 3\n  \
             virtual_ipaddress {{\n    {VIP}/24\n  }}\n}}\n"
        ),
    )
    .unwrap();
    Command::new("ip")
        .args(["netns", "exec", ns, "keepalived", "--dont-fork", "--log-console", "--vrrp", "-f", &conf])
        .args(["-p", &format!("{dir}/k.pid"), "-r", &format!("{dir}/v.pid")])
        .stdout(Stdio::null())
        .stderr(File::options().create(true).append(true).open(format!("{dir}/log")).unwrap())
        .process_group(0)
        .spawn()
        .map(Keepalived)
        .expect("keepalived (the test dependencies install it)")
}

#[test]
fn the_backup_takes_over_on_a_clean_stop_and_gives_back_to_a_higher_priority() {
    if !inside("the_backup_takes_over_on_a_clean_stop_and_gives_back_to_a_higher_priority") {
        return;
    }
    two_hosts();
    // a loses 50 (the default track_weight) while it cannot serve: below b.
    let a = Speaker::start("a", config(150));
    let b = Speaker::start("b", config(120));
    wait_until("a to be master and b backup", || a.state() == State::Master && b.state() == State::Backup);
    wait_until("the address on a only", || holds_vip("a") && !holds_vip("b"));

    // Health tracking: a cannot serve, its priority drops below b's, b takes over.
    a.serving.send(false).unwrap();
    wait_until("b to take over from an unhealthy a", || b.state() == State::Master && a.state() == State::Backup);
    wait_until("the address to move to b", || holds_vip("b") && !holds_vip("a"));
    a.serving.send(true).unwrap();
    wait_until("a to preempt again once healthy", || a.state() == State::Master && b.state() == State::Backup);
    wait_until("the address back on a", || holds_vip("a") && !holds_vip("b"));

    // A clean stop: priority 0, address released, b master at once.
    a.stop();
    wait_until("b to become master", || b.state() == State::Master);
    wait_until("the address on b only", || holds_vip("b") && !holds_vip("a"));
    assert!(b.status.adverts_received.load(std::sync::atomic::Ordering::Relaxed) > 0);
    assert_eq!(b.status.bad_packets.load(std::sync::atomic::Ordering::Relaxed), 0);

    // a comes back with the higher priority and preempts.
    let a = Speaker::start("a", config(150));
    wait_until("a to preempt", || a.state() == State::Master && b.state() == State::Backup);
    wait_until("the address back on a only", || holds_vip("a") && !holds_vip("b"));
    b.stop();
    a.stop();
    assert!(!holds_vip("a"), "a clean stop leaves the address behind");
}

#[test]
fn keepalived_and_bulwark_hand_the_address_over_both_ways() {
    if !inside("keepalived_and_bulwark_hand_the_address_over_both_ways") {
        return;
    }
    two_hosts();
    // keepalived master (200), Bulwark backup (100): kill -9 keepalived.
    let k = keepalived("a", 200);
    let b = Speaker::start("b", config(100));
    wait_until("keepalived to hold the address", || holds_vip("a"));
    wait_until("Bulwark to follow keepalived as backup", || {
        b.state() == State::Backup && b.status.adverts_received.load(std::sync::atomic::Ordering::Relaxed) > 3
    });
    assert_eq!(b.status.bad_packets.load(std::sync::atomic::Ordering::Relaxed), 0, "keepalived's adverts refused");
    k.kill();
    wait_until("Bulwark to take over from a dead keepalived", || b.state() == State::Master && holds_vip("b"));
    // Whatever keepalived's children left behind, a restarted host has not.
    sh("ip", &["-n", "a", "addr", "flush", "dev", "eth0", "to", &format!("{VIP}/32")]);
    // keepalived returns with the higher priority and preempts.
    let k = keepalived("a", 200);
    wait_until("keepalived to take the address back", || holds_vip("a") && b.state() == State::Backup);
    wait_until("Bulwark to release it", || !holds_vip("b"));
    k.kill();
    b.stop();
    sh("ip", &["-n", "a", "addr", "flush", "dev", "eth0", "to", &format!("{VIP}/32")]);

    // Bulwark master (200), keepalived backup (100): a clean stop of Bulwark.
    let a = Speaker::start("a", config(200));
    wait_until("Bulwark to be master", || a.state() == State::Master && holds_vip("a"));
    let k = keepalived("b", 100);
    // keepalived stays backup while Bulwark advertises (no address on b).
    let long = std::time::Instant::now() + Duration::from_millis(1500);
    while std::time::Instant::now() < long {
        assert!(!holds_vip("b"), "keepalived took the address from a live Bulwark master");
        std::thread::sleep(Duration::from_millis(50));
    }
    a.stop();
    wait_until("keepalived to take over after Bulwark's priority 0", || holds_vip("b") && !holds_vip("a"));
    let a = Speaker::start("a", config(200));
    wait_until("Bulwark to preempt keepalived", || a.state() == State::Master && holds_vip("a"));
    wait_until("keepalived to release the address", || !holds_vip("b"));
    a.stop();
    k.kill();
}
