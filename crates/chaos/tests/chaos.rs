//! The chaos suite. Each test re-runs itself in private network
//! and mount namespaces (root), builds one namespace per topology host
//! (lb1, server1, server2 on 198.18.0.0/24), runs `bulwark up --host` in
//! each, drives a workload, injects its faults and checks: no acknowledged
//! write lost, no duplicate, at most one primary per term, identical
//! replicas, read-your-writes, failover time. The `floating_*` scenarios
//! add a second lb host (lb2) and db3's own host (server3), put the lbs
//! behind floating addresses (VRRP) and fault the lb hosts; they also check
//! that only requests in flight during a takeover fail. Tests run one at a
//! time; the report is `target/chaos-report.md`.
//!
//! Needs the binary: `cargo build -p bulwark` first (or `BULWARK_BIN`).
use bulwark_chaos::net::{self, run_isolated};
use bulwark_chaos::{run_scenario, run_scenario_with_clients, Ctx, Expect, Stack, HEAVY_CLIENTS};
use nix::sys::signal::Signal;
use std::path::PathBuf;
use std::time::Duration;

fn report_dir() -> PathBuf {
    // target/tmp -> target
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().map(PathBuf::from).unwrap_or(tmp)
}

fn scenario(name: &str, stack: Stack, expect: Expect, script: impl FnOnce(&mut Ctx)) {
    run_isolated(name, || {
        run_scenario(name, stack, expect, &report_dir(), script);
    });
}

/// kill -9 of the primary, kept down for 3 s (longer than an election, so
/// another node must take over; a primary back within the election timeout
/// simply resumes its term), then started again to rejoin.
fn kill_primary(ctx: &mut Ctx) {
    let p = ctx.cluster.wait_primary(Duration::from_secs(10));
    ctx.primary_fault(format!("kill -9 primary {}", p.name));
    // SIGKILL through the supervisor, which keeps it down until started.
    ctx.cluster.kill_role(&p.name);
    ctx.sleep(3.0);
    ctx.cluster.start_role(&p.name);
    ctx.repair(format!("{} started again", p.name));
    ctx.sleep(1.0);
}

/// SIGSTOP of the primary for 3 s, then SIGCONT.
fn pause_primary(ctx: &mut Ctx) {
    let p = ctx.cluster.wait_primary(Duration::from_secs(10));
    ctx.cluster.signal(&p.name, Signal::SIGSTOP);
    ctx.primary_fault(format!("SIGSTOP primary {}", p.name));
    ctx.sleep(3.0);
    ctx.cluster.signal(&p.name, Signal::SIGCONT);
    ctx.repair(format!("SIGCONT {}", p.name));
    ctx.sleep(2.0);
}

/// The primary's host cut off from the other hosts for 4 s, then healed.
fn partition_primary(ctx: &mut Ctx, avoid_lb_host: bool) {
    let p = if avoid_lb_host {
        // Cutting off the lb's host takes the whole site down: not a
        // failover test. Put the primary on a server first.
        ctx.cluster.move_primary_off("lb1")
    } else {
        ctx.cluster.wait_primary(Duration::from_secs(10))
    };
    net::partition(&p.host);
    ctx.primary_fault(format!("partition {} (primary {})", p.host, p.name));
    ctx.sleep(4.0);
    net::heal(&p.host);
    ctx.repair(format!("heal {}", p.host));
    ctx.sleep(2.0);
}

/// Delay and loss on every database host for 6 s: 30 ms ± 10 ms and 2 %
/// loss, by tc netem, or by the NFQUEUE delayer (`chaos-netdelay`) on a
/// kernel without netem, or 8 % loss alone without either (the note says
/// which; see `net::degrade_with`).
fn degrade_db_hosts(ctx: &mut Ctx) {
    let hosts: Vec<_> = ctx.cluster.dbs.iter().map(|d| (d.host.clone(), ctx.cluster.host_addr(&d.host))).collect();
    let how = net::degrade_with(&hosts, &net::Impairment::default());
    if !matches!(how, net::Degraded::Netem(_)) {
        ctx.note(format!("{how}"));
    }
    ctx.fault(format!("{how} on every db host"));
    ctx.sleep(6.0);
    let stats = net::restore(&hosts, &how);
    ctx.repair("network restored");
    for s in stats {
        ctx.note(format!("chaos-netdelay {s}"));
    }
}

