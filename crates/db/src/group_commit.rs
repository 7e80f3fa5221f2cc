//! Group commit on the primary: the writes that arrive while earlier ones
//! are being committed travel together as one Raft log entry.
//!
//! Every log entry costs one log append (and fsync) on each node, one
//! replication message per follower and one database transaction per node,
//! whatever it carries. Under concurrent load most of a write's cost was
//! that per-entry work, so the primary queues writes here and a single task
//! turns the queue into entries: it waits until fewer than
//! [`MAX_IN_FLIGHT`] entries are being committed, then takes everything
//! queued so far (up to [`MAX_WRITES`] writes or [`MAX_BYTES`]) into one
//! entry. A lone write on an idle primary still leaves at once; under load
//! the entries grow with the load. Each write keeps its own savepoint when
//! applied, so one failing write does not fail the others in its entry.
//!
//! Owns: the queue and its task. Must not touch: the HTTP layer (the node
//! maps [`Committed`] to replies) or the state machine.
use bulwark_db_api::raft_types::{ApplyOutcome, LogId, Node, NodeId, Raft, TypeConfig, Write, WriteBatch};
use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::ClientWriteResponse;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Entries being committed at once. More than one keeps the pipeline full
/// (the next entry is appended and sent while the previous one waits for
/// its acknowledgements); few keeps each entry large under load. Of 1, 2,
/// 4, 8 and 64, 4 wrote fastest (figures: docs/BENCHMARKS.md).
pub const MAX_IN_FLIGHT: usize = 4;
/// Most writes in one entry.
pub const MAX_WRITES: usize = 512;
/// Most request bytes in one entry (a single larger write still goes,
/// alone). At most 256 entries travel in one append-entries request, and a
/// node accepts up to 256 MiB of them: entries of 1 MiB keep a replica that
/// catches up under that limit.
pub const MAX_BYTES: usize = 1 << 20;

/// How a queued write ended.
#[derive(Debug)]
pub enum Committed {
    /// Committed by a majority and applied at `log_id`.
    Done { log_id: LogId, outcome: ApplyOutcome },
    /// This node is no longer the primary; nothing was written.
    NotPrimary,
    /// Raft failed or did not commit within the write timeout; the outcome
    /// is unknown.
    Unknown(String),
}

struct Queued {
    write: Write,
    bytes: usize,
    reply: oneshot::Sender<Committed>,
}

/// The primary's write queue (cheap to share).
#[derive(Clone)]
pub struct GroupCommit {
    queue: mpsc::UnboundedSender<Queued>,
}

impl GroupCommit {
    /// Start the task that commits queued writes through `raft`. An entry
    /// that is not committed within `timeout` frees its place in the
    /// pipeline and its writes end as [`Committed::Unknown`].
    pub fn start(raft: Raft, timeout: Duration) -> GroupCommit {
        GroupCommit::with_committer(
            move |batch| {
                let raft = raft.clone();
                async move { raft.client_write(batch).await }
            },
            timeout,
        )
    }

    /// The same with any way of committing an entry (tests).
    fn with_committer<F, Fut>(commit: F, timeout: Duration) -> GroupCommit
    where
        F: Fn(WriteBatch) -> Fut + Send + 'static,
        Fut: Future<Output = WriteResult> + Send + 'static,
    {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(commit, rx, timeout));
        GroupCommit { queue }
    }

    /// Queue `write` (`bytes`: its request size) at once; the future ends
    /// when it is committed or has failed.
    pub fn commit(&self, write: Write, bytes: usize) -> impl Future<Output = Committed> {
        let (reply, done) = oneshot::channel();
        let queued = self.queue.send(Queued { write, bytes, reply }).is_ok();
        async move {
            if !queued {
                return Committed::Unknown("the write queue has stopped".into());
            }
            done.await.unwrap_or_else(|_| Committed::Unknown("the write queue dropped the write".into()))
        }
    }
}

type WriteResult = Result<ClientWriteResponse<TypeConfig>, RaftError<NodeId, ClientWriteError<NodeId, Node>>>;

