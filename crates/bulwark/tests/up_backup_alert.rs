//! `bulwark up` with scheduled backups that always fail (copies are taken
//! from a replica, and the only db node is the primary): the failures are
//! counted, the lb's overview raises `BackupTooOld` once no good backup
//! came within `max_age_alert`, and `archive_log = true` has the db node
//! archive its log into `dir/archive` all the same.
use bulwark_testkit::config::{BackupSettings, BackupSource, RoleKind, TopologyConfig};
use bulwark_testkit::{get_json, wait_until, Process};
use std::time::Duration;

#[test]
fn failing_scheduled_backups_raise_backup_too_old_on_the_overview() {
    let data = tempfile::tempdir().unwrap();
    let backups = data.path().join("backups");
    let topology = data.path().join("topology.toml");
    let roles = [("lb1", RoleKind::Lb), ("web1", RoleKind::Web), ("app1", RoleKind::App), ("db1", RoleKind::Db)];
    let backup = BackupSettings {
        every: Duration::from_secs(1),
        max_age_alert: Some(Duration::from_secs(2)),
        from: BackupSource::Replica,
        dir: Some(backups.clone()),
        archive_log: true,
        ..BackupSettings::default()
    };
    let config = TopologyConfig::new("bkfail").plain_http().host("one", &roles).backup(&backup);
    std::fs::write(&topology, config.to_toml()).unwrap();
    let up = Process::up(&topology, &data.path().join("run"));
    let monitor = std::fs::read_to_string(data.path().join("run/secrets/monitor")).unwrap();
    let status = || get_json(up.addr("backup.http"), "/v1/status", monitor.trim());
    wait_until("failed scheduled backups", || status()["failures_total"].as_u64().unwrap_or(0) >= 2);
    let s = status();
    assert!(s["last_good_ms"].is_null() && s["backups_total"] == 0, "{s}");
    assert!(s["last_error"].as_str().unwrap_or_default().contains("no replica"), "{s}");

    let token = std::fs::read_to_string(data.path().join("run/admin.token")).unwrap();
    let overview = || get_json(up.addr("lb1.admin"), "/api/overview", token.trim());
    let mut alert = serde_json::Value::Null;
    wait_until("BackupTooOld on the overview", || {
        let o = overview();
        match o["alerts"].as_array().and_then(|a| a.iter().find(|a| a["name"] == "BackupTooOld")) {
            Some(a) => {
                alert = a.clone();
                true
            }
            None => false,
        }
    });
    let summary = alert["summary"].as_str().unwrap_or_default();
    assert!(summary.contains("no good backup"), "{alert}");

    // The db node archives its log beside the backups.
    let archive = backups.join("archive");
    wait_until("the log archived", || {
        std::fs::read_dir(&archive)
            .map(|d| d.flatten().any(|e| e.path().extension().is_some_and(|x| x == "bwarc")))
            .unwrap_or(false)
    });
}