#[test]
fn db_kill9_primary() {
    scenario("db_kill9_primary", Stack::Db, Expect::default(), kill_primary);
}

/// Rounds of [`kill_primary_restart_at_once`].
const RESTART_ROUNDS: u32 = 20;

/// Under the 16-client load, kill -9 of the primary and start it again at
/// once (no wait), 20 times. A primary back before the others' election
/// timeout finds its own vote for itself on disk: it must not lose or
/// fork what it had acknowledged before the kill. The end checks (every
/// acknowledged write on the primary, identical tables everywhere) decide;
/// the note says how often the restarted node came back as primary of the
/// same term, i.e. how often the fault hit the window it is aimed at.
fn kill_primary_restart_at_once(ctx: &mut Ctx) {
    let mut same_term = 0;
    for round in 1..=RESTART_ROUNDS {
        let p = ctx.cluster.wait_primary(Duration::from_secs(30));
        let term = ctx.cluster.db_status(p.addr, Duration::from_secs(1)).and_then(|s| s["term"].as_u64());
        let shown = |t: Option<u64>| t.map_or("?".to_string(), |t| t.to_string());
        ctx.primary_fault(format!("round {round}: kill -9 primary {} (term {}), restart at once", p.name, shown(term)));
        ctx.cluster.kill_role(&p.name);
        ctx.cluster.start_role(&p.name);
        let q = ctx.cluster.wait_primary(Duration::from_secs(30));
        let q_term = ctx.cluster.db_status(q.addr, Duration::from_secs(1)).and_then(|s| s["term"].as_u64());
        if q.name == p.name && q_term.is_some() && q_term == term {
            same_term += 1;
        }
        ctx.repair(format!("{} ready again; primary {} (term {})", p.name, q.name, shown(q_term)));
        // Load between rounds, so that every round kills a primary with
        // writes in flight.
        ctx.sleep(1.0);
    }
    ctx.note(format!(
        "{same_term} of {RESTART_ROUNDS} rounds: the restarted node was primary again in the same term (no election)"
    ));
}

#[test]
fn db_kill9_primary_restart_at_once() {
    let name = "db_kill9_primary_restart_at_once";
    run_isolated(name, || {
        run_scenario_with_clients(
            name,
            Stack::Db,
            Expect::default(),
            HEAVY_CLIENTS,
            &report_dir(),
            kill_primary_restart_at_once,
        );
    });
}

#[test]
fn db_pause_primary() {
    scenario("db_pause_primary", Stack::Db, Expect::default(), pause_primary);
}

#[test]
fn db_partition_primary() {
    scenario("db_partition_primary", Stack::Db, Expect::default(), |ctx| partition_primary(ctx, false));
}

#[test]
fn db_netem() {
    scenario("db_netem", Stack::Db, Expect::default(), degrade_db_hosts);
}

/// Passive ejection time of the lb and web proxies (`eject_for`, 10 s by
/// default) plus a margin.
const EJECT_S: f64 = 10.5;

/// kill -9 of `role`; wait until its supervisor has it ready again.
fn kill_role(ctx: &mut Ctx, role: &str) {
    ctx.kill_fault(format!("kill -9 {role}"));
    let pid = ctx.cluster.signal(role, Signal::SIGKILL);
    let back = ctx.cluster.wait_restarted(role, pid, Duration::from_secs(30));
    ctx.repair(format!("{role} back after {:.1} s", back.as_secs_f64()));
}

