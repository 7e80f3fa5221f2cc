//! The durable Raft log (the "binary log"): the directory `raft-log/` in the
//! data dir. It holds the entries, the vote and the last purged log id.
//!
//! # On disk
//!
//! - `LOCK`: held with `flock` while the log is open (one process per log).
//! - `meta`: `{"vote": …, "purged": …}` (JSON), replaced atomically (write
//!   `meta.tmp`, fsync, rename, fsync the directory). Written only by
//!   `save_vote` (elections) and `purge` (after a snapshot).
//! - `<seq>.seg` (20 digits): append-only segments. A 16-byte header
//!   (`BWRAFTLG`, version) alone in the first 4 KiB page, then records
//!   from offset 4096 on:
//!   `len: u32 LE | crc32: u32 LE | kind: u8 | index: u64 LE | body`, the
//!   CRC over `len` and everything after it. An entry (kind 1) has the term
//!   and node id of its log id (u64 LE each) and the entry as JSON (the
//!   encoding of the old SQLite log); a truncate (kind 2) has no body and
//!   removes the entries from `index` on; a padding record (kind 3, zeros)
//!   ends each written batch on a page boundary. Replaying the records in
//!   order rebuilds the log: an entry whose index is not past the last one
//!   replaces it and everything after it. (Version 1 segments, records
//!   back to back from offset 16 without padding, are still read.)
//!
//! A new segment is written out with zeros (64 MiB, 4 MiB for the one a
//! log starts in, or the batch if larger) and synced with its directory
//! entry before the first write to it, so a write into it changes neither
//! the file size nor the block allocation and `fdatasync` writes only the
//! data: p50 99 us for a 2.4 KB append here, against 133-154 us into
//! `posix_fallocate`d space (ext4 must convert those "unwritten" blocks on
//! the first write, a metadata update) or a growing file. Once the active
//! segment is half full the next one is made as `<seq>.seg.spare` on a
//! thread of its own and renamed when needed, so the writer does not wait
//! for the zeros; a spare left over is deleted on open. The bytes after
//! the last record read as zeros, which end the replay. Every open starts a new segment (writes never resume after a
//! point recovery stopped at) and cuts the previous last one at its last
//! good record. A purge deletes the oldest segments whose entries are all
//! purged (only a prefix, so a truncate record is never lost while an entry
//! it removed is still on disk).
//!
//! # Durability and group commit
//!
//! [`LogStore::append`] encodes the entries, keeps them decoded in memory
//! (readable at once, as openraft requires) and queues them to the writer
//! thread, then returns. The writer takes everything queued (no waiting),
//! writes it with one `pwrite` and one `fdatasync`, and only then calls the
//! callbacks (`LogFlushed`), in order: an acknowledged entry survives kill
//! -9 and power loss; appends queued while it syncs go into the next batch.
//! Each batch is padded to the next 4 KiB page boundary, so the next batch
//! never writes into a page that holds synced records (see Recovery).
//! On a replica (see [`LogStore::sync_inline_unless_leader`]) an append
//! made while nothing is queued is written and synced the same way on the
//! calling thread instead, before `append` returns, unless it does not fit
//! in the active segment: rolling to the next one (waiting for the spare,
//! or zeroing 64 MiB) happens on the writer thread only.
//! (openraft 0.9's core still waits for each append's callback before it
//! goes on, so on every node the appends it makes are synced one after
//! the other; see `transport`'s `send_ahead` for what the primary does
//! about that.) Each batch is announced to [`AppendedEntries`] once
//! written (`pwrite` done, before the sync), never before: `transport`
//! sends the primary's entries ahead from there. Truncate, vote and purge
//! go through the same queue and return once durable. After a failed write
//! or sync the writer fails everything (the page cache can no longer be
//! trusted) and openraft stops the node.
//!
//! # Recovery
//!
//! In the last segment, a record cut short, a checksum mismatch or a bad
//! length ends the log there (a write torn by kill -9 or a power loss; it
//! was never acknowledged): the segment is cut at the last good record and
//! the node goes on. The same in an older segment is corruption of
//! acknowledged data, and the open fails. (Damage inside the last segment,
//! i.e. in what was written since the last start, cannot be told from a
//! torn write: it is cut off too, with a warning in the log.)
//!
//! Cutting at the first bad record is right only if a torn write can damage
//! nothing but the batch being written. A power loss can tear a whole 4
//! KiB page (the unit the page cache writes back, not necessarily atomic
//! on the device), and before version 2 the next batch's `pwrite` started
//! inside the page that held the end of the last synced batch: a tear
//! there destroyed acknowledged records, and recovery cut them off as if
//! they had been the torn tail. So every batch now ends on a page boundary
//! (padding record) and a segment's records start after its header's page:
//! no write ever touches a page holding synced records, and a bad record is
//! always in the batch that was not acknowledged. The other way, treating
//! a bad record followed by good ones as corruption, does not catch this
//! case: the pages of the torn batch after the damage may never have
//! reached the disk, so nothing good follows. Cost: up to 4 KiB more per
//! batch on disk (the segment fills sooner; the pages written per sync
//! are the same, as the kernel writes whole pages), no extra write.
//!
//! # Restart inside a term
//!
//! A vote that this node saved for itself, committed (it was primary), is
//! handed to openraft as not committed when the log is opened. openraft
//! 0.9 would otherwise make the node leader again at once in the same
//! term (`Engine::startup`), and its next entry would get a log id that an
//! entry it sent ahead before it stopped may already have on a replica,
//! with other content; the replica would take the two for the same entry.
//! With the vote not committed the node starts as a follower; its
//! election timer makes it campaign in term + 1 (`Engine::elect` takes the
//! saved term + 1), and a vote response carrying its old committed vote is
//! taken as not committed too (`Engine::handle_vote_resp`), so it appends
//! nothing before it wins a new term, whose first entry (a blank one)
//! replaces any conflicting entry on the replicas. Votes for other nodes
//! keep their committed flag (a restarted follower keeps refusing votes
//! for a leader lease, as before).
//!
//! # Memory
//!
//! The entries not yet written and the newest [`RECENT`] written ones are
//! kept decoded, so replication of followers that keep up reads them
//! without a thread or the file; older ones are read (`pread`) on a
//! blocking thread through an in-memory index (index -> segment, offset),
//! ~48 bytes per entry in the log.
//!
//! # Why hand-written
//!
//! The crates first. `raft-log` (by openraft's author, the log of
//! Databend's meta service) is correct (sync before the callback, group
//! commit, CRC, torn tail, chunked purge) and was tried here first, but it
//! appends with `O_APPEND` to growing files, so every `fdatasync` also
//! commits the file size (an ext4 journal commit), it group-commits with a
//! waiting window, and it cannot preallocate: with it a 3-node cluster did
//! ~2800 writes/s where the SQLite log it was to replace did ~4000 (openraft
//! 0.9 replicates one AppendEntries at a time, so a follower's sync latency
//! is part of every round). This log does ~4400 (both measured before the
//! primary's group commit; with it, this log and the SQLite one measured
//! the same within noise, ~9000, and this one uses less CPU). `raft-wal` (the other
//! candidate, with an openraft feature) is not in the registry this project
//! builds from.
//!
//! # The old format
//!
//! Before, the log was a SQLite file `raft-log.db`. When it exists and
//! `raft-log/` does not, its vote, purged id and entries are copied into a
//! new log built in `raft-log.importing/`, synced, and that directory is
//! renamed to `raft-log/` (the commit point: a crash before it imports
//! again). The old file is then renamed `raft-log.db.imported`.
use crate::raft_types::{storage_err, Entry, LogId, NodeId, StorageError, TypeConfig, Vote};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{ErrorVerb, LogState, RaftLogReader};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::ops::{Bound, RangeBounds};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// The log's directory in the data dir.
const DIR: &str = "raft-log";
/// Where an import from the old format is built before it is renamed.
const IMPORTING: &str = "raft-log.importing";
/// The old format's file.
const OLD: &str = "raft-log.db";
const META: &str = "meta";
const META_TMP: &str = "meta.tmp";
const LOCK: &str = "LOCK";

