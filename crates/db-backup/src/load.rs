//! `bulwark db load`: run an SQL script (see `sql_script`) through the
//! primary, in batches, resumable.
//!
//! Each batch (by default up to 500 statements or 256 KiB of SQL) is one
//! `/v1/execute` request, one transaction, sent with a request id made of
//! the load's id, the batch's byte offset and a hash of its statements. A
//! progress file beside the script (`FILE.progress`, JSON) records after
//! each batch the byte offset and line where the next one starts, and a
//! SHA-256 of the file up to there. A load run again with the same
//! progress file continues from that offset; a batch that was applied
//! just before an interruption, but not yet recorded, is sent again with
//! the same request id and the primary answers its stored outcome instead
//! of applying it twice (within the request id window: an hour, or the
//! last million log entries). A progress file of a file that changed
//! before its offset is refused. A finished load leaves its progress file
//! saying `done`; loading again needs it removed.
//!
//! When SQLite refuses a batch (the whole batch is rolled back), its
//! statements are sent again one at a time, each recorded as it succeeds,
//! so the load stops at the statement SQLite refused, named by its line.
//! Mend the file there and run the load again: it continues from that
//! statement.
use crate::sql_script::{Script, ScriptError, ScriptStatement};
use bulwark_db_api::{Client, ClientError, Statement};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Why a load stopped.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Script(#[from] ScriptError),
    #[error("line {line}: SQLite refused the statement: {message}")]
    Statement { line: u64, message: String },
    #[error("{message}; the progress is saved: run the load again to continue from line {line}")]
    Cluster { line: u64, message: String },
    #[error("{}: records a load of a file that has changed before line {line}; remove it to load from the start", path.display())]
    Changed { path: PathBuf, line: u64 },
    #[error("{}: this load already finished; remove it to load the file again", path.display())]
    Finished { path: PathBuf },
}

/// How to load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Most statements in one batch.
    pub batch_statements: usize,
    /// Most bytes of SQL in one batch (a longer statement goes alone).
    pub batch_bytes: usize,
    /// Stop after this many batches (run again to continue).
    pub max_batches: Option<u64>,
    /// The progress file (default: `FILE.progress`).
    pub progress: Option<PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { batch_statements: 500, batch_bytes: 256 << 10, max_batches: None, progress: None }
    }
}

/// What a load did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadReport {
    /// Statements run by this call.
    pub statements: u64,
    pub batches: u64,
    /// Line it started from (1: the beginning).
    pub from_line: u64,
    /// Whether the whole file is loaded.
    pub done: bool,
}

/// The progress file's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Progress {
    load_id: String,
    offset: u64,
    line: u64,
    prefix_sha256: String,
    statements: u64,
    done: bool,
}

/// `FILE.progress` beside `file`.
pub fn progress_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".progress");
    file.with_file_name(name)
}

/// SHA-256 of a file's bytes `[from, to)`, continuing `ctx`.
fn hash_range(file: &Path, from: u64, to: u64, ctx: &mut ring::digest::Context) -> Result<(), LoadError> {
    use std::io::{Seek, SeekFrom};
    let io = |source| LoadError::Io { path: file.to_path_buf(), source };
    let mut f = std::fs::File::open(file).map_err(io)?;
    f.seek(SeekFrom::Start(from)).map_err(io)?;
    let mut f = f.take(to - from);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            return Ok(());
        }
        ctx.update(&buf[..n]);
    }
}

fn save(path: &Path, p: &Progress) -> Result<(), LoadError> {
    let io = |source| LoadError::Io { path: path.to_path_buf(), source };
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, serde_json::to_vec_pretty(p).unwrap_or_default()).map_err(io)?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn new_load_id() -> String {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    format!("{ms:x}{:x}", std::process::id())
}

/// The state of a load in progress.
struct Loader<'a> {
    client: &'a Client,
    file: PathBuf,
    progress_file: PathBuf,
    progress: Progress,
    /// SHA-256 of the file up to `progress.offset`.
    prefix: ring::digest::Context,
    report: LoadReport,
}