#[test]
fn full_kill9_web() {
    scenario("full_kill9_web", Stack::Full, Expect { zero_errors: true }, |ctx| {
        kill_role(ctx, "web1");
        // The lb ejects a failing server for 10 s (passive health) even
        // when it is back sooner: space the kills by more than that.
        ctx.sleep(EJECT_S);
        kill_role(ctx, "web2");
        ctx.sleep(1.0);
    });
}

#[test]
fn full_kill9_app() {
    scenario("full_kill9_app", Stack::Full, Expect { zero_errors: true }, |ctx| {
        kill_role(ctx, "app1");
        ctx.sleep(EJECT_S);
        kill_role(ctx, "app2");
        ctx.sleep(1.0);
    });
}

#[test]
fn full_kill9_primary() {
    scenario("full_kill9_primary", Stack::Full, Expect::default(), kill_primary);
}

#[test]
fn full_pause_primary() {
    scenario("full_pause_primary", Stack::Full, Expect::default(), pause_primary);
}

#[test]
fn full_partition_primary() {
    scenario("full_partition_primary", Stack::Full, Expect::default(), |ctx| partition_primary(ctx, true));
}

#[test]
fn full_netem() {
    scenario("full_netem", Stack::Full, Expect::default(), degrade_db_hosts);
}

/// Two lbs share the public port (SO_REUSEPORT); each is restarted
/// gracefully while the other serves.
#[test]
fn full_lb_restart() {
    scenario("full_lb_restart", Stack::Full, Expect { zero_errors: true }, |ctx| {
        // Without it, Linux resets the connections still queued on a closing
        // SO_REUSEPORT listener (seen: 2 resets per graceful stop); with it
        // (Linux ≥ 5.14, per network namespace) they move to a sibling.
        match net::in_ns("lb1", "sysctl", &["-w", "net.ipv4.tcp_migrate_req=1"]) {
            Ok(_) => ctx.note("lb1 host: net.ipv4.tcp_migrate_req = 1"),
            Err(e) => panic!("this scenario needs net.ipv4.tcp_migrate_req (Linux 5.14+): {e}"),
        }
        let mut second = ctx.cluster.start_second_lb(8079);
        ctx.fault("second lb process on lb1's port (SO_REUSEPORT)");
        ctx.sleep(2.0);
        ctx.cluster.stop_role("lb1");
        ctx.fault("lb1 stopped (graceful)");
        ctx.sleep(1.5);
        ctx.cluster.start_role("lb1");
        ctx.repair("lb1 started");
        ctx.sleep(2.0);
        second.terminate();
        ctx.fault("second lb stopped (SIGTERM)");
        ctx.sleep(1.5);
        let mut second = ctx.cluster.start_second_lb(8078);
        ctx.repair("second lb started again");
        ctx.sleep(2.0);
        second.terminate();
        ctx.repair("second lb stopped (SIGTERM)");
    });
}

/// Everything at once: a degraded database network, web and app kills, a
/// primary kill and an lb kill.
#[test]
fn full_combined() {
    scenario("full_combined", Stack::Full, Expect::default(), |ctx| {
        let hosts: Vec<_> = ctx.cluster.dbs.iter().map(|d| (d.host.clone(), ctx.cluster.host_addr(&d.host))).collect();
        let how = net::degrade(&hosts);
        ctx.fault(format!("{how} on every db host"));
        ctx.sleep(1.0);
        kill_role(ctx, "web1");
        kill_role(ctx, "app2");
        kill_primary(ctx);
        ctx.kill_fault("kill -9 lb1");
        let pid = ctx.cluster.signal("lb1", Signal::SIGKILL);
        ctx.cluster.wait_restarted("lb1", pid, Duration::from_secs(30));
        ctx.repair("lb1 back");
        net::restore(&hosts, &how);
        ctx.repair("network restored");
    });
}

/// How long the new holder of a floating address serves before the repair.
const FLOATING_HOLD_S: f64 = 1.5;

