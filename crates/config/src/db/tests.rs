use super::*;

const GOOD: &str = r#"
node_id = 1
listen = "127.0.0.1:0"
raft_listen = "127.0.0.1:0"
data_dir = "/tmp/db1"
secret = "0123456789abcdef-secret"
election_timeout = "500ms"
[[peer]]
id = 2
address = "127.0.0.1:7002"
raft_address = "127.0.0.1:7102"
[[peer]]
id = 3
address = "db3.internal:7003"
raft_address = "db3.internal:7103"
"#;

#[test]
fn parses_a_good_config_with_defaults() {
    let c: DbConfig = crate::from_str(GOOD, "db.toml").unwrap();
    assert_eq!(c.node_id, 1);
    assert_eq!(c.peers.len(), 2);
    assert!(!c.bootstrap && c.forward_writes);
    assert_eq!(c.election_timeout, Duration::from_millis(500));
    assert_eq!(c.heartbeat_interval, Duration::from_millis(100));
    assert_eq!(c.load_secret().unwrap().expose(), "0123456789abcdef-secret");
    assert_eq!(crate::Role::detect(GOOD), Some(crate::Role::Db));
}

#[test]
fn names_every_bad_key() {
    let bad = r#"
node_id = 0
listen = "127.0.0.1:7001"
raft_listen = "127.0.0.1:7001"
data_dir = ""
secret = "short"
heartbeat_interval = "200ms"
election_timeout = "300ms"
[[peer]]
id = 2
address = "127.0.0.1:7002"
raft_address = "127.0.0.1:7102"
[[peer]]
id = 2
address = "127.0.0.1:0"
raft_address = "127.0.0.1:0"
"#;
    let e = crate::from_str::<DbConfig>(bad, "db.toml").unwrap_err();
    let keys: Vec<&str> = e.issues.iter().map(|i| i.key.as_str()).collect();
    for k in [
        "node_id",
        "raft_listen",
        "data_dir",
        "secret",
        "election_timeout",
        "peer[1].id",
        "peer[1].address",
        "peer[1].raft_address",
    ] {
        assert!(keys.contains(&k), "{k} missing in {keys:?}");
    }
    let line = e.issues.iter().find(|i| i.key == "peer[1].address").unwrap().line;
    assert_eq!(line, Some(15));
}

/// An address that does not parse stops the load at once, named by
/// its file, line and key.
#[test]
fn names_the_line_and_key_of_a_bad_address() {
    for (from, to, expected) in [
        ("listen = \"127.0.0.1:0\"", "listen = \"nowhere:80\"", "db.toml:3: listen: `nowhere:80` is not an ip:port"),
        (
            "address = \"db3.internal:7003\"",
            "address = \"bad address\"",
            "db.toml:14: peer[1].address: `bad address` is not a valid host:port",
        ),
        (
            "election_timeout",
            "raft_advertise = \"db1:x\"\nelection_timeout",
            "db.toml:7: raft_advertise: `db1:x` is not a valid host:port",
        ),
    ] {
        let bad = GOOD.replace(from, to);
        let e = crate::from_str::<DbConfig>(&bad, "db.toml").unwrap_err().to_string();
        assert!(e.starts_with(expected), "{e}");
    }
    let c: DbConfig = crate::from_str(
        &GOOD.replace("election_timeout", "advertise = \"db1.internal:7001\"\nelection_timeout"),
        "db.toml",
    )
    .unwrap();
    assert_eq!(c.advertise.unwrap().host(), "db1.internal");
    assert_eq!(c.peers[1].raft_address.port(), 7103);
}

#[test]
fn bounds_the_request_size() {
    let base = "node_id = 1\nlisten = \"127.0.0.1:0\"\nraft_listen = \"127.0.0.1:0\"\ndata_dir = \"d\"\nsecret = \"0123456789abcdef\"\n";
    let e = crate::from_str::<DbConfig>(&format!("{base}max_request_bytes = 100000000\n"), "db.toml").unwrap_err();
    assert_eq!(e.issues[0].key, "max_request_bytes");
    assert!(e.issues[0].message.contains("at most 64 MiB"), "{:?}", e.issues[0]);
    crate::from_str::<DbConfig>(&format!("{base}max_request_bytes = 67108864\n"), "db.toml").unwrap();
}

#[test]
fn snapshots_by_size_unless_a_count_is_given() {
    let base = "node_id = 1\nlisten = \"127.0.0.1:0\"\nraft_listen = \"127.0.0.1:0\"\ndata_dir = \"d\"\nsecret = \"0123456789abcdef\"\n";
    let c = crate::from_str::<DbConfig>(base, "db.toml").unwrap();
    assert_eq!((c.snapshot_every, c.snapshot_log_bytes), (None, 64 << 20));
    let e = crate::from_str::<DbConfig>(&format!("{base}snapshot_log_bytes = 1000\n"), "db.toml").unwrap_err();
    assert_eq!(e.issues[0].key, "snapshot_log_bytes");
    let e = crate::from_str::<DbConfig>(&format!("{base}snapshot_every = 5\n"), "db.toml").unwrap_err();
    assert_eq!(e.issues[0].key, "snapshot_every");
    let c = crate::from_str::<DbConfig>(&format!("{base}snapshot_every = 20\n"), "db.toml").unwrap();
    assert_eq!(c.snapshot_every, Some(20));
}

