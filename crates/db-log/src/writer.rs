//! The writer thread.
//!
//! # Durability and group commit
//!
//! `LogStore::append` encodes the entries, keeps them decoded in memory
//! (readable at once, as openraft requires) and queues them to the writer
//! thread, then returns. The writer takes everything queued (no waiting),
//! writes it with one `pwrite` and one `fdatasync`, and only then calls the
//! callbacks (`LogFlushed`), in order: an acknowledged entry survives kill
//! -9 and power loss; appends queued while it syncs go into the next batch.
//! Each batch is padded to the next 4 KiB page boundary, so the next batch
//! never writes into a page that holds synced records (see `recovery`).
//! On a replica (see `LogStore::sync_inline_unless_leader`) an append
//! made while nothing is queued is written and synced the same way on the
//! calling thread instead, before `append` returns, unless it does not fit
//! in the active segment: rolling to the next one (waiting for the spare,
//! or zeroing 64 MiB) happens on the writer thread only.
//! (openraft 0.9's core still waits for each append's callback before it
//! goes on, so on every node the appends it makes are synced one after
//! the other; see `send_ahead` in `bulwark-db` for what the primary does
//! about that.) Each batch is announced to `AppendedEntries` once
//! written (`pwrite` done, before the sync), never before: `bulwark-db`
//! sends the primary's entries ahead from there. Truncate, vote and purge
//! go through the same queue and return once durable. After a failed write
//! or sync the writer fails everything (the page cache can no longer be
//! trusted) and openraft stops the node.
use super::index::{lock, Loc, Segment, Shared, RECENT};
use super::meta::{write_meta, Meta};
use super::record::{padding_for, put_padding, PAGE};
use super::segment::{create_segment, create_segment_as, seg_name, spare_name, sync_dir};
use bulwark_db_api::raft_types::{LogId, TypeConfig};
use openraft::storage::LogFlushed;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};

/// The name of the writer thread (segments are rolled only there).
pub(super) const WRITER_THREAD: &str = "raft-log-writer";

/// A failed write or sync of the log, handed to every caller it fails
/// (an `io::Error` cannot be cloned); it reads as the error itself.
#[derive(Debug, Clone)]
pub(super) struct WriteFailure(Arc<io::Error>);

impl std::fmt::Display for WriteFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for WriteFailure {}

/// Who is told when a write is durable.
pub(super) enum Done {
    /// openraft's callback for an append.
    Raft(LogFlushed<TypeConfig>),
    /// An async caller waiting (vote, truncate, purge).
    Wake(tokio::sync::oneshot::Sender<io::Result<()>>),
    /// A blocking caller waiting (the import).
    Block(mpsc::SyncSender<io::Result<()>>),
    /// Nobody (a later write's callback covers it).
    Nothing,
}

impl Done {
    pub(super) fn call(self, res: &Result<(), WriteFailure>) {
        let res = res.clone().map_err(io::Error::other);
        match self {
            Done::Raft(cb) => cb.log_io_completed(res),
            Done::Wake(tx) => {
                let _ = tx.send(res);
            }
            Done::Block(tx) => {
                let _ = tx.send(res);
            }
            Done::Nothing => {}
        }
    }
}

/// A record in a write, at `off` in its `data`.
pub(super) struct Rec {
    pub(super) kind: RecKind,
    pub(super) off: usize,
    pub(super) len: usize,
}

pub(super) enum RecKind {
    /// An entry and its append sequence number.
    Entry(LogId, u64),
    Truncate(u64),
}

pub(super) enum Op {
    /// Encoded records to append.
    Write { data: Vec<u8>, recs: Vec<Rec>, done: Done },
    /// Replace `meta`; then purge up to the index.
    Meta { meta: Meta, purge: Option<u64>, done: Done },
}

/// The writer thread's state.
pub(super) struct Writer {
    pub(super) dir: PathBuf,
    pub(super) seg_size: u64,
    pub(super) shared: Arc<Shared>,
    pub(super) seq: u64,
    pub(super) active: Arc<File>,
    pub(super) off: u64,
    pub(super) cap: u64,
    pub(super) buf: Vec<u8>,
    /// Set after a failed write or sync: everything fails from then on.
    pub(super) failed: Option<WriteFailure>,
    /// The next segment (`seq + 1`, `seg_size`), made as `<seq>.seg.spare`
    /// on a thread of its own once the active one is half full, renamed
    /// when it is needed.
    pub(super) spare: Option<std::thread::JoinHandle<io::Result<File>>>,
    pub(super) _lock: nix::fcntl::Flock<File>,
}

