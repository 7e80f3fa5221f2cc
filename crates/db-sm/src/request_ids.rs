//! The request ids of applied writes (`_bulwark_requests`): a write whose
//! id was already applied does not run again and answers the first outcome.
//!
//! # The dedup window
//!
//! An id is remembered while either holds:
//!
//! - its write is younger than [`REQUEST_ID_RETENTION_MS`] (an hour) by the
//!   clock of the primary that writes the pruning entry, or
//! - its write is in the last [`KEEP_IDS_OF_LAST_ENTRIES`] log entries.
//!
//! So a retry that reaches the log within an hour of its first attempt (as
//! the primaries' clocks tell it) or within that many entries of it is
//! answered the first outcome and never applied twice. The second rule
//! needs no clock: a primary whose clock is ahead (by an hour, say, or
//! after a jump) would otherwise prune ids that are only seconds old, and
//! a client retrying through the failover to it could apply its write
//! twice. One entry carries one to `MAX_WRITES` (the
//! node's group commit) writes, and a primary
//! makes at most a few thousand entries a second, so the last million
//! entries span minutes at full load and days at light load: well past
//! the retries of `db::Client` (10 s by default). Under full load the hour
//! rule keeps more ids than the entry rule, so the entry rule costs
//! nothing there; at light load it keeps ids of at most a million entries.
//!
//! Pruning runs at the same log entries on every node (every
//! [`PRUNE_EVERY`]th index) and depends only on the log, so every node's
//! table stays identical.
use crate::bulwark_tables::json_err;
use bulwark_db_api::api::REQUEST_ID_RETENTION_MS;
use bulwark_db_api::raft_types::{ApplyOutcome, LogId};
use rusqlite::{Connection, OptionalExtension};

/// Forget old request ids at the log entries whose index is a multiple of
/// this.
pub(crate) const PRUNE_EVERY: u64 = 256;

/// Every id of this many of the newest log entries is kept, whatever the
/// clocks say (see the module doc).
pub(crate) const KEEP_IDS_OF_LAST_ENTRIES: u64 = 1_000_000;

/// The stored outcome of an earlier write with this request id, if any.
pub(crate) fn earlier_request(c: &Connection, id: &str) -> rusqlite::Result<Option<ApplyOutcome>> {
    let row: Option<(u64, u64, String)> = c
        .prepare_cached("SELECT term, idx, outcome FROM _bulwark_requests WHERE id = ?")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    row.map(|(term, index, outcome)| {
        let first: ApplyOutcome = serde_json::from_str(&outcome).map_err(json_err)?;
        Ok(ApplyOutcome::Replayed { term, index, first: Box::new(first) })
    })
    .transpose()
}

/// Remember that the write with request id `id` had `outcome`, applied at
/// `log_id` with the primary's clock `time_ms`.
pub(crate) fn remember_request(
    c: &Connection,
    id: &str,
    log_id: &LogId,
    time_ms: u64,
    outcome: &ApplyOutcome,
) -> rusqlite::Result<()> {
    let s = serde_json::to_string(outcome).map_err(json_err)?;
    c.prepare_cached("INSERT INTO _bulwark_requests (id, term, idx, time_ms, outcome) VALUES (?, ?, ?, ?, ?)")?
        .execute(rusqlite::params![id, log_id.leader_id.term, log_id.index, time_ms, s])?;
    Ok(())
}

/// Before applying the entry at `index` stamped `time_ms`: forget the ids
/// outside the window (see the module doc), if this entry is one that
/// prunes. Ids are appended in order of application (`seq`), so of log
/// index, and nearly of time: everything before the first id still in the
/// window goes (an id after it that is older, from a primary whose clock
/// was behind the previous one's, is kept a little longer).
pub(crate) fn prune_before(c: &Connection, index: u64, time_ms: u64) -> rusqlite::Result<()> {
    if !index.is_multiple_of(PRUNE_EVERY) {
        return Ok(());
    }
    let oldest_time = time_ms.saturating_sub(REQUEST_ID_RETENTION_MS);
    let oldest_index = index.saturating_sub(KEEP_IDS_OF_LAST_ENTRIES);
    c.prepare_cached(
        "DELETE FROM _bulwark_requests WHERE seq < coalesce(
             (SELECT seq FROM _bulwark_requests WHERE time_ms >= ?1 OR idx > ?2 ORDER BY seq LIMIT 1),
             (SELECT max(seq) + 1 FROM _bulwark_requests))",
    )?
    .execute(rusqlite::params![oldest_time, oldest_index])?;
    Ok(())
}