#[test]
fn bounds_the_steps_of_a_write() {
    let base = "node_id = 1\nlisten = \"127.0.0.1:0\"\nraft_listen = \"127.0.0.1:0\"\ndata_dir = \"d\"\nsecret = \"0123456789abcdef\"\n";
    let c = crate::from_str::<DbConfig>(base, "db.toml").unwrap();
    assert_eq!(c.max_write_steps, DEFAULT_MAX_WRITE_STEPS);
    for bad in [0, MIN_MAX_WRITE_STEPS - 1, MAX_MAX_WRITE_STEPS + 1] {
        let e = crate::from_str::<DbConfig>(&format!("{base}max_write_steps = {bad}\n"), "db.toml").unwrap_err();
        assert_eq!(e.issues[0].key, "max_write_steps");
        assert!(e.issues[0].message.contains("the same on every node"), "{:?}", e.issues[0]);
    }
    let c = crate::from_str::<DbConfig>(&format!("{base}max_write_steps = 5000000\n"), "db.toml").unwrap();
    assert_eq!(c.max_write_steps, 5_000_000);
}

#[test]
fn requires_exactly_one_secret_source() {
    let none = "node_id = 1\nlisten = \"127.0.0.1:0\"\nraft_listen = \"127.0.0.1:0\"\ndata_dir = \"d\"\n";
    let e = crate::from_str::<DbConfig>(none, "db.toml").unwrap_err();
    assert_eq!(e.issues[0].key, "secret");
    let both = format!("{none}secret = \"0123456789abcdef\"\nsecret_file = \"/x\"\n");
    let e = crate::from_str::<DbConfig>(&both, "db.toml").unwrap_err();
    assert_eq!(e.issues[0].key, "secret_file");
}

#[test]
fn wildcard_listen_needs_advertise() {
    let t = "node_id = 1\nlisten = \"0.0.0.0:7001\"\nraft_listen = \"[::]:7101\"\ndata_dir = \"d\"\n\
             secret = \"0123456789abcdef\"\n";
    let e = crate::from_str::<DbConfig>(t, "db.toml").unwrap_err();
    let keys: Vec<&str> = e.issues.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, ["advertise", "raft_advertise"]);
    let ok = format!("{t}advertise = \"10.0.0.1:7001\"\nraft_advertise = \"10.0.0.1:7101\"\n");
    crate::from_str::<DbConfig>(&ok, "db.toml").unwrap();
}

#[test]
fn raft_listens_apart_from_the_api() {
    let base = "node_id = 1\nlisten = \"127.0.0.1:7001\"\ndata_dir = \"d\"\nsecret = \"0123456789abcdef\"\n";
    let e = crate::from_str::<DbConfig>(base, "db.toml").unwrap_err();
    assert!(e.to_string().contains("raft_listen"), "{e}");
    let same = format!("{base}raft_listen = \"127.0.0.1:7001\"\n");
    let e = crate::from_str::<DbConfig>(&same, "db.toml").unwrap_err();
    assert_eq!(e.issues[0].key, "raft_listen");
    let c = crate::from_str::<DbConfig>(&format!("{base}raft_listen = \"127.0.0.1:7101\"\n"), "db.toml").unwrap();
    assert_eq!((c.listen.to_string(), c.raft_listen.to_string()), ("127.0.0.1:7001".into(), "127.0.0.1:7101".into()));
    let peer_without_raft = format!("{base}raft_listen = \"127.0.0.1:7101\"\n[[peer]]\nid = 2\naddress = \"h:7002\"\n");
    let e = crate::from_str::<DbConfig>(&peer_without_raft, "db.toml").unwrap_err();
    assert!(e.to_string().contains("raft_address"), "{e}");
}

#[test]
fn mutual_tls_needs_all_three_files() {
    let base = "node_id = 1\nlisten = \"127.0.0.1:0\"\nraft_listen = \"127.0.0.1:0\"\ndata_dir = \"d\"\nsecret = \"0123456789abcdef\"\n";
    let c = crate::from_str::<DbConfig>(base, "db.toml").unwrap();
    assert_eq!(c.mutual_tls, None);
    let e =
        crate::from_str::<DbConfig>(&format!("{base}mutual_tls = {{ cert = \"c.pem\" }}\n"), "db.toml").unwrap_err();
    assert!(e.to_string().contains("missing field `key`"), "{e}");
    assert_eq!(e.issues[0].line, Some(6), "{e}");
    let all = format!("{base}mutual_tls = {{ cert = \"c.pem\", key = \"c.key\", ca = \"ca.pem\" }}\n");
    let c = crate::from_str::<DbConfig>(&all, "db.toml").unwrap();
    assert_eq!(c.mutual_tls.unwrap().ca, PathBuf::from("ca.pem"));
    // The keys of earlier versions are refused with what to write instead.
    let old = crate::from_str::<DbConfig>(&format!("{base}tls_cert = \"c.pem\"\n"), "db.toml").unwrap_err();
    assert!(old.to_string().contains("mutual_tls = { cert"), "{old}");
}

#[test]
fn rejects_unknown_keys() {
    let t = format!("{GOOD}\nreplicas = 3\n");
    let e = crate::from_str::<DbConfig>(&t, "db.toml").unwrap_err();
    assert!(e.to_string().contains("replicas"), "{e}");
}

#[test]
fn secret_file_is_read_and_trimmed() {
    let dir = std::env::temp_dir().join(format!("bulwark-db-secret-{}", std::process::id()));
    std::fs::write(&dir, "  0123456789abcdef-file\n").unwrap();
    let t =
        format!("node_id = 1\nlisten = \"127.0.0.1:0\"\nraft_listen = \"127.0.0.1:0\"\ndata_dir = \"d\"\nsecret_file = \"{}\"\n", dir.display());
    let c: DbConfig = crate::from_str(&t, "db.toml").unwrap();
    assert_eq!(c.load_secret().unwrap().expose(), "0123456789abcdef-file");
    std::fs::remove_file(&dir).unwrap();
}