impl Loader<'_> {
    /// Send `batch` as one request; record it when it succeeded.
    async fn send(&mut self, batch: &[ScriptStatement]) -> Result<(), ClientError> {
        let statements: Vec<Statement> = batch.iter().flat_map(|s| s.sql.iter().map(Statement::new)).collect();
        let mut h = ring::digest::Context::new(&ring::digest::SHA256);
        for s in &statements {
            h.update(s.sql.as_bytes());
            h.update(&[0]);
        }
        let hash = crate::backup::hex(&h.finish().as_ref()[..8]);
        let id = format!("load-{}-{}-{hash}", self.progress.load_id, self.progress.offset);
        self.client.execute_once(&id, &statements).await?;
        let end = batch.last().map_or(self.progress.offset, |s| s.end);
        hash_range(&self.file, self.progress.offset, end, &mut self.prefix)
            .map_err(|e| ClientError::Unavailable(e.to_string()))?;
        self.progress.offset = end;
        self.progress.line = batch.last().map_or(self.progress.line, |s| s.next_line);
        self.progress.statements += batch.len() as u64;
        self.progress.prefix_sha256 = crate::backup::hex(self.prefix.clone().finish().as_ref());
        self.report.statements += batch.len() as u64;
        self.report.batches += 1;
        save(&self.progress_file, &self.progress).map_err(|e| ClientError::Unavailable(e.to_string()))?;
        Ok(())
    }

    /// Send `batch`; when SQLite refuses it, find the statement.
    async fn send_or_find(&mut self, batch: &[ScriptStatement]) -> Result<(), LoadError> {
        let line = batch.first().map_or(self.progress.line, |s| s.line);
        match self.send(batch).await {
            Ok(()) => Ok(()),
            Err(ClientError::Sql(message)) if batch.len() == 1 => Err(LoadError::Statement { line, message }),
            Err(ClientError::Sql(_)) => {
                for one in batch {
                    Box::pin(self.send_or_find(std::slice::from_ref(one))).await?;
                }
                Ok(())
            }
            Err(e) => Err(LoadError::Cluster { line, message: e.to_string() }),
        }
    }
}

/// Load `file` through `client`'s primary (see the module doc).
pub async fn load(client: &Client, file: &Path, opts: &LoadOptions) -> Result<LoadReport, LoadError> {
    let progress_file = opts.progress.clone().unwrap_or_else(|| progress_path(file));
    let mut prefix = ring::digest::Context::new(&ring::digest::SHA256);
    let progress = match std::fs::read(&progress_file) {
        Ok(bytes) => {
            let p: Progress = serde_json::from_slice(&bytes)
                .map_err(|e| LoadError::Io { path: progress_file.clone(), source: std::io::Error::other(e) })?;
            if p.done {
                return Err(LoadError::Finished { path: progress_file });
            }
            hash_range(file, 0, p.offset, &mut prefix)?;
            if crate::backup::hex(prefix.clone().finish().as_ref()) != p.prefix_sha256 {
                return Err(LoadError::Changed { path: progress_file, line: p.line });
            }
            p
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Progress {
            load_id: new_load_id(),
            offset: 0,
            line: 1,
            prefix_sha256: crate::backup::hex(ring::digest::digest(&ring::digest::SHA256, b"").as_ref()),
            statements: 0,
            done: false,
        },
        Err(e) => return Err(LoadError::Io { path: progress_file, source: e }),
    };
    let mut script = Script::open(file, progress.offset, progress.line)?;
    let from_line = progress.line;
    let mut loader = Loader {
        client,
        file: file.to_path_buf(),
        progress_file,
        progress,
        prefix,
        report: LoadReport { statements: 0, batches: 0, from_line, done: false },
    };
    let mut batch: Vec<ScriptStatement> = Vec::new();
    let mut bytes = 0usize;
    loop {
        if opts.max_batches.is_some_and(|m| loader.report.batches >= m) {
            return Ok(loader.report);
        }
        let next = script.next_statement()?;
        let len = next.as_ref().map_or(0, |s| s.sql.iter().map(String::len).sum());
        let full = batch.len() >= opts.batch_statements.max(1) || (!batch.is_empty() && bytes + len > opts.batch_bytes);
        if (next.is_none() || full) && !batch.is_empty() {
            loader.send_or_find(&batch).await?;
            batch.clear();
            bytes = 0;
            if opts.max_batches.is_some_and(|m| loader.report.batches >= m) && next.is_some() {
                return Ok(loader.report);
            }
        }
        match next {
            Some(s) => {
                bytes += len;
                batch.push(s);
            }
            None => break,
        }
    }
    // Whatever follows the last statement (comments) counts as loaded.
    let (end, line) = script.position();
    hash_range(file, loader.progress.offset, end, &mut loader.prefix)?;
    loader.progress.offset = end;
    loader.progress.line = line;
    loader.progress.prefix_sha256 = crate::backup::hex(loader.prefix.clone().finish().as_ref());
    loader.progress.done = true;
    save(&loader.progress_file, &loader.progress)?;
    loader.report.done = true;
    Ok(loader.report)
}
