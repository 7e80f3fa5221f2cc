//! The tool's side of backups (`bulwark db backup`, `restore`, and the
//! scheduled backups of `bulwark up`): ask a node for a consistent copy,
//! stream it to a file (optionally zstd-compressed) with a `.sha256` beside
//! it, and restore such a file into the data dir of a new node.
//!
//! The copy is taken from the replica least behind (a learner or a voter
//! that is not the primary), so the primary's disk is not read, or from the
//! primary when asked. The bytes received are checked against the SHA-256
//! the node computed of its copy; the `.sha256` file is of the file as
//! written (compressed or not), in the format of `sha256sum`, so
//! `sha256sum -c FILE.sha256` checks it too.
//!
//! Owns: the backup files it writes. Must not touch: a node's data dir
//! other than the one a restore is pointed at.
use crate::backup::{self, BackupError, BackupInfo, Recorded};
use bulwark_db_api::api::DbRole;
use bulwark_db_api::http_client::HttpClient;
use bulwark_db_api::Client;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The first bytes of a zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// How long the node may take to copy the database.
const COPY_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long one chunk may take.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a backup or a restore by the tool failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{0}")]
    Backup(#[from] BackupError),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("no node answered")]
    NoNode,
    #[error("no replica answered (the cluster has only a primary, or the replicas are down); pass --from-primary to copy from the primary")]
    NoReplica,
    #[error("node {addr}: {message}")]
    Node { addr: String, message: String },
    #[error("the copy received from {addr} has SHA-256 {got}, the node announced {want}: not written")]
    Corrupt { addr: String, got: String, want: String },
    #[error("{}: missing: a backup is restored only after its checksum is verified", path.display())]
    NoChecksum { path: PathBuf },
    #[error("{}: checksum mismatch: the file has SHA-256 {got}, {} says {want}", path.display(), sums.display())]
    BadChecksum { path: PathBuf, sums: PathBuf, got: String, want: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ToolError + '_ {
    move |source| ToolError::Io { path: path.to_path_buf(), source }
}

/// How to take a backup.
#[derive(Debug, Clone, Copy, Default)]
pub struct BackupOptions {
    /// Copy from the primary instead of a replica.
    pub from_primary: bool,
    /// Write the file zstd-compressed.
    pub compress: bool,
}

/// A backup written.
#[derive(Debug, Clone)]
pub struct BackupDone {
    pub info: BackupInfo,
    /// The node it was taken from.
    pub from: String,
    pub file: PathBuf,
    pub checksum_file: PathBuf,
    /// Size of the file as written.
    pub file_bytes: u64,
}

/// Takes backups through a cluster's API.
pub struct BackupTool {
    client: Client,
    http: HttpClient,
}

/// A writer that hashes what passes through it.
struct Hashing<W: Write> {
    inner: W,
    sha: ring::digest::Context,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Where the received copy goes: the file, or a compressor in front of it.
enum Sink {
    Plain(Hashing<std::io::BufWriter<std::fs::File>>),
    Zstd(zstd::stream::write::Encoder<'static, Hashing<std::io::BufWriter<std::fs::File>>>),
}

/// `FILE.sha256` beside `file`.
pub fn checksum_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".sha256");
    file.with_file_name(name)
}

impl BackupTool {
    /// A tool for the cluster at `nodes`, with `secret` (the client or the
    /// peer secret) and the node's TLS files when the cluster uses them.
    pub fn new(nodes: Vec<String>, secret: &str, tls: Option<bulwark_mtls::MutualTls>) -> BackupTool {
        BackupTool { client: Client::with_tls(nodes, secret, tls.clone()), http: HttpClient::new(secret, None, tls) }
    }

    /// The address of the node to copy from.
    async fn source(&self, from_primary: bool) -> Result<String, ToolError> {
        let statuses = self.client.statuses().await;
        if statuses.is_empty() {
            return Err(ToolError::NoNode);
        }
        let pick = if from_primary {
            statuses.iter().find(|s| s.role == DbRole::Primary)
        } else {
            statuses.iter().filter(|s| s.role.follows() && s.lag.known).min_by_key(|s| s.lag.entries)
        };
        match pick {
            Some(s) => Ok(s.address.clone()),
            None if from_primary => Err(ToolError::NoNode),
            None => Err(ToolError::NoReplica),
        }
    }

    async fn call(
        &self,
        method: http::Method,
        addr: &str,
        path: &str,
        timeout: Duration,
    ) -> Result<bytes::Bytes, ToolError> {
        let r = self
            .http
            .send(method, addr, path, bytes::Bytes::new(), &[], timeout)
            .await
            .map_err(|e| ToolError::Node { addr: addr.to_string(), message: e.to_string() })?;
        if r.status != 200 {
            let message = serde_json::from_slice::<bulwark_db_api::api::ErrorBody>(&r.body)
                .map(|b| b.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&r.body).into_owned());
            return Err(ToolError::Node { addr: addr.to_string(), message: format!("{}: {message}", r.status) });
        }
        Ok(r.body)
    }

    /// Take a backup into `to` (see the module doc). The file appears
    /// whole or not at all (written beside it, then renamed), then its
    /// `.sha256`.
    pub async fn backup_to(&self, to: &Path, opts: BackupOptions) -> Result<BackupDone, ToolError> {
        let addr = self.source(opts.from_primary).await?;
        let body = self.call(http::Method::POST, &addr, "/v1/backup", COPY_TIMEOUT).await?;
        let info: BackupInfo = serde_json::from_slice(&body)
            .map_err(|e| ToolError::Node { addr: addr.clone(), message: format!("malformed answer: {e}") })?;
        let result = self.receive(&addr, &info, to, opts.compress).await;
        // The node's copy goes either way (it would go after an hour).
        let finish = format!("/v1/backup/{}/finish", info.id);
        let _ = self.call(http::Method::POST, &addr, &finish, CHUNK_TIMEOUT).await;
        let file_bytes = result?;
        Ok(BackupDone { info, from: addr, file: to.to_path_buf(), checksum_file: checksum_path(to), file_bytes })
    }

    async fn receive(&self, addr: &str, info: &BackupInfo, to: &Path, compress: bool) -> Result<u64, ToolError> {
        let mut partial = to.as_os_str().to_os_string();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let r = self.receive_into(addr, info, &partial, compress).await;
        let r = r.and_then(|(sha256, bytes)| self.publish(&partial, to, sha256, bytes));
        if r.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        r
    }

    /// Write the copy to `partial`; answer the file's SHA-256 and size.
    async fn receive_into(
        &self,
        addr: &str,
        info: &BackupInfo,
        partial: &Path,
        compress: bool,
    ) -> Result<(String, u64), ToolError> {
        let file = std::fs::File::create(partial).map_err(io(partial))?;
        let hashing = Hashing {
            inner: std::io::BufWriter::new(file),
            sha: ring::digest::Context::new(&ring::digest::SHA256),
            bytes: 0,
        };
        let mut sink = if compress {
            Sink::Zstd(zstd::stream::write::Encoder::new(hashing, 3).map_err(io(partial))?)
        } else {
            Sink::Plain(hashing)
        };
        let mut received = ring::digest::Context::new(&ring::digest::SHA256);
        let mut offset = 0u64;
        while offset < info.bytes {
            let path = format!("/v1/backup/{}?offset={offset}", info.id);
            let chunk = self.call(http::Method::GET, addr, &path, CHUNK_TIMEOUT).await?;
            if chunk.is_empty() {
                return Err(ToolError::Node {
                    addr: addr.to_string(),
                    message: format!("the copy ended at byte {offset} of {}", info.bytes),
                });
            }
            received.update(&chunk);
            match &mut sink {
                Sink::Plain(w) => w.write_all(&chunk),
                Sink::Zstd(w) => w.write_all(&chunk),
            }
            .map_err(io(partial))?;
            offset += chunk.len() as u64;
        }
        let got = backup::hex(received.finish().as_ref());
        if got != info.sha256 {
            return Err(ToolError::Corrupt { addr: addr.to_string(), got, want: info.sha256.clone() });
        }
        let hashing = match sink {
            Sink::Plain(w) => w,
            Sink::Zstd(w) => w.finish().map_err(io(partial))?,
        };
        let Hashing { inner, sha, bytes } = hashing;
        let file = inner.into_inner().map_err(|e| e.into_error()).map_err(io(partial))?;
        file.sync_all().map_err(io(partial))?;
        Ok((backup::hex(sha.finish().as_ref()), bytes))
    }

    /// Rename the whole `partial` to `to` and write `to.sha256`.
    fn publish(&self, partial: &Path, to: &Path, sha256: String, bytes: u64) -> Result<u64, ToolError> {
        std::fs::rename(partial, to).map_err(io(to))?;
        let sums = checksum_path(to);
        let name = to.file_name().unwrap_or_default().to_string_lossy();
        std::fs::write(&sums, format!("{sha256}  {name}\n")).map_err(io(&sums))?;
        Ok(bytes)
    }
}

