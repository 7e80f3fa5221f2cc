//! Schema of a topology's `[backup]` table: the backups `bulwark up` takes
//! on a schedule, with the same code as `bulwark db backup`.
//!
//! ```toml
//! [backup]
//! every = "6h"               # one backup this often (at least 1s)
//! keep = 8                   # the newest 8 good backups are kept, older ones removed
//! dir = "/var/backups/bulwark" # where they go (default: DATA/backups)
//! from = "replica"           # or "primary"
//! compress = true            # zstd
//! max_age_alert = "13h"      # alert when the newest good backup is older (default: twice `every`)
//! node = "db1"               # the db role whose host runs the schedule (default: the first db role)
//! port = 8120                # its status listener (/metrics, /v1/status; default: port_base + 40)
//! disk_free_alert_bytes = 1073741824 # alert when a db node has less free space (default: 1 GiB)
//! archive_log = true         # `node` copies its committed log into DIR/archive (restore --to-time)
//! ```
use crate::{Validate, Validator};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// The shortest `every`: a backup reads the whole database, and one is
/// taken at a time.
pub const MIN_EVERY: Duration = Duration::from_secs(1);

/// Which node a backup is copied from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackupSource {
    /// The replica least behind: the primary's disk is not read.
    #[default]
    Replica,
    Primary,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupSettings {
    #[serde(with = "humantime_serde")]
    pub every: Duration,
    pub keep: usize,
    /// Default: `backups` in the topology's data dir.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    pub from: BackupSource,
    pub compress: bool,
    /// Default: twice `every`.
    #[serde(skip_serializing_if = "Option::is_none", with = "humantime_serde")]
    pub max_age_alert: Option<Duration>,
    /// The db role whose host runs the schedule and whose access (secret,
    /// peers, certificate) it uses. Default: the first db role by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Port of the schedule's status listener on that host. Default:
    /// `port_base + 40` (a free port with `port_base = 0`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Alert when a db node's file system has less free space than this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_free_alert_bytes: Option<u64>,
    /// The db role `node` copies every committed log entry into
    /// `dir/archive` before its log may purge it, for point-in-time
    /// restores (`bulwark db restore --to-time`).
    pub archive_log: bool,
}

impl Default for BackupSettings {
    fn default() -> Self {
        BackupSettings {
            every: Duration::from_secs(6 * 3600),
            keep: 8,
            dir: None,
            from: BackupSource::Replica,
            compress: true,
            max_age_alert: None,
            node: None,
            port: None,
            disk_free_alert_bytes: None,
            archive_log: false,
        }
    }
}

impl BackupSettings {
    /// The age of the newest good backup past which the alert fires.
    pub fn max_age(&self) -> Duration {
        self.max_age_alert.unwrap_or(self.every.saturating_mul(2))
    }

    /// Check against the topology's db role names.
    pub fn validate_in(&self, v: &mut Validator, db_roles: &[&str]) {
        if self.every < MIN_EVERY {
            v.error("every", format!("must be at least {}", humantime::format_duration(MIN_EVERY)));
        }
        if self.keep == 0 {
            v.error("keep", "must be at least 1: the newest good backup is always kept");
        }
        if let Some(a) = self.max_age_alert {
            if a < self.every {
                v.error(
                    "max_age_alert",
                    format!(
                        "{} is shorter than every = {}: the alert would fire between any two backups",
                        humantime::format_duration(a),
                        humantime::format_duration(self.every)
                    ),
                );
            }
        }
        if let Some(n) = &self.node {
            if !db_roles.contains(&n.as_str()) {
                v.error("node", format!("`{n}` is not a db role instance of this topology"));
            }
        }
        if self.port == Some(0) {
            v.error("port", "must not be 0 (omit it to derive one)");
        }
        if self.dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            v.error("dir", "must not be empty");
        }
    }
}

impl crate::topology::Topology {
    /// With `[backup]`: the db role whose host runs the schedule, and the
    /// address of the schedule's status listener (port 0 with `port_base
    /// = 0` until `up` picks one).
    pub fn backup_placement(&self) -> Option<(String, std::net::SocketAddr)> {
        let b = self.backup.as_ref()?;
        let dbs = self.of_kind(crate::topology::RoleKind::Db);
        let node = match &b.node {
            Some(n) => dbs.into_iter().find(|p| &p.name == n)?,
            None => dbs.into_iter().next()?,
        };
        let port = b.port.unwrap_or(if self.port_base == 0 { 0 } else { self.port_base.saturating_add(40) });
        Some((node.name, std::net::SocketAddr::new(node.addr.ip(), port)))
    }
}

impl Validate for BackupSettings {
    fn validate(&self, v: &mut Validator) {
        self.validate_in(v, &[]);
    }
}

#[cfg(test)]
mod tests {
    use crate::topology::tests::ONE_HOST;
    use crate::topology::Topology;

    fn topology(backup: &str) -> String {
        format!("{ONE_HOST}[backup]\n{backup}\n")
    }

    #[test]
    fn defaults_are_six_hours_eight_kept_compressed_from_a_replica() {
        let t = crate::from_str::<Topology>(&topology(""), "t.toml").unwrap();
        let b = t.backup.unwrap();
        assert_eq!(b.every, std::time::Duration::from_secs(6 * 3600));
        assert_eq!(b.keep, 8);
        assert!(b.compress);
        assert_eq!(b.from, super::BackupSource::Replica);
        assert_eq!(b.max_age(), std::time::Duration::from_secs(12 * 3600));
    }

    #[test]
    fn errors_name_the_key() {
        let text = topology("every = \"10ms\"\nkeep = 0\nmax_age_alert = \"5ms\"\nnode = \"db9\"\nfrom = \"disk\"");
        let err = crate::from_str::<Topology>(&text, "t.toml").unwrap_err().to_string();
        assert!(err.contains("unknown variant `disk`, expected `replica` or `primary`"), "{err}");
        let text = topology("every = \"10ms\"\nkeep = 0\nmax_age_alert = \"5ms\"\nnode = \"db9\"");
        let err = crate::from_str::<Topology>(&text, "t.toml").unwrap_err().to_string();
        for want in ["backup.every", "backup.keep", "backup.max_age_alert", "backup.node", "`db9`"] {
            assert!(err.contains(want), "{want} missing in {err}");
        }
        let err = crate::from_str::<Topology>(&topology("every = \"soon\""), "t.toml").unwrap_err().to_string();
        assert!(err.contains("\"soon\", expected a duration"), "{err}");
    }
}
