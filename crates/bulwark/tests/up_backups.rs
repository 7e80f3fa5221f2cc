//! Scheduled backups of `bulwark up` (`[backup]` in the topology): backups
//! that `bulwark db restore` accepts appear every `every`, pruning keeps
//! `keep` of them, the status listener's `/metrics` has the age and the
//! failure count, and the lb's overview shows the backup's age and the
//! disk-space alert of the db nodes.
use bulwark_testkit::config::{BackupSettings, TopologyConfig, ONE_MACHINE_ROLES};
use bulwark_testkit::{bulwark_bin, get_json, request, wait_until, Process};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn good_backups(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.flatten().map(|e| e.path()).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|p: &PathBuf| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with("bulwark-") && n.ends_with(".db.zst")
        })
        .filter(|p| Path::new(&format!("{}.sha256", p.display())).exists())
        .collect();
    v.sort();
    v
}

#[test]
fn up_takes_scheduled_backups_that_restore_and_prunes_to_keep() {
    let data = tempfile::tempdir().unwrap();
    let backups = data.path().join("backups");
    let topology = data.path().join("topology.toml");
    let backup = BackupSettings {
        every: Duration::from_secs(1),
        keep: 2,
        dir: Some(backups.clone()),
        max_age_alert: Some(Duration::from_secs(3600)),
        // The disk alert threshold above any real disk: every db node alerts.
        disk_free_alert_bytes: Some(i64::MAX as u64),
        ..BackupSettings::default()
    };
    let config = TopologyConfig::new("bk").plain_http().host("one", &ONE_MACHINE_ROLES).backup(&backup);
    std::fs::write(&topology, config.to_toml()).unwrap();
    let up = Process::up(&topology, &data.path().join("run"));
    let status_addr = up.addr("backup.http");
    let monitor = std::fs::read_to_string(data.path().join("run/secrets/monitor")).unwrap();
    let auth = format!("Bearer {}", monitor.trim());
    let get = |path: &str| {
        let r = request(status_addr, "GET", path, &[("Authorization", &auth)], b"").unwrap();
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        r.text()
    };
    // Without the monitoring token: refused.
    assert_eq!(request(status_addr, "GET", "/metrics", &[], b"").unwrap().status, 401);

    // Backups come every second; once four are written, two are left.
    let status = || serde_json::from_str::<serde_json::Value>(&get("/v1/status")).unwrap();
    wait_until("four scheduled backups", || status()["backups_total"].as_u64().unwrap_or(0) >= 4);
    wait_until("pruning to keep = 2", || good_backups(&backups).len() == 2);
    let s = status();
    assert!(s["age_seconds"].as_f64().unwrap() < 3600.0, "{s}");
    assert_eq!(s["keep"], 2, "{s}");

    let metrics = get("/metrics");
    let age = bulwark_testkit::metric_value(&metrics, "bulwark_db_last_backup_age_seconds", &[]);
    assert!(age >= 0.0, "{metrics}");
    assert!(metrics.contains("bulwark_db_backup_failures_total "), "{metrics}");
    assert!(bulwark_testkit::metric_value(&metrics, "bulwark_db_backups_total", &[]) >= 4.0, "{metrics}");

    // The lb's overview: the backup's age, and every db node below the
    // disk-space threshold.
    let token = std::fs::read_to_string(data.path().join("run/admin.token")).unwrap();
    let overview = || get_json(up.addr("lb1.admin"), "/api/overview", token.trim());
    wait_until("the backup's age on the overview", || {
        let o = overview();
        o["nodes"].as_array().unwrap().iter().any(|n| n["name"] == "backup" && n["backup"]["age_seconds"].is_number())
    });
    wait_until("a DiskLow alert for every db node", || {
        let o = overview();
        o["alerts"].as_array().unwrap().iter().filter(|a| a["name"] == "DiskLow").count() == 3
    });
    assert!(!overview()["alerts"].as_array().unwrap().iter().any(|a| a["name"] == "BackupTooOld"));

    // The newest backup restores (copied away first: pruning goes on).
    let newest = good_backups(&backups).pop().unwrap();
    let copy = data.path().join("kept.db.zst");
    std::fs::copy(&newest, &copy).unwrap();
    let sums = std::fs::read_to_string(format!("{}.sha256", newest.display())).unwrap();
    let sum = sums.split_whitespace().next().unwrap();
    std::fs::write(data.path().join("kept.db.zst.sha256"), format!("{sum}  kept.db.zst\n")).unwrap();
    let out = Command::new(bulwark_bin())
        .args(["db", "restore", "--from"])
        .arg(&copy)
        .arg("--data-dir")
        .arg(data.path().join("restored"))
        .args(["--node-id", "1", "--address", "127.0.0.1:1", "--raft-address", "127.0.0.1:2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let restored: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(restored["log_index"].as_u64().unwrap() > 0, "{restored}");
}