/// Written entries kept decoded in memory.
const RECENT: usize = 4096;
/// Preallocated size of a segment.
const SEGMENT: u64 = 64 << 20;
const MAGIC: &[u8; 8] = b"BWRAFTLG";
/// Written in new segments: batches start on a page boundary (see the
/// module doc). Version 1 segments (records back to back from the header
/// on) are still read.
const VERSION: u32 = 2;
const VERSION_UNALIGNED: u32 = 1;
/// Segment header: magic, version, reserved.
const HEADER: u64 = 16;
/// The unit a power loss may tear: each synced batch ends on a multiple of
/// it, and a version 2 segment's first record starts at it (the header's
/// page is never written again).
const PAGE: u64 = 4096;
/// Record header: length, crc.
const REC_HEADER: usize = 8;
/// Largest record accepted on replay (a larger length is damage).
const MAX_RECORD: u32 = 1 << 30;
const KIND_ENTRY: u8 = 1;
const KIND_TRUNCATE: u8 = 2;
/// Fills a batch up to the next page boundary; replay skips it.
const KIND_PADDING: u8 = 3;
/// The smallest record: header, kind, index.
const MIN_RECORD: u64 = REC_HEADER as u64 + 1 + 8;
/// The name of the writer thread (segments are rolled only there).
const WRITER_THREAD: &str = "raft-log-writer";
/// kind, index, term, node id.
const ENTRY_HEAD: usize = 1 + 8 + 8 + 8;

