//! Replaying the segments when the log is opened.
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
use super::index::{Loc, Locs, Segment};
use super::meta::{read_meta, Meta, META_TMP};
use super::record::{
    check_record, invalid, u64_at, ENTRY_HEAD, HEADER, KIND_ENTRY, KIND_PADDING, KIND_TRUNCATE, MAGIC, MAX_RECORD,
    PAGE, REC_HEADER, VERSION, VERSION_UNALIGNED,
};
use super::segment::seg_name;
use bulwark_db_api::raft_types::LogId;
use std::collections::BTreeMap;
use std::fs::File;
use std::fs::OpenOptions;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

/// Read as much of `buf` as the file has; returns the bytes read.
pub(super) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
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
pub(super) fn replay(file: &File, seq: u64, locs: &mut Locs, last: bool) -> io::Result<Option<(u64, Option<u64>)>> {
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

/// What the files of a log hold, read back when it is opened.
pub(super) struct Recovered {
    pub(super) meta: Meta,
    /// Where each entry after the purge point is.
    pub(super) locs: Locs,
    pub(super) segs: BTreeMap<u64, Segment>,
    /// The number of the segment to write in next (every open starts one).
    pub(super) next_seq: u64,
}

/// Read the log directory `path` (locked by the caller): drop what a crash
/// left unused (`meta.tmp`, spare segments, a segment whose header was
/// never written), replay every segment, and cut the last one at its last
/// good record.
pub(super) fn recover(path: &Path) -> io::Result<Recovered> {
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
    let next_seq = seqs.last().map_or(1, |s| s + 1);
    Ok(Recovered { meta, locs, segs, next_seq })
}
