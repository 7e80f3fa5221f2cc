//! [`LogStore`]: opening the log and handing appends, truncates and
//! meta changes to the writer.
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
use super::appended::AppendedEntries;
use super::index::{lock, Recent, Segment, Shared, RECENT};
use super::meta::{Meta, LOCK};
use super::record::{put_entry, read_entry, PAGE};
use super::recovery::{recover, Recovered};
use super::segment::{create_segment, FIRST_SEGMENT};
use super::writer::{run_writer, Done, InlineSyncPause, Op, Rec, RecKind, Writer, WriterState, WRITER_THREAD};
use bulwark_db_api::raft_types::{storage_err, Entry, LogId, NodeId, StorageError, Vote};
use openraft::ErrorVerb;
use std::fs::OpenOptions;
use std::io;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

/// What the log holds, as seen by openraft (ahead of the writer).
#[derive(Debug, Default, Clone)]
pub(super) struct State {
    pub(super) vote: Option<Vote>,
    pub(super) purged: Option<LogId>,
    pub(super) last: Option<LogId>,
}

/// The Raft log store, owned by openraft's core.
pub struct LogStore {
    pub(super) shared: Arc<Shared>,
    pub(super) queue: Option<mpsc::Sender<Op>>,
    pub(super) writer: Option<JoinHandle<()>>,
    pub(super) writer_state: Arc<WriterState>,
    /// This node's id, when appends made while another node leads are
    /// written and synced on the calling thread, unless paused.
    pub(super) inline_unless_leader: Option<(u64, InlineSyncPause)>,
    pub(super) state: State,
    /// Append sequence number (tells a re-appended index from the old one).
    pub(super) seq: u64,
    /// The highest index a purge may remove now (see [`PurgeLimit`]).
    pub(super) purge_limit: Option<PurgeLimit>,
}

/// The highest log index a purge may remove now (`None`: none), asked at
/// each purge: a purge beyond it removes only up to it, and the rest waits
/// for a later purge. The log archive (`archive` in `bulwark-db`) holds purges back
/// to the entries it has copied.
pub type PurgeLimit = Arc<dyn Fn() -> Option<u64> + Send + Sync>;

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
    /// Open the log directory `path` (which exists) of node `me` (`None`:
    /// the votes are kept as they are, for an import).
    pub(super) fn open_dir(path: &Path, seg_size: u64, me: Option<NodeId>) -> io::Result<LogStore> {
        let lock_file = OpenOptions::new().create(true).truncate(false).write(true).open(path.join(LOCK))?;
        let lock =
            nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
                io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("{} is in use by another process: {e}", path.display()),
                )
            })?;
        let Recovered { meta, locs, mut segs, next_seq: seq } = recover(path)?;
        let last = locs.v.back().map(|l| l.log_id).max(meta.purged);
        let log_bytes: u64 = locs.v.iter().map(|l| u64::from(l.len)).sum();
        // The newest entries, decoded.
        let mut recent = Recent::default();
        for loc in locs.v.iter().rev().take(RECENT) {
            let e = read_entry(&segs[&loc.seg].file, loc)?;
            recent.entries.insert(loc.log_id.index, (0, true, Arc::new(e)));
        }
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
            purge_limit: None,
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
    /// thread and back cost two context switches per append (figures:
    /// docs/BENCHMARKS.md). But the runtime serves nothing while it syncs:
    /// reads on that replica under write load took about twice as long, so
    /// the node pauses this while it serves reads. The primary keeps the thread: it handles
    /// client requests and replication meanwhile.
    pub fn sync_inline_unless_leader(&mut self, me: u64, pause: InlineSyncPause) {
        self.inline_unless_leader = Some((me, pause));
    }

    /// Hold purges back to `limit` (see [`PurgeLimit`]).
    pub fn limit_purges(&mut self, limit: PurgeLimit) {
        self.purge_limit = Some(limit);
    }

    /// What a purge up to `log_id` may remove under the [`PurgeLimit`]:
    /// up to the limit (an entry still in the log), or nothing.
    pub(super) fn purge_allowed(&self, log_id: LogId) -> Option<LogId> {
        let Some(limit) = &self.purge_limit else { return Some(log_id) };
        match limit() {
            Some(l) if l >= log_id.index => Some(log_id),
            Some(l) => self.log_id_at(l).filter(|id| Some(*id) > self.state.purged),
            None => None,
        }
    }

    pub(super) fn send(&self, op: Op) -> io::Result<()> {
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
    pub(super) fn append_entries(&mut self, entries: Vec<Entry>, done: Done) -> io::Result<()> {
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
    pub(super) async fn wait(&self, verb: ErrorVerb, op: impl FnOnce(Done) -> Op) -> Result<(), StorageError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(op(Done::Wake(tx))).map_err(|e| storage_err(verb, e))?;
        rx.await.map_err(|_| storage_err(verb, "the raft log writer stopped"))?.map_err(|e| storage_err(verb, e))
    }

    pub(super) fn meta(&self) -> Meta {
        Meta { vote: self.state.vote, purged: self.state.purged }
    }

    /// The log id at `index`, if the log has it.
    pub(super) fn log_id_at(&self, index: u64) -> Option<LogId> {
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
pub(super) fn never_resume_leadership(saved: Vote, me: NodeId) -> Vote {
    if saved.committed && saved.leader_id.node_id == me {
        tracing::info!(vote = %saved, "this node led before it stopped: it must win a new election to lead again");
        Vote { committed: false, ..saved }
    } else {
        saved
    }
}