impl Drop for Writer {
    /// A spare still being made finishes before the log can be opened again.
    fn drop(&mut self) {
        if let Some(s) = self.spare.take() {
            let _ = s.join();
        }
    }
}

/// Turns a replica's inline syncs off for a while (see
/// [`LogStore::sync_inline_unless_leader`](super::LogStore::sync_inline_unless_leader)); cheap to share.
#[derive(Clone, Default)]
pub struct InlineSyncPause {
    /// Monotonic ms until which appends go to the writer thread (0: never).
    pub(super) until_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl InlineSyncPause {
    /// Send appends to the writer thread for the next `for_ms` ms.
    pub fn pause(&self, for_ms: u64) {
        self.until_ms.store(bulwark_telemetry::clock::monotonic_ms() + for_ms, std::sync::atomic::Ordering::Relaxed);
    }

    pub(super) fn in_effect(&self) -> bool {
        let until = self.until_ms.load(std::sync::atomic::Ordering::Relaxed);
        until != 0 && bulwark_telemetry::clock::monotonic_ms() < until
    }
}

/// The writer, shared by its thread and the appends a replica makes
/// inline (see [`LogStore::sync_inline_unless_leader`](super::LogStore::sync_inline_unless_leader)).
pub(super) struct WriterState {
    pub(super) writer: Mutex<Writer>,
    /// Operations sent to the thread and not finished yet: an inline write
    /// may only go when there are none, so the order of writes holds.
    pub(super) pending: std::sync::atomic::AtomicUsize,
}

/// The writer thread: takes everything queued into one write and sync.
pub(super) fn run_writer(state: Arc<WriterState>, rx: mpsc::Receiver<Op>) {
    use std::sync::atomic::Ordering::SeqCst;
    let mut next = None;
    loop {
        let op = match next.take() {
            Some(op) => op,
            None => match rx.recv() {
                Ok(op) => op,
                Err(_) => return,
            },
        };
        let mut writer = lock(&state.writer);
        match op {
            Op::Write { data, recs, done } => {
                let mut batch = vec![(data, recs, done)];
                loop {
                    match rx.try_recv() {
                        Ok(Op::Write { data, recs, done }) => batch.push((data, recs, done)),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let res = writer.write_batch(&batch);
                state.pending.fetch_sub(batch.len(), SeqCst);
                drop(writer);
                for (_, _, done) in batch {
                    done.call(&res);
                }
            }
            Op::Meta { meta, purge, done } => {
                let res = writer.check().and_then(|_| writer.meta(&meta, purge));
                let res = writer.fail_on(res);
                state.pending.fetch_sub(1, SeqCst);
                drop(writer);
                done.call(&res);
            }
        }
    }
}

impl Writer {
    /// Write and sync `batch`; the callbacks are the caller's to call.
    pub(super) fn write_batch(&mut self, batch: &[(Vec<u8>, Vec<Rec>, Done)]) -> Result<(), WriteFailure> {
        let res = self.check().and_then(|_| self.write(batch));
        self.fail_on(res)
    }

    pub(super) fn check(&self) -> io::Result<()> {
        match &self.failed {
            Some(e) => Err(io::Error::other(format!("the raft log failed earlier: {e}"))),
            None => Ok(()),
        }
    }

    pub(super) fn fail_on(&mut self, res: io::Result<()>) -> Result<(), WriteFailure> {
        res.map_err(|e| {
            let e = WriteFailure(Arc::new(e));
            if self.failed.is_none() {
                tracing::error!("raft log write failed: {e}");
                self.failed = Some(e.clone());
            }
            e
        })
    }

    /// Bytes a batch of `len` bytes of records takes, padding included.
    pub(super) fn padded(len: u64) -> u64 {
        len + padding_for(len)
    }

    /// Whether a batch of `len` bytes of records fits in the active
    /// segment (else writing it first rolls to the next segment).
    pub(super) fn fits(&self, len: u64) -> bool {
        self.off + Writer::padded(len) <= self.cap
    }

    /// Write a batch with one `pwrite` and one `fdatasync`, padded to the
    /// next page boundary.
    pub(super) fn write(&mut self, batch: &[(Vec<u8>, Vec<Rec>, Done)]) -> io::Result<()> {
        let total: u64 = batch.iter().map(|b| b.0.len() as u64).sum();
        if !self.fits(total) {
            self.roll(Writer::padded(total))?;
        }
        self.buf.clear();
        let mut locs = lock(&self.shared.locs);
        let mut max = None;
        for (data, recs, _) in batch {
            let base = self.off + self.buf.len() as u64;
            for r in recs {
                match r.kind {
                    RecKind::Entry(log_id, _) => {
                        let off = base + r.off as u64;
                        locs.push(Loc { log_id, seg: self.seq, off, len: r.len as u32 });
                        max = max.max(Some(log_id.index));
                    }
                    RecKind::Truncate(index) => locs.truncate(index),
                }
            }
            self.buf.extend_from_slice(data);
        }
        let last = locs.v.back().map(|l| l.log_id);
        drop(locs);
        put_padding(&mut self.buf, padding_for(total))?;
        if let Some(seg) = lock(&self.shared.segs).get_mut(&self.seq) {
            seg.max = seg.max.max(max);
        }
        self.active.write_all_at(&self.buf, self.off)?;
        self.off += self.buf.len() as u64;
        // Written (the page cache has it: it survives kill -9): readable
        // from the files and sendable ahead; durable after the sync.
        self.written(batch, last);
        #[cfg(any(test, feature = "test-hooks"))]
        crate::test_hooks::before_sync(&self.dir);
        let synced = self.active.sync_data();
        if self.spare.is_none() && self.off > self.cap / 2 {
            let (dir, seq, size) = (self.dir.clone(), self.seq + 1, self.seg_size);
            self.spare = Some(
                std::thread::Builder::new()
                    .name("raft-log-spare".into())
                    .spawn(move || create_segment_as(&dir, &spare_name(seq), size))?,
            );
        }
        synced
    }

    /// Mark the batch's entries written, forget old written ones, and
    /// announce `last`, the log's last id as written now.
    pub(super) fn written(&self, batch: &[(Vec<u8>, Vec<Rec>, Done)], last: Option<LogId>) {
        let mut recent = lock(&self.shared.recent);
        for r in batch.iter().flat_map(|b| &b.1) {
            if let RecKind::Entry(log_id, seq) = r.kind {
                if let Some(e) = recent.entries.get_mut(&log_id.index).filter(|e| e.0 == seq) {
                    e.1 = true;
                }
            }
        }
        while recent.entries.len() > RECENT && recent.entries.first_key_value().is_some_and(|(_, e)| e.1) {
            recent.entries.pop_first();
        }
        drop(recent);
        self.shared.written.send_replace(last);
    }

    /// Start the next segment, with room for at least `need` bytes. Only
    /// on the writer thread: waiting for the spare or zeroing a segment
    /// takes far longer than an append (see
    /// [`LogStore::sync_inline_unless_leader`](super::LogStore::sync_inline_unless_leader)).
    pub(super) fn roll(&mut self, need: u64) -> io::Result<()> {
        debug_assert_eq!(std::thread::current().name(), Some(WRITER_THREAD), "a segment rolled off the writer thread");
        let seq = self.seq + 1;
        let cap = self.seg_size.max(PAGE + need);
        let spare = match self.spare.take() {
            Some(s) => Some(s.join().map_err(|_| io::Error::other("the thread making a spare segment panicked"))??),
            None => None,
        };
        let f = match spare {
            Some(f) if cap <= self.seg_size => {
                std::fs::rename(self.dir.join(spare_name(seq)), self.dir.join(seg_name(seq)))?;
                sync_dir(&self.dir)?;
                f
            }
            other => {
                if other.is_some() {
                    std::fs::remove_file(self.dir.join(spare_name(seq)))?;
                }
                create_segment(&self.dir, seq, cap)?
            }
        };
        let f = Arc::new(f);
        lock(&self.shared.segs).insert(seq, Segment { file: f.clone(), max: None });
        (self.seq, self.active, self.off, self.cap) = (seq, f, PAGE, cap);
        Ok(())
    }

    pub(super) fn meta(&mut self, meta: &Meta, purge: Option<u64>) -> io::Result<()> {
        write_meta(&self.dir, meta)?;
        let Some(p) = purge else { return Ok(()) };
        lock(&self.shared.locs).purge(p);
        // Delete the oldest segments whose entries are all purged.
        let gone: Vec<u64> = {
            let mut segs = lock(&self.shared.segs);
            let mut max = None;
            let mut gone = Vec::new();
            for (&seq, seg) in segs.iter() {
                max = max.max(seg.max);
                if seq == self.seq || max.is_some_and(|m| m > p) {
                    break;
                }
                gone.push(seq);
            }
            for seq in &gone {
                segs.remove(seq);
            }
            gone
        };
        for seq in &gone {
            std::fs::remove_file(self.dir.join(seg_name(*seq)))?;
        }
        if !gone.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}