/// Check `file` against `FILE.sha256` (required).
pub fn verify_checksum(file: &Path) -> Result<(), ToolError> {
    let sums = checksum_path(file);
    let text = match std::fs::read_to_string(&sums) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ToolError::NoChecksum { path: sums }),
        Err(e) => return Err(ToolError::Io { path: sums, source: e }),
    };
    let want = text.split_whitespace().next().unwrap_or_default().to_ascii_lowercase();
    let got = backup::sha256_file(file)?;
    if got != want {
        return Err(ToolError::BadChecksum { path: file.to_path_buf(), sums, got, want });
    }
    Ok(())
}

/// A reader of the database in a backup file, compressed or not.
pub fn open_backup(file: &Path) -> Result<Box<dyn Read>, ToolError> {
    let mut f = std::fs::File::open(file).map_err(io(file))?;
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).map_err(io(file))?;
    let f = std::fs::File::open(file).map_err(io(file))?;
    if n == 4 && magic == ZSTD_MAGIC {
        Ok(Box::new(zstd::stream::read::Decoder::new(f).map_err(io(file))?))
    } else {
        Ok(Box::new(f))
    }
}

/// Restore the backup `file` into `data_dir` for node `node_id` with its
/// API at `address` and Raft at `raft_address` (see `backup::restore_data_dir`), after checking its
/// checksum. With `force`, what a node keeps in `data_dir` is removed
/// first; without it a non-empty data dir is refused.
pub async fn restore(
    file: &Path,
    data_dir: &Path,
    node_id: u64,
    address: &str,
    raft_address: &str,
    force: bool,
) -> Result<Recorded, ToolError> {
    verify_checksum(file)?;
    if force {
        backup::clear_data_dir(data_dir)?;
    }
    let mut reader = open_backup(file)?;
    Ok(backup::restore_data_dir(&mut reader, data_dir, node_id, address, raft_address).await?)
}
