//! The plan and the ruleset of the built-in topology and of a site on four
//! machines, checked line by line and loaded by the real `nft` (in a
//! scratch network namespace: `nft -c` only checks, the namespace keeps the
//! host's own rules out of reach either way).
use crate::plan::{host_plan, Allowed, PlanError, Service};
use crate::ruleset::{apply_script, ruleset};
use bulwark_config::host_firewall::HostFirewall;
use bulwark_config::topology::Topology;
use std::process::{Command, Stdio};

/// lb1 and lb2 share a floating address; two servers with web, app and db;
/// a third db next to lb1. The hosts' addresses are `net` followed by 1, 2,
/// 11 and 12 (`10.0.0.` or `fd00::`); egress is restricted to an
/// allow-list or open; `extra` adds top-level sections.
fn site_text(net: &str, restrict_egress: bool, extra: &str) -> String {
    let egress = if restrict_egress {
        "egress = \"restrict\"\negress_allow = [{ to = \"192.0.2.53\", protocol = \"udp\", port = 53 }, \
         { to = \"2001:db8::/32\", protocol = \"tcp\", port = 443 }]"
    } else {
        "egress = \"open\""
    };
    let hosts = [
        host("edge1", &format!("{net}1"), &[("lb1", "lb"), ("db3", "db")]),
        host("edge2", &format!("{net}2"), &[("lb2", "lb")]),
        host("server1", &format!("{net}11"), &[("web1", "web"), ("app1", "app"), ("db1", "db")]),
        host("server2", &format!("{net}12"), &[("web2", "web"), ("app2", "app"), ("db2", "db")]),
    ];
    format!(
        r#"
port_base = 8080
[lb]
public_address = "0.0.0.0"
[firewall]
manage = true
ssh_from = ["192.0.2.0/24"]
operator_from = ["198.51.100.7"]
{egress}
public_rate_limit = {{ per_second = 20, burst = 40 }}
allow_in = [{{ from = ["192.0.2.0/24"], protocol = "udp", port = 161, hosts = ["server1"] }}]
{extra}
{}[[floating]]
name = "www"
addresses = ["10.0.0.100/24"]
interface = "eth0"
vrid = 51
lbs = ["lb1", "lb2"]
"#,
        hosts.concat()
    )
}

/// One `[[host]]` at `address` running `roles` (name, kind).
fn host(name: &str, address: &str, roles: &[(&str, &str)]) -> String {
    let mut h = format!("[[host]]\nname = \"{name}\"\naddress = \"{address}\"\n");
    for (role, kind) in roles {
        h.push_str(&format!("[[host.role]]\nname = \"{role}\"\nkind = \"{kind}\"\n"));
    }
    h
}

fn site() -> (Topology, HostFirewall) {
    let t: Topology = bulwark_config::from_str(&site_text("10.0.0.", true, ""), "site.toml").unwrap();
    let fw = t.firewall.clone().unwrap();
    (t, fw)
}

fn rules(t: &Topology, fw: &HostFirewall, host: &str) -> String {
    ruleset(&host_plan(t, fw, host).unwrap())
}