async fn run<F, Fut>(commit: F, mut rx: mpsc::UnboundedReceiver<Queued>, timeout: Duration)
where
    F: Fn(WriteBatch) -> Fut,
    Fut: Future<Output = WriteResult> + Send + 'static,
{
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    // A write too big to join the previous entry opens the next one.
    let mut carried: Option<Queued> = None;
    loop {
        let first = match carried.take() {
            Some(q) => q,
            None => match rx.recv().await {
                Some(q) => q,
                None => return,
            },
        };
        // Wait for a place in the pipeline first: what arrives meanwhile
        // joins this entry.
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let mut bytes = first.bytes;
        let mut queued = vec![first];
        while queued.len() < MAX_WRITES && bytes < MAX_BYTES {
            match rx.try_recv() {
                Ok(q) if bytes + q.bytes > MAX_BYTES => {
                    carried = Some(q);
                    break;
                }
                Ok(q) => {
                    bytes += q.bytes;
                    queued.push(q);
                }
                Err(_) => break,
            }
        }
        let (writes, replies): (Vec<Write>, Vec<oneshot::Sender<Committed>>) =
            queued.into_iter().map(|q| (q.write, q.reply)).unzip();
        let committing = commit(WriteBatch { writes, time_ms: bulwark_telemetry::clock::unix_ms() });
        tokio::spawn(answer(committing, replies, timeout, permit));
    }
}

