//! The files of the log archive (see `archive` in `bulwark-db`): committed log entries,
//! each with its log id, the primary's clock and a checksum, read back by
//! a point-in-time restore (`replay`).
//!
//! # On disk
//!
//! `<first index, 20 digits>.bwarc` files, in the order of their names:
//! an 8-byte header (`BWARCHV1`), then records back to back:
//! `len: u32 LE | crc32: u32 LE | index: u64 LE | term: u64 LE |
//! node id: u64 LE | time_ms: u64 LE | entry`, the CRC over `len` and
//! everything after it, `entry` the log entry as JSON (the encoding of the
//! Raft log's segments). `time_ms` is the primary's clock (Unix ms) stored
//! in the entry, the "now" SQLite saw when it was applied; 0 for an entry
//! without writes (a blank or membership entry). A file holds consecutive
//! indexes; where the archive has a gap (entries this node never had in
//! its log, see `archive`), the next file starts after it. A record cut
//! short or failing its checksum ends its file: the writer cuts the last
//! file there when it opens the archive (a write torn by a crash, never
//! counted as archived), and a restore refuses damage anywhere else.
use bulwark_db_api::raft_types::Entry;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Extension of an archive file.
pub const EXT: &str = "bwarc";
const MAGIC: &[u8; 8] = b"BWARCHV1";
/// Size of the file header.
pub const HEADER: u64 = MAGIC.len() as u64;
/// Length and checksum.
const REC_HEAD: usize = 8;
/// Index, term, node id, time.
const BODY_HEAD: usize = 32;
/// Largest record accepted when reading (a larger length is damage).
const MAX_RECORD: u32 = 1 << 30;

/// One archived entry.
#[derive(Debug, Clone)]
pub struct Archived {
    pub index: u64,
    pub time_ms: u64,
    pub entry: Entry,
}

/// What reading one file found.
pub struct FileContents {
    /// The good records, in order.
    pub records: Vec<Archived>,
    /// Bytes of the header and the good records.
    pub good_len: u64,
    /// Bytes after them (a torn or damaged record), 0 when none.
    pub bad_bytes: u64,
}

/// The name of the file whose first entry is at index `first`.
pub fn file_name(first: u64) -> String {
    format!("{first:020}.{EXT}")
}

/// The primary's clock stored in `e` (0 for an entry without writes).
pub fn entry_time_ms(e: &Entry) -> u64 {
    match &e.payload {
        openraft::EntryPayload::Normal(batch) => batch.time_ms,
        _ => 0,
    }
}

/// The header every file starts with.
pub fn header() -> &'static [u8] {
    MAGIC
}

/// Append the record of `e` to `buf`.
pub fn encode(buf: &mut Vec<u8>, e: &Entry) -> io::Result<()> {
    let start = buf.len();
    buf.extend_from_slice(&[0; REC_HEAD]);
    buf.extend_from_slice(&e.log_id.index.to_le_bytes());
    buf.extend_from_slice(&e.log_id.leader_id.term.to_le_bytes());
    buf.extend_from_slice(&e.log_id.leader_id.node_id.to_le_bytes());
    buf.extend_from_slice(&entry_time_ms(e).to_le_bytes());
    if let Err(err) = serde_json::to_writer(&mut *buf, e) {
        buf.truncate(start);
        return Err(io::Error::other(err));
    }
    let len = u32::try_from(buf.len() - start - REC_HEAD)
        .ok()
        .filter(|l| *l <= MAX_RECORD)
        .ok_or_else(|| io::Error::other("log entry over 1 GiB"))?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len.to_le_bytes());
    crc.update(&buf[start + REC_HEAD..]);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.finalize().to_le_bytes());
    Ok(())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Decode the record at the start of `b`: the entry and the record's size,
/// or `None` when it is cut short or damaged.
fn decode(b: &[u8]) -> Option<(Archived, usize)> {
    let len = u32::from_le_bytes(b.get(0..4)?.try_into().ok()?);
    let crc = u32::from_le_bytes(b.get(4..8)?.try_into().ok()?);
    if len > MAX_RECORD || (len as usize) < BODY_HEAD {
        return None;
    }
    let body = b.get(REC_HEAD..REC_HEAD + len as usize)?;
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(body);
    if h.finalize() != crc {
        return None;
    }
    let entry: Entry = serde_json::from_slice(&body[BODY_HEAD..]).ok()?;
    let (index, term) = (u64_at(body, 0), u64_at(body, 8));
    if entry.log_id.index != index || entry.log_id.leader_id.term != term {
        return None;
    }
    Some((Archived { index, time_ms: u64_at(body, 24), entry }, REC_HEAD + len as usize))
}

/// Read the archive file `path` whole (files are rolled at a few MiB).
pub fn read_file(path: &Path) -> io::Result<FileContents> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Ok(FileContents { records: Vec::new(), good_len: 0, bad_bytes: bytes.len() as u64 });
    }
    let mut at = MAGIC.len();
    let mut records = Vec::new();
    while at < bytes.len() {
        match decode(&bytes[at..]) {
            Some((rec, size)) => {
                records.push(rec);
                at += size;
            }
            None => break,
        }
    }
    Ok(FileContents { records, good_len: at as u64, bad_bytes: (bytes.len() - at) as u64 })
}

/// The archive files in `dir` with the first index their name gives, in
/// order (none when `dir` does not exist).
pub fn list(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for e in entries {
        let path = e?.path();
        let first = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(&format!(".{EXT}")))
            .filter(|n| n.len() == 20)
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(first) = first {
            out.push((first, path));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_db_api::raft_types::{Write, WriteBatch};
    use bulwark_db_api::Statement;

    fn entry(index: u64, time_ms: u64) -> Entry {
        let batch = WriteBatch {
            writes: vec![Write { statements: vec![Statement::new("INSERT INTO t VALUES (1)")], request_id: None }],
            time_ms,
        };
        Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(3, 1), index),
            payload: openraft::EntryPayload::Normal(batch),
        }
    }

    #[test]
    fn records_round_trip_and_a_torn_or_damaged_tail_ends_the_file() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join(file_name(7));
        let mut buf = header().to_vec();
        encode(&mut buf, &entry(7, 1000)).unwrap();
        encode(&mut buf, &entry(8, 2000)).unwrap();
        let good = buf.len();
        encode(&mut buf, &entry(9, 3000)).unwrap();
        // Cut short.
        std::fs::write(&path, &buf[..buf.len() - 3]).unwrap();
        let c = read_file(&path).unwrap();
        assert_eq!(c.records.iter().map(|r| (r.index, r.time_ms)).collect::<Vec<_>>(), [(7, 1000), (8, 2000)]);
        assert_eq!(c.good_len, good as u64);
        assert!(c.bad_bytes > 0);
        assert_eq!(c.records[1].entry, entry(8, 2000));
        // A flipped bit.
        let mut bad = buf.clone();
        bad[good + 20] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        assert_eq!(read_file(&path).unwrap().records.len(), 2);
        std::fs::write(&path, &buf).unwrap();
        let c = read_file(&path).unwrap();
        assert_eq!((c.records.len(), c.bad_bytes), (3, 0));
        std::fs::write(d.path().join("notes.txt"), b"x").unwrap();
        assert_eq!(list(d.path()).unwrap(), vec![(7, path)]);
    }
}