/// `nft -c` accepts the script (in a network namespace of its own).
fn nft_accepts(script: &str) {
    let mut child = Command::new("unshare")
        .args(["--net", "--", "nft", "-c", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare and nft (scripts/install-test-deps.sh; root)");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "nft refused:\n{}\n{script}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn every_flow_of_the_site_is_a_rule_on_the_host_it_reaches() {
    let (t, fw) = site();
    let db1 = rules(&t, &fw, "server1");
    for line in [
        "type filter hook input priority filter; policy drop;",
        "iif \"lo\" accept",
        "ct state established,related accept",
        // web from the lbs, app from the webs and (monitoring) the lbs.
        "ip daddr 10.0.0.11 ip saddr { 10.0.0.1, 10.0.0.2 } tcp dport 8090 accept comment \"web1 web from lb1 lb2\"",
        "ip daddr 10.0.0.11 ip saddr { 10.0.0.11, 10.0.0.12 } tcp dport 8100 accept comment \"app1 app from web1 web2\"",
        "ip daddr 10.0.0.11 ip saddr { 10.0.0.1, 10.0.0.2 } tcp dport 8100 accept comment \"app1 monitoring from lb1 lb2\"",
        // db API from the apps and the other db nodes (writes forwarded to
        // the primary), Raft on its own port from the other db nodes only.
        "ip daddr 10.0.0.11 ip saddr { 10.0.0.1, 10.0.0.11, 10.0.0.12 } tcp dport 8110 accept comment \"db1 db api from app1 app2 db2 db3\"",
        "ip daddr 10.0.0.11 ip saddr { 10.0.0.1, 10.0.0.12 } tcp dport 8130 accept comment \"db1 db peers from db2 db3\"",
        "ip saddr 192.0.2.0/24 tcp dport 22 accept comment \"ssh ssh from ssh_from\"",
        "ip saddr 192.0.2.0/24 udp dport 161 accept comment \"allow_in[0] allow_in from operator\"",
        // Outbound: the flows this host starts, and the allow-list.
        "type filter hook output priority filter; policy drop;",
        "ip daddr 10.0.0.12 tcp dport 8101 accept comment \"to app2 app\"",
        "ip daddr 10.0.0.12 tcp dport 8111 accept comment \"to db2 db api\"",
        "ip daddr 10.0.0.12 tcp dport 8131 accept comment \"to db2 db peers\"",
        "ip daddr 10.0.0.1 tcp dport 8112 accept comment \"to db3 db api\"",
        "ip daddr 10.0.0.1 tcp dport 8132 accept comment \"to db3 db peers\"",
        "ip daddr 192.0.2.53 udp dport 53 accept comment \"to egress_allow[0]\"",
        "ip6 daddr 2001:db8::/32 tcp dport 443 accept comment \"to egress_allow[1]\"",
    ] {
        assert!(db1.contains(line), "missing `{line}` in\n{db1}");
    }
    // Nothing public, no admin, no VRRP on a server; it never calls a web.
    for absent in ["8080", "8081", "8082", "vrrp", "tcp dport 8091", "@public_rate"] {
        assert!(!db1.contains(absent), "`{absent}` in\n{db1}");
    }

    let lb1 = rules(&t, &fw, "edge1");
    for line in [
        "tcp dport 8080 accept comment \"lb1 http from anyone\"",
        "tcp dport 8082 accept comment \"lb1 https from anyone\"",
        "ip daddr 10.0.0.1 ip saddr 198.51.100.7 tcp dport 8081 accept comment \"lb1 admin from operator\"",
        "ip saddr 10.0.0.2 meta l4proto vrrp accept comment \"www vrrp from lb2\"",
        "tcp dport { 8080, 8082 } ct state new add @public_rate4 { ip saddr limit rate over 20/second burst 40 packets } drop",
        "ip6 saddr & ffff:ffff:ffff:ffff:: limit rate over 20/second burst 40 packets",
        "ip daddr 10.0.0.1 ip saddr { 10.0.0.11, 10.0.0.12 } tcp dport 8112 accept comment \"db3 db api from app1 app2 db1 db2\"",
        "ip daddr 10.0.0.1 ip saddr { 10.0.0.11, 10.0.0.12 } tcp dport 8132 accept comment \"db3 db peers from db1 db2\"",
        "ip daddr 10.0.0.2 meta l4proto vrrp accept comment \"to www vrrp\"",
        "ip daddr 224.0.0.18 meta l4proto vrrp accept comment \"to vrrp adverts\"",
        "ip daddr 10.0.0.11 tcp dport 8090 accept comment \"to web1 web\"",
        "log prefix \"bulwark drop in: \"",
        "log prefix \"bulwark drop out: \"",
    ] {
        assert!(lb1.contains(line), "missing `{line}` in\n{lb1}");
    }
    assert!(!lb1.contains("dport 161"), "allow_in is for server1 only:\n{lb1}");
    // The rate limit comes before the accept of the public ports.
    assert!(lb1.find("@public_rate4").unwrap() < lb1.find("lb1 http from anyone").unwrap());

    let plan = host_plan(&t, &fw, "edge1").unwrap();
    let described = plan.describe();
    assert!(described.contains("[floating 10.0.0.100]"), "{described}");
    for host in ["edge1", "edge2", "server1", "server2"] {
        nft_accepts(&apply_script(&host_plan(&t, &fw, host).unwrap()));
    }
}

#[test]
fn the_lb_hosts_stay_out_of_the_database_without_monitoring() {
    let (t, mut fw) = site();
    fw.monitoring = false;
    let plan = host_plan(&t, &fw, "server1").unwrap();
    let db_sources: Vec<String> = plan
        .inbound
        .iter()
        .filter(|l| l.role == "db1")
        .flat_map(|l| match &l.from {
            Allowed::Only(v) => v.iter().map(|p| p.who.clone()).collect(),
            Allowed::Anyone => vec!["anyone".into()],
        })
        .collect();
    // The API from the apps and the db peers, Raft from the db peers.
    assert_eq!(db_sources, ["app1", "app2", "db2", "db3", "db2", "db3"]);
    assert!(!plan.inbound.iter().any(|l| l.service == Service::Monitoring));
    let lb2 = rules(&t, &fw, "edge2");
    assert!(!lb2.contains("tcp dport 8110"), "{lb2}");
}

#[test]
fn the_built_in_site_opens_only_the_public_ports_to_the_outside() {
    let t = Topology::default_localhost();
    let fw = HostFirewall::default();
    let lb1 = rules(&t, &fw, "lb1");
    assert!(lb1.contains("tcp dport 8080 accept comment \"lb1 http from anyone\""), "{lb1}");
    assert!(lb1.contains("tcp dport 8082 accept comment \"lb1 https from anyone\""), "{lb1}");
    // Every inner port is only for 127.0.0.1 (which `iif lo` admits anyway).
    assert!(lb1.contains("ip daddr 127.0.0.1 ip saddr 127.0.0.1 tcp dport 8112 accept"), "{lb1}");
    // SSH from anyone by default, on both families; egress open: no output chain.
    assert!(lb1.contains("ip saddr 0.0.0.0/0 tcp dport 22 accept"), "{lb1}");
    assert!(lb1.contains("ip6 saddr ::/0 tcp dport 22 accept"), "{lb1}");
    assert!(!lb1.contains("chain output"), "{lb1}");
    // The admin listener: nobody from outside (no operator_from).
    assert!(!lb1.contains("8081"), "{lb1}");
    for host in ["lb1", "server1", "server2"] {
        nft_accepts(&apply_script(&host_plan(&t, &fw, host).unwrap()));
    }
    let off = HostFirewall { allow_ssh: false, log_drops: false, ..HostFirewall::default() };
    let closed = rules(&t, &off, "server1");
    assert!(!closed.contains("dport 22") && !closed.contains("log prefix"), "{closed}");
}

#[test]
fn a_topology_the_firewall_cannot_serve_is_named_by_its_key() {
    let (t, fw) = site();
    let e = host_plan(&t, &fw, "server9").unwrap_err();
    assert_eq!(e.to_string(), "--host: no host `server9` in the topology (hosts: edge1, edge2, server1, server2)");
    let mut half = t.clone();
    half.hosts[2].address = "127.0.0.1".parse().unwrap();
    assert_eq!(host_plan(&half, &fw, "edge1").unwrap_err(), PlanError::NoAddress { index: 2, host: "server1".into() });
    assert!(host_plan(&half, &fw, "edge1").unwrap_err().to_string().starts_with("host[2].address: "));
    let mut free = t.clone();
    free.port_base = 0;
    let e = host_plan(&free, &fw, "edge1").unwrap_err().to_string();
    assert!(e.starts_with("host[0].role: lb1 has no fixed main port"), "{e}");
}

#[test]
fn ipv6_hosts_get_ip6_rules() {
    let text = site_text("fd00::", false, "");
    let t: Topology = bulwark_config::from_str(&text, "v6.toml").unwrap();
    let fw = t.firewall.clone().unwrap();
    let s1 = rules(&t, &fw, "server1");
    assert!(
        s1.contains(
            "ip6 daddr fd00::11 ip6 saddr { fd00::1, fd00::2 } tcp dport 8090 accept comment \"web1 web from lb1 lb2\""
        ),
        "{s1}"
    );
    assert!(!s1.contains("ip daddr"), "{s1}");
    let e1 = rules(&t, &fw, "edge1");
    assert!(e1.contains("ip6 saddr fd00::2 meta l4proto vrrp accept"), "{e1}");
    nft_accepts(&apply_script(&host_plan(&t, &fw, "edge1").unwrap()));
}

#[test]
fn the_backup_status_listener_is_open_to_the_lbs_only() {
    let with_backup = site_text("10.0.0.", true, "[backup]\nnode = \"db2\"");
    let t: Topology = bulwark_config::from_str(&with_backup, "site.toml").unwrap();
    let fw = t.firewall.clone().unwrap();
    let (_, addr) = t.backup_placement().unwrap();
    let plan = host_plan(&t, &fw, "server2").unwrap();
    let status: Vec<_> = plan.inbound.iter().filter(|l| l.service == Service::BackupStatus).collect();
    assert_eq!(status.len(), 1, "{:?}", plan.inbound);
    assert_eq!(status[0].port, Some(addr.port()));
    match &status[0].from {
        Allowed::Only(v) => assert_eq!(v.iter().map(|p| p.who.as_str()).collect::<Vec<_>>(), ["lb1", "lb2"]),
        Allowed::Anyone => panic!("the backup status is open to anyone"),
    }
    assert!(host_plan(&t, &fw, "server1").unwrap().inbound.iter().all(|l| l.service != Service::BackupStatus));
    nft_accepts(&rules(&t, &fw, "server2"));
}
