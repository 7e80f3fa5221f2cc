//! One secret per hop of the topology, so that a tier holds only the
//! credentials of the hops it takes part in: the internet-facing lb can
//! reach the web tier and read status, never the database.
//!
//! The files live in `<data_dir>/secrets/` (0700), one per hop (0600):
//! `lb-web`, `web-app`, `app-db`, `db-peer`, `monitor` (the read-only
//! monitoring token) and `deploy` (the token of `bulwark deploy` towards
//! the app roles). `up` creates those its host's roles need when they are
//! missing: random values, or, when the data directory holds the single
//! `secret` file of earlier versions, values derived from it (HMAC-SHA256
//! of the hop's name), so hosts that were given the same `secret` agree
//! on every hop without copying files.
use crate::private;
use bulwark_config::topology::RoleKind;
use ring::{hmac, rand::SecureRandom};
use std::path::{Path, PathBuf};

/// A hop between tiers, each with its own secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hop {
    /// lb → web (`X-Bulwark-Cluster`).
    LbWeb,
    /// web → app (`X-Bulwark-Cluster`).
    WebApp,
    /// app → db API (`Authorization: Bearer`).
    AppDb,
    /// db ↔ db: Raft, membership, promote, forwarded requests.
    DbPeer,
    /// Read-only monitoring: `/metrics`, `/v1/status`.
    Monitor,
    /// `bulwark deploy` → app roles (`/deploy/*`, `Authorization: Bearer`).
    Deploy,
}

impl Hop {
    pub const ALL: [Hop; 6] = [Hop::LbWeb, Hop::WebApp, Hop::AppDb, Hop::DbPeer, Hop::Monitor, Hop::Deploy];

    /// The file name under `secrets/`.
    pub fn file_name(self) -> &'static str {
        match self {
            Hop::LbWeb => "lb-web",
            Hop::WebApp => "web-app",
            Hop::AppDb => "app-db",
            Hop::DbPeer => "db-peer",
            Hop::Monitor => "monitor",
            Hop::Deploy => "deploy",
        }
    }

    /// The secrets a role of `kind` holds: those of the hops it sends or
    /// accepts on, and the monitoring token.
    pub fn held_by(kind: RoleKind) -> &'static [Hop] {
        match kind {
            RoleKind::Lb => &[Hop::LbWeb, Hop::Monitor],
            RoleKind::Web => &[Hop::LbWeb, Hop::WebApp, Hop::Monitor],
            RoleKind::App => &[Hop::WebApp, Hop::AppDb, Hop::Monitor, Hop::Deploy],
            RoleKind::Db => &[Hop::AppDb, Hop::DbPeer, Hop::Monitor],
        }
    }
}

/// The directory of the hop secrets.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("secrets")
}

/// The file of one hop's secret.
pub fn path(data_dir: &Path, hop: Hop) -> PathBuf {
    dir(data_dir).join(hop.file_name())
}

/// The single cluster secret of earlier versions, if a data directory has one.
pub fn legacy_path(data_dir: &Path) -> PathBuf {
    data_dir.join("secret")
}

/// The value of `hop`'s secret derived from a single cluster secret.
pub fn derive_from(master: &str, hop: Hop) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, master.trim().as_bytes());
    let tag = hmac::sign(&key, format!("bulwark hop secret: {}", hop.file_name()).as_bytes());
    hex(tag.as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| std::io::Error::other("the system random source failed"))?;
    Ok(hex(&bytes))
}

/// Create `secrets/` (0700) and every missing secret the roles of `kinds`
/// hold (0600); existing files keep their value and are tightened.
pub fn ensure(data_dir: &Path, kinds: impl IntoIterator<Item = RoleKind>) -> std::io::Result<()> {
    private::dir(&dir(data_dir))?;
    let legacy = match std::fs::read_to_string(legacy_path(data_dir)) {
        Ok(s) if !s.trim().is_empty() => Some(s),
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let mut hops: Vec<Hop> = kinds.into_iter().flat_map(|k| Hop::held_by(k).iter().copied()).collect();
    hops.sort_by_key(|h| h.file_name());
    hops.dedup();
    for hop in hops {
        let value = match &legacy {
            Some(master) => derive_from(master, hop),
            None => random()?,
        };
        private::ensure_file(&path(data_dir, hop), || value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().mode() & 0o777
    }

    #[test]
    fn an_lb_host_gets_no_database_secret() {
        let d = tempfile::tempdir().unwrap();
        ensure(d.path(), [RoleKind::Lb]).unwrap();
        assert_eq!(mode(&dir(d.path())), 0o700);
        for hop in Hop::ALL {
            let p = path(d.path(), hop);
            assert_eq!(p.exists(), [Hop::LbWeb, Hop::Monitor].contains(&hop), "{}", p.display());
        }
        assert_eq!(mode(&path(d.path(), Hop::LbWeb)), 0o600);
    }

    #[test]
    fn every_hop_has_its_own_value_and_existing_ones_stay() {
        let d = tempfile::tempdir().unwrap();
        ensure(d.path(), [RoleKind::Lb, RoleKind::Web, RoleKind::App, RoleKind::Db]).unwrap();
        let read = |h| std::fs::read_to_string(path(d.path(), h)).unwrap();
        let mut values: Vec<String> = Hop::ALL.iter().map(|h| read(*h)).collect();
        assert!(values.iter().all(|v| v.len() == 64));
        let before = values.clone();
        values.sort();
        values.dedup();
        assert_eq!(values.len(), 6, "six distinct secrets");
        ensure(d.path(), [RoleKind::Db]).unwrap();
        assert_eq!(Hop::ALL.iter().map(|h| read(*h)).collect::<Vec<_>>(), before);
    }

    #[test]
    fn hosts_given_one_legacy_secret_agree_on_every_hop() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for d in [&a, &b] {
            std::fs::write(legacy_path(d.path()), "one-shared-secret-0123456789\n").unwrap();
        }
        ensure(a.path(), [RoleKind::Lb]).unwrap();
        ensure(b.path(), [RoleKind::Web]).unwrap();
        let read = |d: &Path, h| std::fs::read_to_string(path(d, h)).unwrap();
        assert_eq!(read(a.path(), Hop::LbWeb), read(b.path(), Hop::LbWeb));
        assert_eq!(read(a.path(), Hop::LbWeb), derive_from("one-shared-secret-0123456789", Hop::LbWeb));
        assert_ne!(read(b.path(), Hop::LbWeb), read(b.path(), Hop::WebApp));
        assert!(!read(b.path(), Hop::WebApp).contains("one-shared-secret"));
    }
}
