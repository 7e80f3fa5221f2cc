//! The record format of the segments.
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
//! data. That is faster than an append into `posix_fallocate`d space (ext4
//! must convert those "unwritten" blocks on the first write, a metadata
//! update) or into a growing file (figures: docs/BENCHMARKS.md). Once the active
//! segment is half full the next one is made as `<seq>.seg.spare` on a
//! thread of its own and renamed when needed, so the writer does not wait
//! for the zeros; a spare left over is deleted on open. The bytes after
//! the last record read as zeros, which end the replay. Every open starts a new segment (writes never resume after a
//! point recovery stopped at) and cuts the previous last one at its last
//! good record. A purge deletes the oldest segments whose entries are all
//! purged (only a prefix, so a truncate record is never lost while an entry
//! it removed is still on disk).
use super::index::Loc;
use bulwark_db_api::raft_types::Entry;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

pub(super) const MAGIC: &[u8; 8] = b"BWRAFTLG";
/// Written in new segments: batches start on a page boundary (see the
/// module doc, "On disk"). Version 1 segments (records back to back from the header
/// on) are still read.
pub(super) const VERSION: u32 = 2;
pub(super) const VERSION_UNALIGNED: u32 = 1;
/// Segment header: magic, version, reserved.
pub(super) const HEADER: u64 = 16;
/// The unit a power loss may tear: each synced batch ends on a multiple of
/// it, and a version 2 segment's first record starts at it (the header's
/// page is never written again).
pub(super) const PAGE: u64 = 4096;
/// Record header: length, crc.
pub(super) const REC_HEADER: usize = 8;
/// Largest record accepted on replay (a larger length is damage).
pub(super) const MAX_RECORD: u32 = 1 << 30;
pub(super) const KIND_ENTRY: u8 = 1;
pub(super) const KIND_TRUNCATE: u8 = 2;
/// Fills a batch up to the next page boundary; replay skips it.
pub(super) const KIND_PADDING: u8 = 3;
/// The smallest record: header, kind, index.
pub(super) const MIN_RECORD: u64 = REC_HEADER as u64 + 1 + 8;
/// kind, index, term, node id.
pub(super) const ENTRY_HEAD: usize = 1 + 8 + 8 + 8;

pub(super) fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Append a record (header filled in) to `buf`; returns its offset and length.
pub(super) fn put_record(
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
pub(super) fn padding_for(len: u64) -> u64 {
    match (PAGE - len % PAGE) % PAGE {
        0 => 0,
        pad if pad < MIN_RECORD => pad + PAGE,
        pad => pad,
    }
}

/// Append a padding record of `pad` bytes (from [`padding_for`]) to `buf`.
pub(super) fn put_padding(buf: &mut Vec<u8>, pad: u64) -> io::Result<()> {
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

pub(super) fn put_entry(buf: &mut Vec<u8>, e: &Entry) -> io::Result<(usize, usize)> {
    put_record(buf, KIND_ENTRY, e.log_id.index, |b| {
        b.extend_from_slice(&e.log_id.leader_id.term.to_le_bytes());
        b.extend_from_slice(&e.log_id.leader_id.node_id.to_le_bytes());
        serde_json::to_writer(b, e).map_err(io::Error::other)
    })
}

/// Check a whole record (header included) and return its payload.
pub(super) fn check_record(rec: &[u8]) -> Option<&[u8]> {
    let len = u32::from_le_bytes(rec.get(0..4)?.try_into().ok()?);
    let crc = u32::from_le_bytes(rec.get(4..8)?.try_into().ok()?);
    let payload = rec.get(REC_HEADER..REC_HEADER + len as usize)?;
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(payload);
    (h.finalize() == crc && !payload.is_empty()).then_some(payload)
}

pub(super) fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

pub(super) fn read_entry(file: &File, loc: &Loc) -> io::Result<Entry> {
    let mut rec = vec![0; loc.len as usize];
    file.read_exact_at(&mut rec, loc.off)?;
    let p = check_record(&rec)
        .filter(|p| p.len() >= ENTRY_HEAD && p[0] == KIND_ENTRY)
        .ok_or_else(|| invalid(format!("raft log segment {}: damaged record at offset {}", loc.seg, loc.off)))?;
    serde_json::from_slice(&p[ENTRY_HEAD..]).map_err(|e| invalid(format!("raft log entry {}: {e}", loc.log_id)))
}
