//! openraft's storage traits over [`LogStore`].
use super::index::lock;
use super::reader::LogReader;
use super::record::{put_record, KIND_TRUNCATE};
use super::store::LogStore;
use super::writer::{Done, Op, Rec, RecKind};
use bulwark_db_api::raft_types::{storage_err, Entry, LogId, StorageError, TypeConfig, Vote};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{ErrorVerb, LogState, RaftLogReader};
use std::fmt::Debug;
use std::ops::RangeBounds;

impl LogStore {
    fn reader(&self) -> LogReader {
        LogReader { shared: self.shared.clone() }
    }
}

/// openraft's storage must read too (a supertrait): it reads through a
/// [`LogReader`], so there is one reading path.
impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.reader().try_get_log_entries(range).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        Ok(LogState { last_purged_log_id: self.state.purged, last_log_id: self.state.last })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        self.reader()
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
        let Some(log_id) = self.purge_allowed(log_id) else { return Ok(()) };
        tracing::debug!(%log_id, "purging the log");
        lock(&self.shared.recent).entries.retain(|i, _| *i > log_id.index);
        self.state.purged = Some(log_id);
        self.state.last = self.state.last.max(Some(log_id));
        let meta = self.meta();
        self.wait(ErrorVerb::Write, |done| Op::Meta { meta, purge: Some(log_id.index), done }).await
    }
}
