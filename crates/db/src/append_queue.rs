//! Append-entries arriving at a replica, handed to openraft in order, with
//! the ones that continue each other merged into one request.
//!
//! openraft 0.9 appends the entries of each append-entries request and
//! waits until they are synced before it takes the next request, so a
//! replica syncs once per request, one request after the other. The primary
//! sends several requests at once (its own, and those it sends ahead, see
//! `transport`), and they queued up behind each other's syncs. Here, one
//! task takes the requests in the order they arrived; while openraft
//! appends one, the next ones wait in the queue, and the task then merges
//! every queued request that starts where the previous one ended (same
//! vote, its `prev_log_id` the previous one's last entry) into one: one
//! append, one sync, for all of them. Such a merged request is exactly what
//! the primary could have sent as one, so openraft answers it as Raft
//! requires (the vote, `prev_log_id` and conflicts are checked as always),
//! and every request merged into it gets that answer: success means the
//! replica holds all their entries durably; a refusal (a higher vote, or no
//! `prev_log_id` of the first) would also have refused each of the later
//! ones, whose `prev_log_id` is among the refused entries. Requests that do
//! not continue the previous one (heartbeats, a repeat of earlier entries)
//! go alone, in their turn.
//!
//! Owns: the queue and its task. Must not touch: the HTTP layer, the log.
use bulwark_db_api::raft_types::{NodeId, Raft, TypeConfig};
use openraft::error::RaftError;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use tokio::sync::{mpsc, oneshot};

type Request = AppendEntriesRequest<TypeConfig>;
type Answer = Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>;

/// Most entries merged into one request (beyond it, the rest waits for the
/// next turn).
const MAX_MERGED_ENTRIES: usize = 4096;

/// The queue of a node's incoming append-entries (cheap to share).
#[derive(Clone)]
pub struct AppendQueue {
    queue: mpsc::UnboundedSender<(Request, oneshot::Sender<Answer>)>,
}

impl AppendQueue {
    /// Start the task that hands queued requests to `raft`.
    pub fn start(raft: Raft) -> AppendQueue {
        AppendQueue::with_appender(move |rpc| {
            let raft = raft.clone();
            async move { raft.append_entries(rpc).await }
        })
    }

    /// The same with any way of appending (tests).
    fn with_appender<F, Fut>(append: F) -> AppendQueue
    where
        F: Fn(Request) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Answer> + Send + 'static,
    {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(append, rx));
        AppendQueue { queue }
    }

    /// openraft's answer to `rpc`, merged with the requests queued around
    /// it when they continue each other.
    pub async fn append(&self, rpc: Request) -> Answer {
        let (tx, rx) = oneshot::channel();
        if self.queue.send((rpc, tx)).is_err() {
            return Err(RaftError::Fatal(openraft::error::Fatal::Stopped));
        }
        rx.await.unwrap_or(Err(RaftError::Fatal(openraft::error::Fatal::Stopped)))
    }
}

/// The same answer again (openraft's response type is not `Clone`).
// openraft's own error type, passed through as openraft returned it.
#[allow(clippy::result_large_err)]
fn copy(a: &Answer) -> Answer {
    match a {
        Ok(AppendEntriesResponse::Success) => Ok(AppendEntriesResponse::Success),
        Ok(AppendEntriesResponse::PartialSuccess(m)) => Ok(AppendEntriesResponse::PartialSuccess(*m)),
        Ok(AppendEntriesResponse::Conflict) => Ok(AppendEntriesResponse::Conflict),
        Ok(AppendEntriesResponse::HigherVote(v)) => Ok(AppendEntriesResponse::HigherVote(*v)),
        Err(e) => Err(e.clone()),
    }
}

/// Does `next` start right where `rpc` ends, under the same vote?
fn continues(rpc: &Request, next: &Request) -> bool {
    let end = rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id);
    !rpc.entries.is_empty()
        && !next.entries.is_empty()
        && next.vote == rpc.vote
        && next.prev_log_id == end
        && rpc.entries.len() + next.entries.len() <= MAX_MERGED_ENTRIES
}

