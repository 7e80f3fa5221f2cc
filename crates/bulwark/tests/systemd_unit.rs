//! The systemd unit's firewall step (deploy/bulwark-up@.service): its
//! `ExecStartPre`, run as systemd runs it (the `+` prefix is systemd's: full
//! privileges; `%i` is the host's name), installs the host's ruleset when
//! the topology sets `[firewall] manage = true`, and changes nothing when
//! it does not. Inside private network and mount namespaces (`unshare`,
//! root, nftables from scripts/install-test-deps.sh): the machine's own
//! rules are never touched.
use bulwark_testkit::bulwark_bin;
use bulwark_testkit::config::{RoleKind, TopologyConfig};
use bulwark_testkit::netns::isolated;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

const UNIT: &str = include_str!("../../../deploy/bulwark-up@.service");

fn topology(manage: bool) -> String {
    TopologyConfig::new("unit")
        .set("port_base", "8080")
        .set("firewall", &format!("{{ manage = {manage} }}"))
        .host_at("edge", IpAddr::from([10, 9, 0, 1]), &[("lb1", RoleKind::Lb)])
        .host_at(
            "back",
            IpAddr::from([10, 9, 0, 2]),
            &[("web1", RoleKind::Web), ("app1", RoleKind::App), ("db1", RoleKind::Db)],
        )
        .to_toml()
}

/// The unit's `ExecStartPre` command for `host`, with the binary and the
/// topology of this test: (program, arguments).
fn exec_start_pre(topology: &Path, host: &str) -> (String, Vec<String>) {
    let line = UNIT.lines().find_map(|l| l.strip_prefix("ExecStartPre=")).expect("the unit has an ExecStartPre");
    let line = line.strip_prefix('+').expect("the firewall step runs with full privileges (`+`)");
    let words: Vec<String> = line
        .split_whitespace()
        .map(|w| match w {
            "/usr/local/bin/bulwark" => bulwark_bin().display().to_string(),
            "/etc/bulwark/topology.toml" => topology.display().to_string(),
            "%i" => host.to_string(),
            w => w.to_string(),
        })
        .collect();
    (words[0].clone(), words[1..].to_vec())
}

fn table() -> Option<String> {
    let out = Command::new("nft").args(["list", "table", "inet", "bulwark"]).output().expect("nft installed");
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn the_units_start_step_installs_the_firewall_only_when_managed() {
    if !isolated("the_units_start_step_installs_the_firewall_only_when_managed") {
        return;
    }
    assert!(UNIT.contains("After=network-online.target nftables.service"), "after nftables.service's flush");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("topology.toml");
    let run = |manage: bool| {
        std::fs::write(&path, topology(manage)).unwrap();
        let (program, args) = exec_start_pre(&path, "back");
        let out = Command::new(&program).args(&args).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{program} {args:?}: {text}");
        text
    };

    let text = run(false);
    assert!(text.contains("does not set [firewall] manage = true"), "{text}");
    assert_eq!(table(), None, "nothing is installed without manage = true");

    let text = run(true);
    assert!(text.contains("installed table inet bulwark on host back"), "{text}");
    let installed = table().expect("the table is installed");
    assert!(installed.contains("policy drop"), "{installed}");
    // The host's own ruleset: its db port from itself and the apps, not another host's listeners.
    assert!(installed.contains("8110"), "{installed}");

    // Its check agrees, as `up` would find it.
    let (program, mut args) = exec_start_pre(&path, "back");
    args.retain(|a| a != "--if-managed");
    args[1] = "check".into();
    let out = Command::new(&program).args(&args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}
