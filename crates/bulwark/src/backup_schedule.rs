//! The backups `bulwark up` takes on a schedule (`[backup]` in the
//! topology): every `every`, the same backup as `bulwark db backup`
//! ([`BackupTool::backup_to`]) into `dir`, named by the time it was taken
//! (`bulwark-2025-01-31T060000.123Z.db.zst`, with its `.sha256`); then the
//! newest `keep` good backups are kept and older ones removed.
//!
//! A good backup is a file with its `.sha256` beside it: the tool writes
//! the checksum only after the whole file, checked against the node's
//! SHA-256 of its copy, is in place. Pruning runs only after a good
//! backup and counts only good ones, so the newest good backup is never
//! removed, and a failed attempt removes nothing. A failure is logged and
//! counted, and the next attempt comes at the next tick.
//!
//! The state (time of the newest good backup, failures) is served by the
//! status listener (`backup_status.rs`); at start it is read back from
//! `dir`, so the age survives a restart of `up`.
//!
//! Owns: the `bulwark-*` files in `dir`. Must not touch: any other file
//! there (an operator's own copies are left alone).
use bulwark_config::backup::{BackupSettings, BackupSource};
use bulwark_db_backup::backup_tool::{checksum_path, BackupOptions, BackupTool};
use bulwark_telemetry::clock::unix_ms;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

const PREFIX: &str = "bulwark-";

/// What the schedule has done, for `/metrics` and `/v1/status`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ScheduleState {
    /// Unix ms of the newest good backup (its file's time), if any.
    pub last_good_ms: Option<u64>,
    pub last_good_file: Option<PathBuf>,
    /// The log index the newest backup taken by this process holds.
    pub last_good_log_index: Option<u64>,
    /// Unix ms when the schedule started (the age of "no backup yet").
    pub started_ms: u64,
    pub backups_total: u64,
    pub failures_total: u64,
    pub last_error: Option<String>,
    /// Alert threshold, seconds (`max_age_alert`).
    pub max_age_seconds: f64,
    pub every_seconds: f64,
    pub keep: usize,
}

impl ScheduleState {
    /// Seconds since the newest good backup (or since the start when there
    /// is none yet), at wall-clock time `at_unix_ms`.
    pub fn age_seconds(&self, at_unix_ms: u64) -> f64 {
        at_unix_ms.saturating_sub(self.last_good_ms.unwrap_or(self.started_ms)) as f64 / 1000.0
    }
}

pub type SharedState = Arc<Mutex<ScheduleState>>;

fn ms_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Whether `name` is a backup file this schedule wrote (not its checksum).
fn is_backup_name(name: &str) -> bool {
    name.starts_with(PREFIX) && (name.ends_with(".db") || name.ends_with(".db.zst"))
}

/// The good backups in `dir`, newest first (names sort by time).
pub fn good_backups(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(is_backup_name))
        .filter(|p| checksum_path(p).is_file())
        .collect();
    found.sort();
    found.reverse();
    found
}

/// Remove all but the newest `keep` good backups (each with its
/// `.sha256`); answers the files removed. `keep` is at least 1.
pub fn prune(dir: &Path, keep: usize) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    for old in good_backups(dir).into_iter().skip(keep.max(1)) {
        // The checksum goes first: a file left without one is no longer
        // counted as good, never the other way round.
        match std::fs::remove_file(checksum_path(&old)).and_then(|_| std::fs::remove_file(&old)) {
            Ok(()) => removed.push(old),
            Err(e) => tracing::warn!("removing the old backup {}: {e}", old.display()),
        }
    }
    removed
}

/// A file name for a backup taken at `t`: the UTC time, without colons.
fn file_name(t: SystemTime, compress: bool) -> String {
    let stamp = humantime::format_rfc3339_millis(t).to_string().replace(':', "");
    format!("{PREFIX}{stamp}.db{}", if compress { ".zst" } else { "" })
}

/// Takes the scheduled backups.
pub struct Schedule {
    pub settings: BackupSettings,
    pub dir: PathBuf,
    pub tool: BackupTool,
    pub state: SharedState,
}