/// Wait for one entry's commit and answer each of its writes.
async fn answer(
    committing: impl Future<Output = WriteResult>,
    replies: Vec<oneshot::Sender<Committed>>,
    timeout: Duration,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let n = replies.len();
    let result = tokio::time::timeout(timeout, committing).await;
    drop(permit);
    match result {
        Ok(Ok(resp)) if resp.data.len() == n => {
            for (reply, outcome) in replies.into_iter().zip(resp.data) {
                let _ = reply.send(Committed::Done { log_id: resp.log_id, outcome });
            }
        }
        Ok(Ok(resp)) => {
            let e = format!("entry {} applied {} of {n} writes", resp.log_id, resp.data.len());
            for reply in replies {
                let _ = reply.send(Committed::Unknown(e.clone()));
            }
        }
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
            for reply in replies {
                let _ = reply.send(Committed::NotPrimary);
            }
        }
        Ok(Err(e)) => {
            let e = e.to_string();
            for reply in replies {
                let _ = reply.send(Committed::Unknown(e.clone()));
            }
        }
        Err(_) => {
            for reply in replies {
                let _ = reply.send(Committed::Unknown(format!("not committed within {timeout:?}")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_db_api::api::{Statement, StatementResult};
    use openraft::CommittedLeaderId;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn write(n: u64) -> Write {
        Write { statements: vec![Statement::new(format!("INSERT INTO t VALUES ({n})"))], request_id: None }
    }

    /// A committer whose entries finish only when the test says so; it
    /// reports each entry's size and its release handle.
    /// An entry's statements and the handle that lets it finish.
    type Started = mpsc::UnboundedReceiver<(Vec<String>, oneshot::Sender<()>)>;

    fn held_committer(timeout: Duration) -> (GroupCommit, Started) {
        let (started_tx, started) = mpsc::unbounded_channel();
        let next = Arc::new(AtomicU64::new(1));
        let gc = GroupCommit::with_committer(
            move |batch: WriteBatch| {
                let (release, wait) = oneshot::channel();
                let index = next.fetch_add(1, Ordering::SeqCst);
                let sqls = batch.writes.iter().map(|w| w.statements[0].sql.clone()).collect();
                let _ = started_tx.send((sqls, release));
                async move {
                    let _ = wait.await;
                    let data = batch
                        .writes
                        .iter()
                        .map(|_| ApplyOutcome::Done(vec![StatementResult { rows_affected: 1, last_insert_id: 0 }]))
                        .collect();
                    Ok(ClientWriteResponse {
                        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
                        data,
                        membership: None,
                    })
                }
            },
            timeout,
        );
        (gc, started)
    }

    fn index_of(c: Committed) -> u64 {
        match c {
            Committed::Done { log_id, outcome: ApplyOutcome::Done(_) } => log_id.index,
            other => panic!("{other:?}"),
        }
    }

    type Pending = tokio::task::JoinHandle<Committed>;

    /// Fill the pipeline: MAX_IN_FLIGHT entries of one write each (writes
    /// 1..=MAX_IN_FLIGHT), each started before the next is queued.
    async fn fill(gc: &GroupCommit, started: &mut Started) -> Vec<(Pending, oneshot::Sender<()>)> {
        let mut held = Vec::new();
        for n in 1..=MAX_IN_FLIGHT as u64 {
            let w = tokio::spawn(gc.commit(write(n), 10));
            let (entry, release) = started.recv().await.unwrap();
            assert_eq!(entry.len(), 1, "a write on a pipeline with room leaves at once");
            held.push((w, release));
        }
        held
    }

    #[tokio::test]
    async fn writes_queued_behind_a_full_pipeline_leave_together_in_one_entry() {
        let (gc, mut started) = held_committer(Duration::from_secs(60));
        let mut held = fill(&gc, &mut started).await;
        let k = MAX_IN_FLIGHT as u64;
        // The pipeline is full: these five wait, and leave as one entry in
        // the order they came once an entry is done.
        let rest: Vec<_> = (k + 1..=k + 5).map(|n| tokio::spawn(gc.commit(write(n), 10))).collect();
        let (last, release) = held.pop().unwrap();
        release.send(()).unwrap();
        assert_eq!(index_of(last.await.unwrap()), k);
        let (entry, release) = started.recv().await.unwrap();
        assert_eq!(entry, (k + 1..=k + 5).map(|n| format!("INSERT INTO t VALUES ({n})")).collect::<Vec<_>>());
        release.send(()).unwrap();
        for w in rest {
            assert_eq!(index_of(w.await.unwrap()), k + 1);
        }
        for (i, (w, release)) in held.into_iter().enumerate() {
            release.send(()).unwrap();
            assert_eq!(index_of(w.await.unwrap()), i as u64 + 1);
        }
    }

    #[tokio::test]
    async fn an_entry_stops_at_the_byte_limit() {
        let (gc, mut started) = held_committer(Duration::from_secs(60));
        let mut held = fill(&gc, &mut started).await;
        let k = MAX_IN_FLIGHT as u64;
        // Waiting: two writes that fill an entry, then one that does not fit.
        let c = tokio::spawn(gc.commit(write(100), 10));
        let d = tokio::spawn(gc.commit(write(101), MAX_BYTES - 20));
        let e = tokio::spawn(gc.commit(write(102), 100));
        let (last, release) = held.pop().unwrap();
        release.send(()).unwrap();
        assert_eq!(index_of(last.await.unwrap()), k);
        let (entry, release) = started.recv().await.unwrap();
        assert_eq!(entry.len(), 2, "{entry:?}");
        release.send(()).unwrap();
        let (entry, release) = started.recv().await.unwrap();
        assert_eq!(entry, vec!["INSERT INTO t VALUES (102)".to_string()]);
        release.send(()).unwrap();
        assert_eq!(index_of(c.await.unwrap()), k + 1);
        assert_eq!(index_of(d.await.unwrap()), k + 1);
        assert_eq!(index_of(e.await.unwrap()), k + 2);
        for (w, release) in held {
            release.send(()).unwrap();
            index_of(w.await.unwrap());
        }
    }

    #[tokio::test]
    async fn entries_that_never_commit_end_unknown_and_free_their_place() {
        let (gc, mut started) = held_committer(Duration::from_millis(100));
        let held = fill(&gc, &mut started).await;
        let waiting = tokio::spawn(gc.commit(write(100), 10));
        for (stuck, _never) in held {
            assert!(matches!(stuck.await.unwrap(), Committed::Unknown(m) if m.contains("not committed")));
        }
        let (entry, release) = started.recv().await.unwrap();
        assert_eq!(entry.len(), 1);
        release.send(()).unwrap();
        assert_eq!(index_of(waiting.await.unwrap()), MAX_IN_FLIGHT as u64 + 1);
    }
}