/// Kill -9 of every process on lb host `host` with its link down, like the
/// machine dying (the floating address stays configured on its interface,
/// as it does after a kill -9, but the host is off the network); then the
/// machine boots: the floating addresses are gone from its interface (they
/// are not part of its own configuration), link up, `bulwark up` again.
fn lose_lb_host(ctx: &mut Ctx, host: &str) {
    let spare = ctx.floating.expect("a floating stack").monitor_pids();
    ctx.lb_host_fault(host, format!("{host} dies (link down, kill -9 of every process)"), true);
    ctx.cluster.set_link(host, false);
    let killed = ctx.cluster.kill_host(host, &spare);
    ctx.wait_floating_settled();
    ctx.note(format!("{host}: {killed} processes killed"));
    ctx.sleep(FLOATING_HOLD_S);
    ctx.lb_host_repair(host, format!("{host} boots (addresses gone, link up, bulwark up)"));
    ctx.cluster.flush_floating(host);
    ctx.cluster.set_link(host, true);
    ctx.cluster.start_host(host);
    ctx.wait_floating_settled();
    ctx.sleep(1.0);
}

#[test]
fn floating_kill9_master_host() {
    scenario("floating_kill9_master_host", Stack::Floating, Expect::default(), |ctx| lose_lb_host(ctx, "lb1"));
}

/// SIGSTOP of the master lb process (its host keeps the address and its
/// kernel keeps accepting connections nobody serves), then SIGCONT: it
/// takes the address back.
#[test]
fn floating_pause_master() {
    scenario("floating_pause_master", Stack::Floating, Expect::default(), |ctx| {
        let pid = ctx.cluster.pid("lb1");
        ctx.lb_host_fault("lb1", "SIGSTOP lb1", false);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGSTOP).unwrap();
        ctx.wait_floating_settled();
        ctx.sleep(FLOATING_HOLD_S);
        ctx.lb_host_repair("lb1", "SIGCONT lb1");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGCONT).unwrap();
        ctx.wait_floating_settled();
        ctx.sleep(1.0);
    });
}

/// The master's link cut (`ip link set eth0 down` in its namespace): it
/// stays master on its side with the address; then the link comes back and
/// the two masters meet (the report's "both held").
#[test]
fn floating_cut_master_link() {
    scenario("floating_cut_master_link", Stack::Floating, Expect::default(), |ctx| {
        ctx.lb_host_fault("lb1", "lb1 link down", false);
        ctx.cluster.set_link("lb1", false);
        ctx.wait_floating_settled();
        ctx.sleep(FLOATING_HOLD_S);
        ctx.lb_host_repair("lb1", "lb1 link up");
        ctx.cluster.set_link("lb1", true);
        ctx.wait_floating_settled();
        ctx.sleep(1.0);
    });
}

/// `bulwark stop lb1` through its host's control socket (SIGTERM: priority
/// 0, address released, drain), then `bulwark start lb1`.
#[test]
fn floating_stop_master() {
    scenario("floating_stop_master", Stack::Floating, Expect::default(), |ctx| {
        ctx.lb_host_fault("lb1", "bulwark stop lb1", false);
        ctx.cluster.stop_role("lb1");
        ctx.wait_floating_settled();
        ctx.sleep(FLOATING_HOLD_S);
        ctx.lb_host_repair("lb1", "bulwark start lb1");
        ctx.cluster.start_role("lb1");
        ctx.wait_floating_settled();
        ctx.sleep(1.0);
    });
}

/// Active-active: each lb holds one of two addresses; lb1's host dies and
/// comes back, then lb2's. The address of the surviving host must not fail
/// a single request; the other's only during its takeover.
#[test]
fn floating_aa_lose_either_host() {
    scenario("floating_aa_lose_either_host", Stack::FloatingActiveActive, Expect::default(), |ctx| {
        lose_lb_host(ctx, "lb1");
        lose_lb_host(ctx, "lb2");
    });
}