impl Schedule {
    pub fn new(settings: BackupSettings, dir: PathBuf, tool: BackupTool) -> Schedule {
        let state = ScheduleState {
            started_ms: unix_ms(),
            max_age_seconds: settings.max_age().as_secs_f64(),
            every_seconds: settings.every.as_secs_f64(),
            keep: settings.keep,
            ..Default::default()
        };
        Schedule { settings, dir, tool, state: Arc::new(Mutex::new(state)) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ScheduleState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Create `dir`, remove what an interrupted attempt left, and read the
    /// newest good backup's time.
    pub fn prepare(&self) -> std::io::Result<()> {
        bulwark_cluster::private::dir(&self.dir)?;
        for e in std::fs::read_dir(&self.dir)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(PREFIX) && name.ends_with(".partial") {
                let _ = std::fs::remove_file(e.path());
            }
        }
        if let Some(newest) = good_backups(&self.dir).into_iter().next() {
            let t = std::fs::metadata(&newest).and_then(|m| m.modified()).map(ms_of).ok();
            let mut s = self.lock();
            s.last_good_ms = t;
            s.last_good_file = Some(newest);
        }
        Ok(())
    }

    /// Take one backup now, then prune; failures are logged and counted.
    pub async fn take_one(&self) {
        let to = self.dir.join(file_name(SystemTime::now(), self.settings.compress));
        let opts = BackupOptions {
            from_primary: self.settings.from == BackupSource::Primary,
            compress: self.settings.compress,
        };
        match self.tool.backup_to(&to, opts).await {
            Ok(done) => {
                tracing::info!(
                    file = %done.file.display(), bytes = done.file_bytes, log_index = done.info.log_index,
                    from = %done.from, "scheduled backup written"
                );
                {
                    let mut s = self.lock();
                    s.last_good_ms = Some(unix_ms());
                    s.last_good_file = Some(done.file.clone());
                    s.last_good_log_index = Some(done.info.log_index);
                    s.backups_total += 1;
                    s.last_error = None;
                }
                let (dir, keep) = (self.dir.clone(), self.settings.keep);
                if let Ok(removed) = tokio::task::spawn_blocking(move || prune(&dir, keep)).await {
                    for r in removed {
                        tracing::info!(file = %r.display(), "old backup removed (keep = {keep})");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(file = %to.display(), "scheduled backup failed: {e}");
                let mut s = self.lock();
                s.failures_total += 1;
                s.last_error = Some(e.to_string());
            }
        }
    }

    /// One backup every `every` (the first one `every` after the start)
    /// until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let every = self.settings.every.max(Duration::from_millis(1));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.take_one() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, name: &str, good: bool) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, b"x").unwrap();
        if good {
            std::fs::write(checksum_path(&p), b"x").unwrap();
        }
        p
    }

    #[test]
    fn pruning_keeps_the_newest_good_backups_and_nothing_else_is_touched() {
        let d = tempfile::tempdir().unwrap();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let names: Vec<String> = (0..5).map(|i| file_name(t0 + Duration::from_secs(i * 3600), i % 2 == 0)).collect();
        let files: Vec<PathBuf> = names.iter().map(|n| touch(d.path(), n, true)).collect();
        // The newest has no checksum yet (being written): not good.
        let newest = touch(d.path(), &file_name(t0 + Duration::from_secs(99_999), true), false);
        let mine = touch(d.path(), "operator-copy.db", true);
        let removed = prune(d.path(), 2);
        assert_eq!(removed, vec![files[2].clone(), files[1].clone(), files[0].clone()]);
        assert_eq!(good_backups(d.path()), vec![files[4].clone(), files[3].clone()]);
        for p in [&newest, &mine, &checksum_path(&mine)] {
            assert!(p.exists(), "{} removed", p.display());
        }
        assert!(!checksum_path(&files[0]).exists());
        // keep = 0 still keeps the newest good one.
        prune(d.path(), 0);
        assert_eq!(good_backups(d.path()), vec![files[4].clone()]);
    }

    #[test]
    fn names_sort_by_time() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let a = file_name(t, true);
        let b = file_name(t + Duration::from_millis(1), false);
        assert_eq!(a, "bulwark-2023-11-14T221320.000Z.db.zst");
        assert!(a < b && is_backup_name(&a) && is_backup_name(&b));
    }
}
