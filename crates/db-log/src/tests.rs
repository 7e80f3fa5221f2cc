//! Tests of the log: format, recovery, durability, import, and openraft's
//! storage suite.
use super::import::*;
use super::index::*;
use super::meta::*;
use super::record::*;
use super::segment::*;
use super::store::*;
use super::writer::*;
use crate::test_hooks::*;
use bulwark_db_api::raft_types::{Entry, LogId, NodeId, StorageError, TypeConfig, Vote};
use openraft::storage::RaftLogStorage;
use openraft::RaftLogReader;
use openraft::{CommittedLeaderId, EntryPayload};
use std::fmt::Debug;
use std::fs::OpenOptions;
use std::io;
use std::ops::RangeBounds;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

/// The node the logs of these tests belong to.
const ME: NodeId = 1;

fn id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn entry(term: u64, index: u64) -> Entry {
    Entry { log_id: id(term, index), payload: EntryPayload::Blank }
}

fn write(index: u64, sql: &str) -> Entry {
    let batch = bulwark_db_api::raft_types::WriteBatch {
        writes: vec![bulwark_db_api::raft_types::Write {
            statements: vec![bulwark_db_api::api::Statement::new(sql)],
            request_id: Some(format!("r{index}")),
        }],
        time_ms: 7,
    };
    Entry { log_id: id(1, index), payload: EntryPayload::Normal(batch) }
}

/// Segments of a few batches.
const TINY: u64 = 4 * PAGE;

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
    OpenOptions::new().write(true).open(&seg).unwrap().write_all_at(&[0xab; 100], loc.off + loc.len as u64).unwrap();
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
        c.execute(meta, rusqlite::params!["vote", serde_json::to_vec(&Vote::new_committed(4, 2)).unwrap()]).unwrap();
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
        c.execute("INSERT INTO log (idx, entry) VALUES (0, ?)", [serde_json::to_vec(&entry(1, 0)).unwrap()]).unwrap();
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
    use bulwark_db_sm::state_machine::StateMachine;
    use openraft::testing::{StoreBuilder, Suite};
    struct Builder;
    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
            let dir = tempfile::tempdir().unwrap();
            let log = LogStore::open(dir.path(), ME).unwrap();
            let sm = StateMachine::open_with(dir.path(), Default::default()).unwrap();
            Ok((dir, log, sm))
        }
    }
    Suite::test_all(Builder).unwrap();
}