fn seg_name(seq: u64) -> String {
    format!("{seq:020}.seg")
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The vote and the purge point, in `meta`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Meta {
    vote: Option<Vote>,
    purged: Option<LogId>,
}

fn read_meta(dir: &Path) -> io::Result<Meta> {
    match std::fs::read(dir.join(META)) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| invalid(format!("{}: {e}", dir.join(META).display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Meta::default()),
        Err(e) => Err(e),
    }
}

fn write_meta(dir: &Path, meta: &Meta) -> io::Result<()> {
    let tmp = dir.join(META_TMP);
    let mut f = File::create(&tmp)?;
    io::Write::write_all(&mut f, &serde_json::to_vec(meta).map_err(io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(META))?;
    sync_dir(dir)
}

/// Where an entry is on disk.
#[derive(Debug, Clone, Copy)]
struct Loc {
    log_id: LogId,
    seg: u64,
    /// Offset of the record (its header) in the segment.
    off: u64,
    /// Whole record, header included.
    len: u32,
}

/// The on-disk index: the entries in the files, contiguous from `first`.
#[derive(Default)]
struct Locs {
    first: u64,
    v: VecDeque<Loc>,
}

impl Locs {
    fn end(&self) -> u64 {
        self.first + self.v.len() as u64
    }

    fn get(&self, index: u64) -> Option<&Loc> {
        index.checked_sub(self.first).and_then(|i| self.v.get(i as usize))
    }

    /// An entry record: it replaces the entry at its index and all after.
    fn push(&mut self, loc: Loc) {
        let i = loc.log_id.index;
        if self.v.is_empty() || i < self.first || i > self.end() {
            // A first entry, or one after a purge past the end.
            self.v.clear();
            self.first = i;
        } else if i < self.end() {
            self.v.truncate((i - self.first) as usize);
        }
        self.v.push_back(loc);
    }

    /// Remove the entries from `index` on.
    fn truncate(&mut self, index: u64) {
        if index <= self.first {
            self.v.clear();
        } else {
            self.v.truncate((index - self.first) as usize);
        }
    }

    /// Remove the entries up to `index`.
    fn purge(&mut self, index: u64) {
        while self.v.front().is_some_and(|l| l.log_id.index <= index) {
            self.v.pop_front();
            self.first += 1;
        }
    }
}

struct Segment {
    file: Arc<File>,
    /// Highest entry index ever written to it.
    max: Option<u64>,
}

/// The newest entries, decoded: every entry handed to `append` that the
/// writer has not written yet, plus the last [`RECENT`] written ones.
#[derive(Default)]
struct Recent {
    /// index -> (append sequence number, written, entry). A contiguous
    /// suffix of the log.
    entries: BTreeMap<u64, (u64, bool, Arc<Entry>)>,
}

struct Shared {
    locs: Mutex<Locs>,
    segs: Mutex<BTreeMap<u64, Segment>>,
    recent: Mutex<Recent>,
    /// The last log id of the log as the writer has written it (`pwrite`
    /// done, not necessarily synced yet).
    written: tokio::sync::watch::Sender<Option<LogId>>,
    /// See [`AppendedEntries::bytes`].
    appended_bytes: std::sync::atomic::AtomicU64,
}

/// The entries this node appends, as the writer writes them: readable
/// once written to the file (before they are synced), for replication that
/// sends a primary's new entries ahead of openraft's own append-entries
/// (see `transport`). Never an entry merely handed to `append`: one that
/// only another node has would be lost with this process, and a restart
/// could append different content under the same log id.
#[derive(Clone)]
pub struct AppendedEntries {
    shared: Arc<Shared>,
}

impl AppendedEntries {
    /// The last log id written, changed after every write (appends and
    /// truncates).
    pub fn watch_written(&self) -> tokio::sync::watch::Receiver<Option<LogId>> {
        self.shared.written.subscribe()
    }

    /// Bytes of the entries in the log (records as written to the
    /// segments): those found after the purge point when the log was
    /// opened, plus every one appended since (a count that only grows).
    pub fn bytes(&self) -> u64 {
        self.shared.appended_bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Up to `max` written entries right after index `prev` that are
    /// still in memory (in order, without gaps; empty when the one after
    /// `prev` is not, or is not written yet).
    pub fn after(&self, prev: u64, max: usize) -> Vec<Entry> {
        let recent = lock(&self.shared.recent);
        let mut out = Vec::new();
        for (i, e) in recent.entries.range(prev.saturating_add(1)..) {
            if out.len() == max || *i != prev + 1 + out.len() as u64 || !e.1 {
                break;
            }
            out.push((*e.2).clone());
        }
        out
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Who is told when a write is durable.
enum Done {
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
    fn call(self, res: &Result<(), String>) {
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
struct Rec {
    kind: RecKind,
    off: usize,
    len: usize,
}

enum RecKind {
    /// An entry and its append sequence number.
    Entry(LogId, u64),
    Truncate(u64),
}

enum Op {
    /// Encoded records to append.
    Write { data: Vec<u8>, recs: Vec<Rec>, done: Done },
    /// Replace `meta`; then purge up to the index.
    Meta { meta: Meta, purge: Option<u64>, done: Done },
}

/// Append a record (header filled in) to `buf`; returns its offset and length.
fn put_record(
    buf: &mut Vec<u8>,
    kind: u8,
    index: u64,
    body: impl FnOnce(&mut Vec<u8>) -> io::Result<()>,
) -> io::Result<(usize, usize)> {
    let start = buf.len();
    buf.extend_from_slice(&[0; REC_HEADER]);
    buf.push(kind);
    buf.extend_from_slice(&index.to_le_bytes());
    if let Err(e) = body(buf) {
        buf.truncate(start);
        return Err(e);
    }
    let len = buf.len() - start - REC_HEADER;
    let len32 =
        u32::try_from(len).ok().filter(|l| *l <= MAX_RECORD).ok_or_else(|| io::Error::other("log entry over 1 GiB"))?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len32.to_le_bytes());
    crc.update(&buf[start + REC_HEADER..]);
    buf[start..start + 4].copy_from_slice(&len32.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.finalize().to_le_bytes());
    Ok((start, len + REC_HEADER))
}

/// Bytes of the padding record that makes `len` bytes written at a page
/// boundary end on one (0 when they already do; never shorter than a
/// record, so at times one page more).
fn padding_for(len: u64) -> u64 {
    match (PAGE - len % PAGE) % PAGE {
        0 => 0,
        pad if pad < MIN_RECORD => pad + PAGE,
        pad => pad,
    }
}

/// Append a padding record of `pad` bytes (from [`padding_for`]) to `buf`.
fn put_padding(buf: &mut Vec<u8>, pad: u64) -> io::Result<()> {
    if pad == 0 {
        return Ok(());
    }
    let body = (pad - MIN_RECORD) as usize;
    put_record(buf, KIND_PADDING, 0, |b| {
        b.resize(b.len() + body, 0);
        Ok(())
    })
    .map(|_| ())
}

fn put_entry(buf: &mut Vec<u8>, e: &Entry) -> io::Result<(usize, usize)> {
    put_record(buf, KIND_ENTRY, e.log_id.index, |b| {
        b.extend_from_slice(&e.log_id.leader_id.term.to_le_bytes());
        b.extend_from_slice(&e.log_id.leader_id.node_id.to_le_bytes());
        serde_json::to_writer(b, e).map_err(io::Error::other)
    })
}

/// Check a whole record (header included) and return its payload.
fn check_record(rec: &[u8]) -> Option<&[u8]> {
    let len = u32::from_le_bytes(rec.get(0..4)?.try_into().ok()?);
    let crc = u32::from_le_bytes(rec.get(4..8)?.try_into().ok()?);
    let payload = rec.get(REC_HEADER..REC_HEADER + len as usize)?;
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(payload);
    (h.finalize() == crc && !payload.is_empty()).then_some(payload)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn read_entry(file: &File, loc: &Loc) -> io::Result<Entry> {
    let mut rec = vec![0; loc.len as usize];
    file.read_exact_at(&mut rec, loc.off)?;
    let p = check_record(&rec)
        .filter(|p| p.len() >= ENTRY_HEAD && p[0] == KIND_ENTRY)
        .ok_or_else(|| invalid(format!("raft log segment {}: damaged record at offset {}", loc.seg, loc.off)))?;
    serde_json::from_slice(&p[ENTRY_HEAD..]).map_err(|e| invalid(format!("raft log entry {}: {e}", loc.log_id)))
}

/// Read as much of `buf` as the file has; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Replay one segment into `locs`. Returns the end of its last good record
/// and its highest entry index, or `None` when its header is incomplete (a
/// crash while it was created). In the last segment a bad record ends it;
/// in another one it is an error.
fn replay(file: &File, seq: u64, locs: &mut Locs, last: bool) -> io::Result<Option<(u64, Option<u64>)>> {
    let mut r = io::BufReader::with_capacity(1 << 20, file);
    let mut head = [0; HEADER as usize];
    let n = read_full(&mut r, &mut head)?;
    if n < head.len() || &head[..8] != MAGIC {
        // A crash while the last segment was created: nothing was in it.
        if last && head[..n].iter().all(|b| *b == 0) {
            return Ok(None);
        }
        return Err(invalid(format!("raft log segment {seq}: bad header")));
    }
    let mut off = match u32::from_le_bytes(head[8..12].try_into().expect("4 bytes")) {
        VERSION => {
            io::Seek::seek(&mut r, io::SeekFrom::Start(PAGE))?;
            PAGE
        }
        VERSION_UNALIGNED => HEADER,
        _ => return Err(invalid(format!("raft log segment {seq}: unknown version"))),
    };
    let mut max = None;
    let mut rec = Vec::new();
    let bad = loop {
        rec.resize(REC_HEADER, 0);
        match read_full(&mut r, &mut rec)? {
            0 => break None,
            REC_HEADER => {}
            _ => break Some("a cut record header"),
        }
        let len = u32::from_le_bytes(rec[0..4].try_into().expect("4 bytes"));
        if len == 0 && rec[4..8] == [0; 4] {
            // The preallocated rest of the segment.
            break None;
        }
        if !(9..=MAX_RECORD).contains(&len) {
            break Some("a bad record length");
        }
        rec.resize(REC_HEADER + len as usize, 0);
        if read_full(&mut r, &mut rec[REC_HEADER..])? < len as usize {
            break Some("a cut record");
        }
        let Some(p) = check_record(&rec) else { break Some("a checksum mismatch") };
        let index = u64_at(p, 1);
        match p[0] {
            KIND_ENTRY if p.len() >= ENTRY_HEAD => {
                let log_id = LogId::new(openraft::CommittedLeaderId::new(u64_at(p, 9), u64_at(p, 17)), index);
                locs.push(Loc { log_id, seg: seq, off, len: rec.len() as u32 });
                max = max.max(Some(index));
            }
            KIND_TRUNCATE => locs.truncate(index),
            KIND_PADDING => {}
            _ => break Some("an unknown record"),
        }
        off += rec.len() as u64;
    };
    if let Some(what) = bad {
        if !last {
            return Err(invalid(format!("raft log segment {seq}: {what} at offset {off}")));
        }
        tracing::warn!(segment = seq, offset = off, "raft log: {what} at the end of the log (a torn write): cut off");
    }
    Ok(Some((off, max)))
}

/// Create segment `seq` with room for `size` bytes, durable with its name.
fn create_segment(dir: &Path, seq: u64, size: u64) -> io::Result<File> {
    create_segment_as(dir, &seg_name(seq), size)
}

/// The name a spare segment has until it is used (then renamed).
fn spare_name(seq: u64) -> String {
    format!("{}.spare", seg_name(seq))
}

fn create_segment_as(dir: &Path, name: &str, size: u64) -> io::Result<File> {
    let f = OpenOptions::new().read(true).write(true).create_new(true).open(dir.join(name))?;
    // Zeros written, not `posix_fallocate`d: ext4 marks fallocated blocks
    // unwritten, and the first write into each must convert them, a
    // metadata update that every `fdatasync` then has to write too.
    // Measured here, 2.4 KB appends + fdatasync: p50 99 us into written
    // zeros, 133-154 us into fallocated space (the same as a growing file).
    let zeros = vec![0u8; (1 << 20).min(size as usize)];
    let mut at = 0;
    while at < size {
        let n = zeros.len().min((size - at) as usize);
        f.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    let mut head = [0; HEADER as usize];
    head[..8].copy_from_slice(MAGIC);
    head[8..12].copy_from_slice(&VERSION.to_le_bytes());
    f.write_all_at(&head, 0)?;
    f.sync_all()?;
    sync_dir(dir)?;
    Ok(f)
}

/// Size of the segment a log starts writing in when it opens: small, as
/// zeroing it delays the start; later ones are made ahead, off the writer.
const FIRST_SEGMENT: u64 = 4 << 20;

/// The writer thread's state.
struct Writer {
    dir: PathBuf,
    seg_size: u64,
    shared: Arc<Shared>,
    seq: u64,
    active: Arc<File>,
    off: u64,
    cap: u64,
    buf: Vec<u8>,
    /// Set after a failed write or sync: everything fails from then on.
    failed: Option<String>,
    /// The next segment (`seq + 1`, `seg_size`), made as `<seq>.seg.spare`
    /// on a thread of its own once the active one is half full, renamed
    /// when it is needed.
    spare: Option<std::thread::JoinHandle<io::Result<File>>>,
    _lock: nix::fcntl::Flock<File>,
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
/// [`LogStore::sync_inline_unless_leader`]); cheap to share.
#[derive(Clone, Default)]
pub struct InlineSyncPause {
    /// Unix ms until which appends go to the writer thread.
    until_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl InlineSyncPause {
    /// Send appends to the writer thread for the next `for_ms` ms.
    pub fn pause(&self, for_ms: u64) {
        self.until_ms.store(crate::raft_types::now_ms() + for_ms, std::sync::atomic::Ordering::Relaxed);
    }

    fn in_effect(&self) -> bool {
        let until = self.until_ms.load(std::sync::atomic::Ordering::Relaxed);
        until != 0 && crate::raft_types::now_ms() < until
    }
}

/// The writer, shared by its thread and the appends a replica makes
/// inline (see [`LogStore::sync_inline_unless_leader`]).
struct WriterState {
    writer: Mutex<Writer>,
    /// Operations sent to the thread and not finished yet: an inline write
    /// may only go when there are none, so the order of writes holds.
    pending: std::sync::atomic::AtomicUsize,
}

/// The writer thread: takes everything queued into one write and sync.
fn run_writer(state: Arc<WriterState>, rx: mpsc::Receiver<Op>) {
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
    fn write_batch(&mut self, batch: &[(Vec<u8>, Vec<Rec>, Done)]) -> Result<(), String> {
        let res = self.check().and_then(|_| self.write(batch));
        self.fail_on(res)
    }

    fn check(&self) -> io::Result<()> {
        match &self.failed {
            Some(e) => Err(io::Error::other(format!("the raft log failed earlier: {e}"))),
            None => Ok(()),
        }
    }

    fn fail_on(&mut self, res: io::Result<()>) -> Result<(), String> {
        res.map_err(|e| {
            let e = e.to_string();
            if self.failed.is_none() {
                tracing::error!("raft log write failed: {e}");
                self.failed = Some(e.clone());
            }
            e
        })
    }

    /// Bytes a batch of `len` bytes of records takes, padding included.
    fn padded(len: u64) -> u64 {
        len + padding_for(len)
    }

    /// Whether a batch of `len` bytes of records fits in the active
    /// segment (else writing it first rolls to the next segment).
    fn fits(&self, len: u64) -> bool {
        self.off + Writer::padded(len) <= self.cap
    }

    /// Write a batch with one `pwrite` and one `fdatasync`, padded to the
    /// next page boundary.
    fn write(&mut self, batch: &[(Vec<u8>, Vec<Rec>, Done)]) -> io::Result<()> {
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
        #[cfg(test)]
        tests::before_sync(&self.dir);
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
    fn written(&self, batch: &[(Vec<u8>, Vec<Rec>, Done)], last: Option<LogId>) {
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
    /// [`LogStore::sync_inline_unless_leader`]).
    fn roll(&mut self, need: u64) -> io::Result<()> {
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

    fn meta(&mut self, meta: &Meta, purge: Option<u64>) -> io::Result<()> {
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

/// What the log holds, as seen by openraft (ahead of the writer).
#[derive(Debug, Default, Clone)]
struct State {
    vote: Option<Vote>,
    purged: Option<LogId>,
    last: Option<LogId>,
}

/// The Raft log store, owned by openraft's core.
pub struct LogStore {
    shared: Arc<Shared>,
    queue: Option<mpsc::Sender<Op>>,
    writer: Option<JoinHandle<()>>,
    writer_state: Arc<WriterState>,
    /// This node's id, when appends made while another node leads are
    /// written and synced on the calling thread, unless paused.
    inline_unless_leader: Option<(u64, InlineSyncPause)>,
    state: State,
    /// Append sequence number (tells a re-appended index from the old one).
    seq: u64,
}

/// A handle to read the log, handed to replication tasks.
#[derive(Clone)]
pub struct LogReader {
    shared: Arc<Shared>,
}

impl Drop for LogStore {
    /// Let the writer finish what is queued and close the files.
    fn drop(&mut self) {
        self.queue.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl LogStore {
    /// Open (or create) the log of node `me` in `dir`, importing an old
    /// `raft-log.db`. A saved vote of `me` for itself is handed to openraft
    /// as not committed (see "Restart inside a term" in the module doc).
    pub fn open(dir: &Path, me: NodeId) -> io::Result<LogStore> {
        LogStore::open_with(dir, SEGMENT, me)
    }

    fn open_with(dir: &Path, seg_size: u64, me: NodeId) -> io::Result<LogStore> {
        let path = dir.join(DIR);
        let old = dir.join(OLD);
        if !path.exists() {
            if old.exists() {
                import(&old, dir, seg_size)?;
            } else {
                std::fs::create_dir_all(&path)?;
                sync_dir(dir)?;
            }
        }
        if old.exists() {
            retire_old(dir)?;
        }
        LogStore::open_dir(&path, seg_size, Some(me))
    }

    /// Open the log directory `path` (which exists) of node `me` (`None`:
    /// the votes are kept as they are, for an import).
    fn open_dir(path: &Path, seg_size: u64, me: Option<NodeId>) -> io::Result<LogStore> {
        let lock_file = OpenOptions::new().create(true).truncate(false).write(true).open(path.join(LOCK))?;
        let lock =
            nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
                io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("{} is in use by another process: {e}", path.display()),
                )
            })?;
        let _ = std::fs::remove_file(path.join(META_TMP));
        // A spare segment made ahead of time was never written to.
        for e in std::fs::read_dir(path)? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "spare") {
                std::fs::remove_file(p)?;
            }
        }
        let meta = read_meta(path)?;
        let mut seqs = Vec::new();
        for e in std::fs::read_dir(path)? {
            let name = e?.file_name();
            if let Some(seq) = name.to_str().and_then(|n| n.strip_suffix(".seg")).and_then(|n| n.parse::<u64>().ok()) {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        let mut locs = Locs::default();
        let mut segs = BTreeMap::new();
        for (k, &seq) in seqs.iter().enumerate() {
            let last = k + 1 == seqs.len();
            let file = OpenOptions::new().read(true).write(true).open(path.join(seg_name(seq)))?;
            match replay(&file, seq, &mut locs, last)? {
                Some((end, max)) => {
                    if last && file.metadata()?.len() > end {
                        // Writes go on in a new segment; this one ends at its
                        // last good record.
                        file.set_len(end)?;
                        file.sync_all()?;
                    }
                    segs.insert(seq, Segment { file: Arc::new(file), max });
                }
                None => {
                    drop(file);
                    std::fs::remove_file(path.join(seg_name(seq)))?;
                }
            }
        }
        if let Some(p) = meta.purged {
            locs.purge(p.index);
        }
        let last = locs.v.back().map(|l| l.log_id).max(meta.purged);
        let log_bytes: u64 = locs.v.iter().map(|l| u64::from(l.len)).sum();
        // The newest entries, decoded.
        let mut recent = Recent::default();
        for loc in locs.v.iter().rev().take(RECENT) {
            let e = read_entry(&segs[&loc.seg].file, loc)?;
            recent.entries.insert(loc.log_id.index, (0, true, Arc::new(e)));
        }
        let seq = seqs.last().map_or(1, |s| s + 1);
        let first = FIRST_SEGMENT.min(seg_size);
        let active = Arc::new(create_segment(path, seq, first)?);
        segs.insert(seq, Segment { file: active.clone(), max: None });
        let shared = Arc::new(Shared {
            locs: Mutex::new(locs),
            segs: Mutex::new(segs),
            recent: Mutex::new(recent),
            written: tokio::sync::watch::Sender::new(last),
            appended_bytes: std::sync::atomic::AtomicU64::new(log_bytes),
        });
        let writer = Writer {
            dir: path.to_path_buf(),
            seg_size,
            shared: shared.clone(),
            seq,
            active,
            off: PAGE,
            cap: first,
            buf: Vec::new(),
            failed: None,
            spare: None,
            _lock: lock,
        };
        let (queue, rx) = mpsc::channel();
        let writer_state =
            Arc::new(WriterState { writer: Mutex::new(writer), pending: std::sync::atomic::AtomicUsize::new(0) });
        let thread_state = writer_state.clone();
        let writer =
            std::thread::Builder::new().name(WRITER_THREAD.into()).spawn(move || run_writer(thread_state, rx))?;
        let vote = meta.vote.map(|v| match me {
            Some(me) => never_resume_leadership(v, me),
            None => v,
        });
        let state = State { vote, purged: meta.purged, last };
        Ok(LogStore {
            shared,
            queue: Some(queue),
            writer: Some(writer),
            writer_state,
            inline_unless_leader: None,
            state,
            seq: 0,
        })
    }

    /// New entries as they are appended (see [`AppendedEntries`]).
    pub fn appended_entries(&self) -> AppendedEntries {
        AppendedEntries { shared: self.shared.clone() }
    }

    /// True when nothing was ever written (no vote, no entry): a brand-new node.
    pub fn is_empty(&self) -> io::Result<bool> {
        Ok(self.state.vote.is_none() && self.state.last.is_none())
    }

    /// On a replica (another node leads: the vote names it), write and sync
    /// appends on the calling thread, the runtime's, when nothing is queued
    /// to the writer thread and `pause` is not in effect. openraft's core
    /// waits for each append to be synced anyway, and the hand-over to the
    /// thread and back cost two context switches per append. Measured with
    /// 16 clients (3 nodes, bench/db.sh, 3 rounds): 11,216 writes/s = 1.16x
    /// MariaDB semi-sync, against 9,014 = 0.96x. But the runtime serves
    /// nothing while it syncs: reads on that replica during the same load
    /// took p50 0.65-0.75 ms instead of 0.36 ms, so the node pauses this
    /// while it serves reads. The primary keeps the thread: it handles
    /// client requests and replication meanwhile.
    pub fn sync_inline_unless_leader(&mut self, me: u64, pause: InlineSyncPause) {
        self.inline_unless_leader = Some((me, pause));
    }

    fn send(&self, op: Op) -> io::Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        self.writer_state.pending.fetch_add(1, SeqCst);
        let sent = self.queue.as_ref().and_then(|q| q.send(op).ok());
        if sent.is_none() {
            self.writer_state.pending.fetch_sub(1, SeqCst);
        }
        sent.ok_or_else(|| io::Error::other("the raft log writer stopped"))
    }

    /// Queue `entries` for the writer, which reports to `done` once they
    /// are durable; they are readable when this returns.
    fn append_entries(&mut self, entries: Vec<Entry>, done: Done) -> io::Result<()> {
        let inline = self.inline_unless_leader.as_ref().is_some_and(|(me, pause)| {
            self.state.vote.is_some_and(|v| v.leader_id.node_id != *me) && !pause.in_effect()
        });
        let Some(last) = entries.last().map(|e| e.log_id) else {
            done.call(&Ok(()));
            return Ok(());
        };
        let mut data = Vec::with_capacity(entries.len() * 256);
        let mut recs = Vec::with_capacity(entries.len());
        for e in &entries {
            self.seq += 1;
            let (off, len) = put_entry(&mut data, e)?;
            recs.push(Rec { kind: RecKind::Entry(e.log_id, self.seq), off, len });
        }
        {
            let mut recent = lock(&self.shared.recent);
            for (e, r) in entries.into_iter().zip(&recs) {
                if let RecKind::Entry(_, seq) = r.kind {
                    recent.entries.insert(e.log_id.index, (seq, false, Arc::new(e)));
                }
            }
        }
        self.state.last = Some(last);
        self.shared.appended_bytes.fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
        if inline && self.writer_state.pending.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            let mut writer = lock(&self.writer_state.writer);
            // Never roll a segment here (waiting for the spare or zeroing
            // one holds the runtime): that append goes to the thread.
            if writer.fits(data.len() as u64) {
                let batch = [(data, recs, done)];
                let res = writer.write_batch(&batch);
                drop(writer);
                let [(_, _, done)] = batch;
                done.call(&res);
                return Ok(());
            }
        }
        self.send(Op::Write { data, recs, done })
    }

    /// Send `op` (built with a callback) and wait until it is durable.
    async fn wait(&self, verb: ErrorVerb, op: impl FnOnce(Done) -> Op) -> Result<(), StorageError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(op(Done::Wake(tx))).map_err(|e| storage_err(verb, e))?;
        rx.await.map_err(|_| storage_err(verb, "the raft log writer stopped"))?.map_err(|e| storage_err(verb, e))
    }

    fn meta(&self) -> Meta {
        Meta { vote: self.state.vote, purged: self.state.purged }
    }

    /// The log id at `index`, if the log has it.
    fn log_id_at(&self, index: u64) -> Option<LogId> {
        if let Some((_, _, e)) = lock(&self.shared.recent).entries.get(&index) {
            return Some(e.log_id);
        }
        lock(&self.shared.locs).get(index).map(|l| l.log_id)
    }
}

/// The vote to hand openraft when node `me` starts with `saved`: the same,
/// but not committed when it is `me`'s own. openraft 0.9 makes a node whose
/// vote is committed for itself leader again at once, in the same term and
/// without an election, and its next entries would reuse log ids that
/// entries it sent before the restart (and then lost: never written, or not
/// synced before a power loss) may still have on other nodes, with other
/// content. Not committed, the node is a follower that must win an election
/// in a higher term before it appends anything (see `docs/db.md`, "Restart
/// inside a term"). Votes for other nodes stay committed: such a node keeps
/// refusing to vote for a leader lease after it starts (openraft stamps the
/// saved vote with the time it is read).
fn never_resume_leadership(saved: Vote, me: NodeId) -> Vote {
    if saved.committed && saved.leader_id.node_id == me {
        tracing::info!(vote = %saved, "this node led before it stopped: it must win a new election to lead again");
        Vote { committed: false, ..saved }
    } else {
        saved
    }
}

/// Copy the old SQLite log (`old`) into a new log in `dir/raft-log`.
fn import(old: &Path, dir: &Path, seg_size: u64) -> io::Result<()> {
    use rusqlite::OptionalExtension;
    tracing::info!(path = %old.display(), "importing the raft log from the old format");
    let sql = |e: rusqlite::Error| io::Error::other(format!("reading {}: {e}", old.display()));
    let json = |e: serde_json::Error| invalid(format!("{}: {e}", old.display()));
    let tmp = dir.join(IMPORTING);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    {
        let conn = rusqlite::Connection::open(old).map_err(sql)?;
        let meta = |k: &str| -> io::Result<Option<Vec<u8>>> {
            conn.query_row("SELECT v FROM meta WHERE k = ?", [k], |r| r.get(0)).optional().map_err(sql)
        };
        let vote: Option<Vote> = meta("vote")?.map(|v| serde_json::from_slice(&v)).transpose().map_err(json)?;
        let purged: Option<LogId> = meta("purged")?.map(|v| serde_json::from_slice(&v)).transpose().map_err(json)?;
        let mut log = LogStore::open_dir(&tmp, seg_size, None)?;
        log.state.vote = vote;
        log.state.purged = purged;
        log.send(Op::Meta { meta: log.meta(), purge: purged.map(|p| p.index), done: Done::Nothing })?;
        let after = purged.map(|p| p.index as i64).unwrap_or(-1);
        let mut stmt = conn.prepare("SELECT entry FROM log WHERE idx > ? ORDER BY idx").map_err(sql)?;
        let mut rows = stmt.query([after]).map_err(sql)?;
        let mut batch = Vec::new();
        let mut n = 0u64;
        while let Some(row) = rows.next().map_err(sql)? {
            batch.push(serde_json::from_slice::<Entry>(&row.get::<_, Vec<u8>>(0).map_err(sql)?).map_err(json)?);
            n += 1;
            if batch.len() == 1024 {
                log.append_entries(std::mem::take(&mut batch), Done::Nothing)?;
            }
        }
        let (tx, rx) = mpsc::sync_channel(1);
        if batch.is_empty() {
            log.send(Op::Meta { meta: log.meta(), purge: None, done: Done::Block(tx) })?;
        } else {
            log.append_entries(batch, Done::Block(tx))?;
        }
        rx.recv().map_err(|_| io::Error::other("the raft log writer stopped"))??;
        tracing::info!(entries = n, ?vote, ?purged, "imported the old raft log");
    }
    std::fs::rename(&tmp, dir.join(DIR))?;
    sync_dir(dir)
}

/// Rename the imported `raft-log.db` (and a WAL file SQLite left) out of the way.
fn retire_old(dir: &Path) -> io::Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let from = dir.join(format!("{OLD}{suffix}"));
        if from.exists() {
            std::fs::rename(&from, dir.join(format!("{OLD}.imported{suffix}")))?;
        }
    }
    sync_dir(dir)
}

fn range_of<RB: RangeBounds<u64>>(range: &RB) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s + 1,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => e.saturating_add(1),
        Bound::Excluded(e) => *e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

/// Read `start..end` from the files (a blocking call).
fn read_files(shared: &Shared, start: u64, end: u64) -> io::Result<Vec<Entry>> {
    let want: Vec<Loc> = {
        let locs = lock(&shared.locs);
        let (s, e) = (start.max(locs.first), end.min(locs.end()));
        (s..e).filter_map(|i| locs.get(i).copied()).collect()
    };
    let files: BTreeMap<u64, Arc<File>> = {
        let segs = lock(&shared.segs);
        want.iter().filter_map(|l| segs.get(&l.seg).map(|s| (l.seg, s.file.clone()))).collect()
    };
    let mut out = Vec::with_capacity(want.len());
    for loc in &want {
        let Some(file) = files.get(&loc.seg) else {
            return Err(io::Error::other(format!("raft log entry {} was purged meanwhile", loc.log_id)));
        };
        out.push(read_entry(file, loc)?);
    }
    Ok(out)
}

async fn read_entries(shared: &Arc<Shared>, start: u64, end: u64) -> Result<Vec<Entry>, StorageError> {
    if start >= end {
        return Ok(Vec::new());
    }
    // The newest entries first: one that leaves memory meanwhile is in the
    // files.
    let cached: Vec<Arc<Entry>> = {
        let recent = lock(&shared.recent);
        if recent.entries.last_key_value().is_some_and(|(last, _)| *last < start) {
            // Past the end of the log.
            return Ok(Vec::new());
        }
        recent.entries.range(start..end).map(|(_, e)| e.2.clone()).collect()
    };
    // Memory holds a contiguous suffix of the log, so the files are read
    // only below its first index.
    let file_end = cached.first().map(|e| e.log_id.index).unwrap_or(end);
    let mut out = if start < file_end {
        let shared = shared.clone();
        tokio::task::spawn_blocking(move || read_files(&shared, start, file_end))
            .await
            .map_err(|e| storage_err(ErrorVerb::Read, e))?
            .map_err(|e| storage_err(ErrorVerb::Read, e))?
    } else {
        Vec::new()
    };
    out.extend(cached.iter().map(|e| (**e).clone()));
    Ok(out)
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = range_of(&range);
        read_entries(&self.shared, start, end).await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = range_of(&range);
        read_entries(&self.shared, start, end).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        Ok(LogState { last_purged_log_id: self.state.purged, last_log_id: self.state.last })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader { shared: self.shared.clone() }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.state.vote = Some(*vote);
        let meta = self.meta();
        self.wait(ErrorVerb::Write, |done| Op::Meta { meta, purge: None, done }).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.state.vote)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        self.append_entries(entries, Done::Raft(callback)).map_err(|e| storage_err(ErrorVerb::Write, e))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "truncating the log");
        let index = log_id.index;
        let prev = index.checked_sub(1).and_then(|i| self.log_id_at(i));
        lock(&self.shared.recent).entries.retain(|i, _| *i < index);
        self.state.last = prev.or(self.state.purged.filter(|p| p.index < index));
        let mut data = Vec::new();
        let (off, len) =
            put_record(&mut data, KIND_TRUNCATE, index, |_| Ok(())).map_err(|e| storage_err(ErrorVerb::Write, e))?;
        let recs = vec![Rec { kind: RecKind::Truncate(index), off, len }];
        self.wait(ErrorVerb::Write, |done| Op::Write { data, recs, done }).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "purging the log");
        lock(&self.shared.recent).entries.retain(|i, _| *i > log_id.index);
        self.state.purged = Some(log_id);
        self.state.last = self.state.last.max(Some(log_id));
        let meta = self.meta();
        self.wait(ErrorVerb::Write, |done| Op::Meta { meta, purge: Some(log_id.index), done }).await
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};
    use std::sync::Condvar;

    /// The node the logs of these tests belong to.
    const ME: NodeId = 1;

    /// Holds the syncs of one log (a disk that stalls): the writer has
    /// written its batch (`pwrite`) and waits before `fdatasync` until
    /// released.
    pub(crate) struct SyncGate {
        dir: PathBuf,
        closed: Mutex<bool>,
        opened: Condvar,
        /// Syncs that waited here.
        pub(crate) held: std::sync::atomic::AtomicUsize,
    }

    static GATES: Mutex<Vec<Arc<SyncGate>>> = Mutex::new(Vec::new());

    impl SyncGate {
        /// Hold every sync of the log in `data_dir` from now on.
        pub(crate) fn hold(data_dir: &Path) -> Arc<SyncGate> {
            let gate = Arc::new(SyncGate {
                dir: data_dir.join(DIR),
                closed: Mutex::new(true),
                opened: Condvar::new(),
                held: Default::default(),
            });
            lock(&GATES).push(gate.clone());
            gate
        }

        pub(crate) fn release(&self) {
            *lock(&self.closed) = false;
            self.opened.notify_all();
            lock(&GATES).retain(|g| g.dir != self.dir);
        }
    }

    /// Called by the writer between its `pwrite` and its `fdatasync`.
    pub(super) fn before_sync(dir: &Path) {
        let Some(gate) = lock(&GATES).iter().find(|g| g.dir == dir).cloned() else { return };
        let mut closed = lock(&gate.closed);
        if *closed {
            gate.held.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        while *closed {
            closed = gate.opened.wait(closed).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn entry(term: u64, index: u64) -> Entry {
        Entry { log_id: id(term, index), payload: EntryPayload::Blank }
    }

    fn write(index: u64, sql: &str) -> Entry {
        let batch = crate::raft_types::WriteBatch {
            writes: vec![crate::raft_types::Write {
                statements: vec![crate::api::Statement::new(sql)],
                request_id: Some(format!("r{index}")),
            }],
            time_ms: 7,
        };
        Entry { log_id: id(1, index), payload: EntryPayload::Normal(batch) }
    }

    /// Segments of a few batches.
    const TINY: u64 = 4 * PAGE;

    /// Append and wait until durable (openraft's `LogFlushed` cannot be
    /// built outside openraft).
    pub(crate) async fn append(s: &mut LogStore, entries: impl IntoIterator<Item = Entry>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        s.append_entries(entries.into_iter().collect(), Done::Wake(tx)).unwrap();
        rx.await.unwrap().unwrap();
    }

    async fn indexes(s: &mut LogStore, range: impl RangeBounds<u64> + Clone + Debug + Send) -> Vec<u64> {
        s.try_get_log_entries(range).await.unwrap().iter().map(|e| e.log_id.index).collect()
    }

    /// The segment files of the log in `dir`, oldest first.
    fn segments(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(dir.join(DIR))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        v.sort();
        v
    }

    fn seg_seq(p: &Path) -> u64 {
        p.file_stem().unwrap().to_str().unwrap().parse().unwrap()
    }

    /// The segment file and the offset of the record of entry `index`.
    fn record_of(s: &LogStore, dir: &Path, index: u64) -> (PathBuf, Loc) {
        let loc = *lock(&s.shared.locs).get(index).unwrap();
        (dir.join(DIR).join(seg_name(loc.seg)), loc)
    }

    #[tokio::test]
    async fn only_written_entries_are_offered_and_announced() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = LogStore::open(dir.path(), ME).unwrap();
        let appended = s.appended_entries();
        let mut watch = appended.watch_written();
        assert_eq!(*watch.borrow_and_update(), None);
        append(&mut s, (1..=5).map(|i| entry(1, i))).await;
        assert!(watch.has_changed().unwrap());
        assert_eq!(*watch.borrow_and_update(), Some(id(1, 5)));
        let idx = |v: Vec<Entry>| v.iter().map(|e| e.log_id.index).collect::<Vec<_>>();
        // Handed to the log while the writer is busy: readable by openraft,
        // but neither announced nor offered to be sent ahead.
        let writer_state = s.writer_state.clone();
        let held = lock(&writer_state.writer);
        let (tx, rx) = tokio::sync::oneshot::channel();
        s.append_entries(vec![entry(1, 6), entry(1, 7)], Done::Wake(tx)).unwrap();
        let in_memory: Vec<u64> = lock(&s.shared.recent).entries.range(6..).map(|(i, _)| *i).collect();
        assert_eq!(in_memory, vec![6, 7], "what openraft reads");
        assert!(!watch.has_changed().unwrap());
        assert_eq!(idx(appended.after(4, 10)), vec![5]);
        assert_eq!(idx(appended.after(5, 10)), Vec::<u64>::new());
        drop(held);
        watch.changed().await.unwrap();
        assert_eq!(*watch.borrow_and_update(), Some(id(1, 7)));
        assert_eq!(idx(appended.after(4, 10)), vec![5, 6, 7]);
        assert_eq!(idx(appended.after(1, 2)), vec![2, 3]);
        assert_eq!(idx(appended.after(7, 10)), Vec::<u64>::new());
        rx.await.unwrap().unwrap();
        // Not in memory after `prev`: nothing (never a stretch with a gap).
        lock(&s.shared.recent).entries.retain(|i, _| *i != 3);
        assert_eq!(idx(appended.after(1, 10)), vec![2]);
        assert_eq!(idx(appended.after(2, 10)), Vec::<u64>::new());
        // A truncate announces the new last entry once it is written.
        s.truncate(id(1, 6)).await.unwrap();
        assert_eq!(*watch.borrow_and_update(), Some(id(1, 5)));
        assert_eq!(idx(appended.after(4, 10)), vec![5]);
    }

    #[tokio::test]
    async fn a_vote_for_itself_is_not_committed_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = LogStore::open(dir.path(), ME).unwrap();
            s.save_vote(&Vote::new_committed(7, ME)).await.unwrap();
            // In this process the vote is what was saved.
            assert_eq!(s.read_vote().await.unwrap(), Some(Vote::new_committed(7, ME)));
        }
        // Reopened by the node it names: same term, not committed, so
        // openraft starts it as a follower that must win a new election.
        let mut s = LogStore::open(dir.path(), ME).unwrap();
        assert_eq!(s.read_vote().await.unwrap(), Some(Vote::new(7, ME)));
        drop(s);
        // Reopened as another node (the vote names its leader): unchanged.
        let mut s = LogStore::open(dir.path(), 2).unwrap();
        assert_eq!(s.read_vote().await.unwrap(), Some(Vote::new_committed(7, ME)));
    }

    #[tokio::test]
    async fn a_synced_batch_never_shares_a_page_with_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let first: Vec<Entry> = (0..5).map(|i| write(i, &format!("INSERT INTO t VALUES ({i})"))).collect();
        let (seg, loc) = {
            let mut s = LogStore::open(dir.path(), ME).unwrap();
            append(&mut s, first.clone()).await;
            append(&mut s, [write(5, "INSERT INTO t VALUES (5)")]).await;
            record_of(&s, dir.path(), 5)
        };
        assert_eq!(loc.off % PAGE, 0, "the next batch starts on a page of its own");
        // Power lost while the second batch was written: its first page
        // (all of it) is torn.
        let page = loc.off / PAGE * PAGE;
        OpenOptions::new().write(true).open(&seg).unwrap().write_all_at(&[0xab; PAGE as usize], page).unwrap();
        let mut s = LogStore::open(dir.path(), ME).unwrap();
        assert_eq!(s.try_get_log_entries(..).await.unwrap(), first, "the synced batch is intact");
        // Padding is skipped on replay, and the log goes on.
        append(&mut s, (5..8).map(|i| write(i, "INSERT INTO t VALUES (9)"))).await;
        drop(s);
        let mut s = LogStore::open(dir.path(), ME).unwrap();
        assert_eq!(indexes(&mut s, ..).await, (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn padding_ends_a_batch_on_a_page_boundary() {
        for len in [1, 100, PAGE - MIN_RECORD, PAGE - MIN_RECORD + 1, PAGE - 1, PAGE, PAGE + 1, 3 * PAGE - 5] {
            let pad = padding_for(len);
            assert_eq!((len + pad) % PAGE, 0, "{len}");
            assert!(pad == 0 || pad >= MIN_RECORD, "{len}: {pad}");
            let mut buf = Vec::new();
            put_padding(&mut buf, pad).unwrap();
            assert_eq!(buf.len() as u64, pad);
            if pad > 0 {
                assert_eq!(check_record(&buf).map(|p| p[0]), Some(KIND_PADDING));
            }
        }
    }

    #[tokio::test]
    async fn a_replica_never_rolls_a_segment_on_the_calling_thread() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = LogStore::open_with(dir.path(), TINY, ME).unwrap();
        s.sync_inline_unless_leader(ME, InlineSyncPause::default());
        s.state.vote = Some(Vote::new_committed(1, 2));
        let blocking = || {
            let (tx, rx) = mpsc::sync_channel(1);
            (Done::Block(tx), rx)
        };
        // Fits in the active segment: synced before `append` returns.
        let (done, small) = blocking();
        s.append_entries(vec![write(1, "INSERT INTO t VALUES (1)")], done).unwrap();
        small.try_recv().expect("synced inline").unwrap();
        // Larger than what is left: the writer thread rolls to the next
        // segment (a roll on this thread fails its debug assertion).
        let big = "x".repeat(TINY as usize);
        let (done, rolled) = blocking();
        s.append_entries(vec![write(2, &format!("INSERT INTO t VALUES ('{big}')"))], done).unwrap();
        rolled.recv().unwrap().unwrap();
        let (seg, _) = record_of(&s, dir.path(), 2);
        assert_ne!(seg, record_of(&s, dir.path(), 1).0, "a new segment");
        drop(s);
        let mut s = LogStore::open_with(dir.path(), TINY, ME).unwrap();
        assert_eq!(indexes(&mut s, ..).await, vec![1, 2]);
    }

    #[tokio::test]
    async fn a_replica_syncs_its_appends_on_the_calling_thread_when_nothing_is_queued() {
        use std::sync::atomic::Ordering::SeqCst;
        let dir = tempfile::tempdir().unwrap();
        let mut s = LogStore::open(dir.path(), ME).unwrap();
        let pause = InlineSyncPause::default();
        s.sync_inline_unless_leader(2, pause.clone());
        let blocking = || {
            let (tx, rx) = mpsc::sync_channel(1);
            (Done::Block(tx), rx)
        };
        // This node (2) leads: appends go to the writer thread, which is
        // held here, so nothing is done yet.
        s.state.vote = Some(Vote::new_committed(1, 2));
        let writer_state = s.writer_state.clone();
        let held = lock(&writer_state.writer);
        let (done, first) = blocking();
        s.append_entries(vec![entry(1, 1)], done).unwrap();
        assert!(first.try_recv().is_err());
        assert_eq!(s.writer_state.pending.load(SeqCst), 1);
        // Node 1 leads now, but a write is still queued: this one queues
        // behind it, in order.
        s.state.vote = Some(Vote::new_committed(2, 1));
        let (done, second) = blocking();
        s.append_entries(vec![entry(2, 2)], done).unwrap();
        assert_eq!(s.writer_state.pending.load(SeqCst), 2);
        drop(held);
        first.recv().unwrap().unwrap();
        second.recv().unwrap().unwrap();
        // Nothing queued: written and synced before the append returns.
        eventually_zero(&s.writer_state.pending);
        let (done, third) = blocking();
        s.append_entries(vec![entry(2, 3)], done).unwrap();
        third.try_recv().expect("synced inline").unwrap();
        // Paused (the node serves reads): through the thread again.
        pause.pause(60_000);
        let held = lock(&writer_state.writer);
        let (done, fourth) = blocking();
        s.append_entries(vec![entry(2, 4)], done).unwrap();
        assert!(fourth.try_recv().is_err());
        assert_eq!(s.writer_state.pending.load(SeqCst), 1);
        drop(held);
        fourth.recv().unwrap().unwrap();
        drop((s, writer_state));
        let mut s = LogStore::open(dir.path(), ME).unwrap();
        assert_eq!(indexes(&mut s, ..).await, vec![1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn the_size_of_the_log_counts_what_was_on_disk_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let before = {
            let mut s = LogStore::open(dir.path(), ME).unwrap();
            append(&mut s, (1..=10).map(|i| entry(1, i))).await;
            s.appended_entries().bytes()
        };
        assert!(before > 10 * ENTRY_HEAD as u64);
        let mut s = LogStore::open(dir.path(), ME).unwrap();
        assert_eq!(s.appended_entries().bytes(), before, "the entries on disk");
        append(&mut s, [entry(1, 11)]).await;
        let grown = s.appended_entries().bytes();
        assert!(grown > before);
        // After a purge, only what is left counts at the next open.
        s.purge(id(1, 10)).await.unwrap();
        drop(s);
        let s = LogStore::open(dir.path(), ME).unwrap();
        let left = s.appended_entries().bytes();
        assert!(left < before, "{left} of {before}");
        assert_eq!(left, grown - before, "entry 11 alone");
    }

    fn eventually_zero(n: &std::sync::atomic::AtomicUsize) {
        for _ in 0..1000 {
            if n.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        panic!("the writer thread still has work");
    }

    #[tokio::test]
    async fn entries_vote_and_purge_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = LogStore::open(dir.path(), ME).unwrap();
            assert!(s.is_empty().unwrap());
            append(&mut s, (0..10).map(|i| entry(1, i))).await;
            s.save_vote(&Vote::new(3, 2)).await.unwrap();
            s.truncate(id(1, 8)).await.unwrap();
            s.purge(id(1, 2)).await.unwrap();
        }
        let mut s = LogStore::open(dir.path(), ME).unwrap();
        assert!(!s.is_empty().unwrap());
        assert_eq!(s.read_vote().await.unwrap(), Some(Vote::new(3, 2)));
        let st = s.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id.unwrap().index, 2);
        assert_eq!(st.last_log_id.unwrap().index, 7);
        assert_eq!(indexes(&mut s, 3..=5).await, vec![3, 4, 5]);
        assert_eq!(indexes(&mut s, 6..).await, vec![6, 7]);
        assert_eq!(indexes(&mut s, ..).await, vec![3, 4, 5, 6, 7]);
    }

    #[tokio::test]
    async fn log_state_after_purging_everything_is_the_purged_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = LogStore::open(dir.path(), ME).unwrap();
        s.purge(id(2, 9)).await.unwrap();
        let st = s.get_log_state().await.unwrap();
        assert_eq!(st.last_log_id, st.last_purged_log_id);
        assert_eq!(st.last_log_id.unwrap().index, 9);
        // The next append follows the purged id.
        append(&mut s, [entry(2, 10)]).await;
        drop(s);
        let mut s = LogStore::open(dir.path(), ME).unwrap();
        let st = s.get_log_state().await.unwrap();
        assert_eq!((st.last_purged_log_id.unwrap().index, st.last_log_id.unwrap().index), (9, 10));
    }

    #[tokio::test]
    async fn entries_are_readable_and_equal_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let written: Vec<Entry> = (0..50).map(|i| write(i, &format!("INSERT INTO t VALUES ({i})"))).collect();
        {
            let mut s = LogStore::open_with(dir.path(), TINY, ME).unwrap();
            append(&mut s, written.clone()).await;
            assert_eq!(s.try_get_log_entries(..).await.unwrap(), written);
        }
        let mut s = LogStore::open_with(dir.path(), TINY, ME).unwrap();
        // Read around this module's view too (its first RECENT entries).
        lock(&s.shared.recent).entries.retain(|i, _| *i >= 40);
        assert_eq!(s.try_get_log_entries(..).await.unwrap(), written);
        assert_eq!(s.try_get_log_entries(35..45).await.unwrap(), written[35..45].to_vec());
    }

    #[tokio::test]
    async fn a_torn_last_record_is_cut_off_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let (seg, loc) = {
            let mut s = LogStore::open(dir.path(), ME).unwrap();
            append(&mut s, (0..10).map(|i| write(i, "INSERT INTO t VALUES (1)"))).await;
            record_of(&s, dir.path(), 9)
        };
        // kill -9 in the middle of writing the last record.
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(loc.off + loc.len as u64 - 5).unwrap();
        drop(f);
        let (seg, loc) = {
            let mut s = LogStore::open(dir.path(), ME).unwrap();
            assert_eq!(indexes(&mut s, ..).await, (0..9).collect::<Vec<_>>());
            assert_eq!(s.get_log_state().await.unwrap().last_log_id.unwrap().index, 8);
            // The log goes on from there, and that survives another reopen.
            append(&mut s, [write(9, "INSERT INTO t VALUES (2)")]).await;
            record_of(&s, dir.path(), 9)
        };
        // A torn write that left junk after the last complete record.
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .write_all_at(&[0xab; 100], loc.off + loc.len as u64)
            .unwrap();
        for _ in 0..2 {
            let mut s = LogStore::open(dir.path(), ME).unwrap();
            let got = s.try_get_log_entries(..).await.unwrap();
            assert_eq!(got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
            assert_eq!(got[9], write(9, "INSERT INTO t VALUES (2)"));
        }
        // A half-created segment (crash before its header was written).
        std::fs::write(dir.path().join(DIR).join(seg_name(99)), b"").unwrap();
        let mut s = LogStore::open(dir.path(), ME).unwrap();
        assert_eq!(indexes(&mut s, ..).await.len(), 10);
    }

    #[tokio::test]
    async fn segments_are_zeroed_a_spare_is_made_ahead_and_ignored_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let (seg, loc) = {
            let mut s = LogStore::open_with(dir.path(), TINY, ME).unwrap();
            let first = &segments(dir.path())[0];
            let bytes = std::fs::read(first).unwrap();
            assert_eq!(bytes.len() as u64, TINY, "the segment is written out to its size");
            assert!(bytes[HEADER as usize..].iter().all(|b| *b == 0));
            // Two batches: a page each (the header has its own).
            append(&mut s, (0..2).map(|i| write(i, "INSERT INTO t VALUES (1)"))).await;
            append(&mut s, [write(2, "INSERT INTO t VALUES (1)")]).await;
            record_of(&s, dir.path(), 2)
        };
        // Past half of the segment a spare was made (dropping the log
        // waited for it), under a name of its own.
        let segs = segments(dir.path());
        assert_eq!(segs.last(), Some(&seg), "{segs:?}");
        let spare = seg.parent().unwrap().join(spare_name(seg_seq(&seg) + 1));
        assert!(spare.exists(), "{spare:?}");
        // A torn write at the end of the segment written last is still cut
        // off (the spare does not make it an "older" segment), and the
        // spare is gone after the open.
        OpenOptions::new().write(true).open(&seg).unwrap().write_all_at(&[0xab; 40], loc.off + loc.len as u64).unwrap();
        let mut s = LogStore::open_with(dir.path(), TINY, ME).unwrap();
        assert!(!spare.exists());
        assert_eq!(indexes(&mut s, ..).await, vec![0, 1, 2]);
        append(&mut s, (3..40).map(|i| write(i, "INSERT INTO t VALUES (1)"))).await;
        drop(s);
        let mut s = LogStore::open_with(dir.path(), TINY, ME).unwrap();
        assert_eq!(indexes(&mut s, ..).await, (0..40).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn damage_in_an_older_segment_fails_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let (seg, loc) = {
            let mut s = LogStore::open(dir.path(), ME).unwrap();
            append(&mut s, (0..10).map(|i| write(i, "INSERT INTO t VALUES (1)"))).await;
            record_of(&s, dir.path(), 3)
        };
        drop(LogStore::open(dir.path(), ME).unwrap());
        // Not a torn write: a record in the middle of the log changed.
        OpenOptions::new().write(true).open(&seg).unwrap().write_all_at(b"x", loc.off + 30).unwrap();
        let err = LogStore::open(dir.path(), ME).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    }

    #[tokio::test]
    async fn truncate_then_append_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = LogStore::open_with(dir.path(), TINY, ME).unwrap();
            append(&mut s, (0..10).map(|i| entry(1, i))).await;
            s.truncate(id(1, 6)).await.unwrap();
            assert_eq!(indexes(&mut s, ..).await, (0..6).collect::<Vec<_>>());
            append(&mut s, (6..8).map(|i| entry(2, i))).await;
        }
        let mut s = LogStore::open_with(dir.path(), TINY, ME).unwrap();
        let got = s.try_get_log_entries(..).await.unwrap();
        let ids: Vec<_> = got.iter().map(|e| (e.log_id.leader_id.term, e.log_id.index)).collect();
        let want: Vec<_> = (0..6).map(|i| (1, i)).chain((6..8).map(|i| (2, i))).collect();
        assert_eq!(ids, want);
        assert_eq!(s.get_log_state().await.unwrap().last_log_id, Some(id(2, 7)));
        // A truncate that is not followed by an append is durable too.
        s.truncate(id(1, 3)).await.unwrap();
        drop(s);
        let mut s = LogStore::open_with(dir.path(), TINY, ME).unwrap();
        assert_eq!(indexes(&mut s, ..).await, vec![0, 1, 2]);
        assert_eq!(s.get_log_state().await.unwrap().last_log_id, Some(id(1, 2)));
    }

    #[tokio::test]
    async fn purge_deletes_whole_segments_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = LogStore::open_with(dir.path(), TINY, ME).unwrap();
            for i in 0..40 {
                append(&mut s, [entry(1, i)]).await;
            }
            let before = segments(dir.path()).len();
            assert!(before >= 10, "{before} segments");
            s.purge(id(1, 21)).await.unwrap();
            let after = segments(dir.path()).len();
            assert!(after <= before - 5, "{before} -> {after} segments");
            assert_eq!(indexes(&mut s, ..).await, (22..40).collect::<Vec<_>>());
        }
        let mut s = LogStore::open_with(dir.path(), TINY, ME).unwrap();
        let st = s.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id, Some(id(1, 21)));
        assert_eq!(st.last_log_id, Some(id(1, 39)));
        assert_eq!(indexes(&mut s, ..).await, (22..40).collect::<Vec<_>>());
        assert_eq!(indexes(&mut s, 25..27).await, vec![25, 26]);
        append(&mut s, [entry(1, 40)]).await;
        assert_eq!(indexes(&mut s, 39..).await, vec![39, 40]);
    }

    #[tokio::test]
    async fn the_old_sqlite_log_is_imported_once() {
        let dir = tempfile::tempdir().unwrap();
        let written: Vec<Entry> = (0..20).map(|i| write(i, &format!("INSERT INTO t VALUES ({i})"))).collect();
        {
            // The old format: tables `log (idx, entry)` and `meta (k, v)`, JSON.
            let c = rusqlite::Connection::open(dir.path().join(OLD)).unwrap();
            c.execute_batch(
                "PRAGMA journal_mode = WAL;
                 CREATE TABLE log (idx INTEGER PRIMARY KEY, entry BLOB NOT NULL);
                 CREATE TABLE meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);",
            )
            .unwrap();
            for e in &written[5..] {
                c.execute(
                    "INSERT INTO log (idx, entry) VALUES (?, ?)",
                    rusqlite::params![e.log_id.index as i64, serde_json::to_vec(e).unwrap()],
                )
                .unwrap();
            }
            let meta = "INSERT INTO meta (k, v) VALUES (?, ?)";
            c.execute(meta, rusqlite::params!["vote", serde_json::to_vec(&Vote::new_committed(4, 2)).unwrap()])
                .unwrap();
            c.execute(meta, rusqlite::params!["purged", serde_json::to_vec(&id(1, 4)).unwrap()]).unwrap();
        }
        for _ in 0..2 {
            let mut s = LogStore::open(dir.path(), ME).unwrap();
            assert!(!s.is_empty().unwrap());
            assert_eq!(s.read_vote().await.unwrap(), Some(Vote::new_committed(4, 2)));
            let st = s.get_log_state().await.unwrap();
            assert_eq!((st.last_purged_log_id, st.last_log_id), (Some(id(1, 4)), Some(id(1, 19))));
            assert_eq!(s.try_get_log_entries(..).await.unwrap(), written[5..].to_vec());
            assert!(!dir.path().join(OLD).exists());
            assert!(dir.path().join(format!("{OLD}.imported")).exists());
            assert!(!dir.path().join(IMPORTING).exists());
        }
    }

    #[tokio::test]
    async fn an_interrupted_import_is_done_again() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = rusqlite::Connection::open(dir.path().join(OLD)).unwrap();
            c.execute_batch(
                "CREATE TABLE log (idx INTEGER PRIMARY KEY, entry BLOB NOT NULL);
                 CREATE TABLE meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);",
            )
            .unwrap();
            c.execute("INSERT INTO log (idx, entry) VALUES (0, ?)", [serde_json::to_vec(&entry(1, 0)).unwrap()])
                .unwrap();
        }
        // A crash left a half-built import behind.
        std::fs::create_dir_all(dir.path().join(IMPORTING)).unwrap();
        std::fs::write(dir.path().join(IMPORTING).join(seg_name(1)), b"junk").unwrap();
        let mut s = LogStore::open(dir.path(), ME).unwrap();
        assert_eq!(indexes(&mut s, ..).await, vec![0]);
    }

    /// openraft's own storage test suite, with the real state machine.
    #[test]
    fn openraft_storage_suite() {
        use crate::state_machine::StateMachine;
        use openraft::testing::{StoreBuilder, Suite};
        struct Builder;
        impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
            async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
                let dir = tempfile::tempdir().unwrap();
                let log = LogStore::open(dir.path(), ME).unwrap();
                let sm = StateMachine::open(dir.path()).unwrap();
                Ok((dir, log, sm))
            }
        }
        Suite::test_all(Builder).unwrap();
    }
}