async fn run<F, Fut>(append: F, mut rx: mpsc::UnboundedReceiver<(Request, oneshot::Sender<Answer>)>)
where
    F: Fn(Request) -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    let mut carried: Option<(Request, oneshot::Sender<Answer>)> = None;
    loop {
        let (mut rpc, first) = match carried.take() {
            Some(x) => x,
            None => match rx.recv().await {
                Some(x) => x,
                None => return,
            },
        };
        let mut waiting = vec![first];
        while let Ok((next, tx)) = rx.try_recv() {
            if !continues(&rpc, &next) {
                carried = Some((next, tx));
                break;
            }
            rpc.entries.extend(next.entries);
            rpc.leader_commit = rpc.leader_commit.max(next.leader_commit);
            waiting.push(tx);
        }
        let answer = append(rpc).await;
        for tx in waiting {
            let _ = tx.send(copy(&answer));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_db_api::raft_types::{Entry, LogId, Vote};
    use openraft::{CommittedLeaderId, EntryPayload};
    use std::sync::{Arc, Mutex};

    fn id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    fn rpc(prev: u64, entries: std::ops::RangeInclusive<u64>, commit: Option<u64>) -> Request {
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: Some(id(prev)),
            entries: entries.map(|i| Entry { log_id: id(i), payload: EntryPayload::Blank }).collect(),
            leader_commit: commit.map(id),
        }
    }

    /// Requests queued while the first one is being appended are merged
    /// when they chain, and each gets the merged request's answer; a
    /// request that does not chain goes alone, in its turn.
    #[tokio::test]
    async fn chained_requests_queued_behind_an_append_are_merged() {
        // Per append: prev index, entry indexes, commit index.
        type Seen = Vec<(Option<u64>, Vec<u64>, Option<u64>)>;
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let (release_tx, release_rx) = tokio::sync::watch::channel(false);
        let log = seen.clone();
        let q = AppendQueue::with_appender(move |r: Request| {
            let log = log.clone();
            let mut release = release_rx.clone();
            async move {
                let first = log.lock().unwrap().is_empty();
                log.lock().unwrap().push((
                    r.prev_log_id.map(|l| l.index),
                    r.entries.iter().map(|e| e.log_id.index).collect(),
                    r.leader_commit.map(|l| l.index),
                ));
                if first {
                    // Hold the first append until the others are queued.
                    let _ = release.wait_for(|r| *r).await;
                }
                if r.prev_log_id == Some(id(9)) {
                    Ok(AppendEntriesResponse::Conflict)
                } else {
                    Ok(AppendEntriesResponse::Success)
                }
            }
        });
        let a = tokio::spawn({
            let q = q.clone();
            async move { q.append(rpc(0, 1..=2, None)).await }
        });
        while seen.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        let mut rest = Vec::new();
        for r in [rpc(2, 3..=3, Some(1)), rpc(3, 4..=5, Some(2)), rpc(9, 10..=10, None), rpc(10, 11..=11, None)] {
            let q = q.clone();
            rest.push(tokio::spawn(async move { q.append(r).await }));
            tokio::task::yield_now().await;
        }
        release_tx.send(true).unwrap();
        assert_eq!(a.await.unwrap().unwrap(), AppendEntriesResponse::Success);
        let mut answers = Vec::new();
        for r in rest {
            answers.push(r.await.unwrap().unwrap());
        }
        assert_eq!(
            answers,
            vec![
                AppendEntriesResponse::Success,
                AppendEntriesResponse::Success,
                AppendEntriesResponse::Conflict,
                AppendEntriesResponse::Conflict
            ]
        );
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                (Some(0), vec![1, 2], None),
                // 3 and 4-5 chain: one append, the newer commit index.
                (Some(2), vec![3, 4, 5], Some(2)),
                // 10 does not follow 5: alone; 11 follows 10: merged into it.
                (Some(9), vec![10, 11], None),
            ]
        );
    }

    #[test]
    fn only_requests_with_entries_under_the_same_vote_chain() {
        assert!(continues(&rpc(0, 1..=2, None), &rpc(2, 3..=3, None)));
        assert!(!continues(&rpc(0, 1..=2, None), &rpc(1, 2..=3, None)), "overlapping");
        let mut heartbeat = rpc(2, 3..=3, None);
        heartbeat.entries.clear();
        assert!(!continues(&rpc(0, 1..=2, None), &heartbeat), "a heartbeat");
        let mut other = rpc(2, 3..=3, None);
        other.vote = Vote::new_committed(2, 2);
        assert!(!continues(&rpc(0, 1..=2, None), &other), "another leader");
    }
}
