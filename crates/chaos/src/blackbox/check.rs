//! The end checks, on what the writers recorded and what every node's
//! table holds after the cluster has healed and settled:
//!
//! - every acknowledged write is on every node, once, with the row id the
//!   acknowledgement gave (else `lost` / `changed`);
//! - no write is applied twice: no `(writer, seq)` in two rows (`duplicate`);
//! - no row that no writer wrote, and no refused write (`phantom`);
//! - every node holds the same rows (`diverged`, with the rows that differ);
//! - every strong read after an ack saw the row (`stale read`);
//! - writes whose outcome stayed unknown may be there or not, at most once
//!   (counted, and covered by `duplicate`).
//!
//! Pure functions on plain data, so the checks themselves are tested.
use super::writer::{Outcome, WriteRecord};
use super::TableError;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

/// One row of the checker's table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Row {
    pub id: i64,
    pub writer: u32,
    pub seq: u64,
    pub request_id: String,
}

/// One node's table as read at the end (or why it could not be read).
#[derive(Debug, Clone)]
pub struct NodeTable {
    pub node: u64,
    pub rows: Result<Vec<Row>, TableError>,
}

/// How many examples of each kind of violation the verdict shows.
const EXAMPLES: usize = 10;

/// The verdict: counts, and every violation by kind with examples.
#[derive(Debug, Default)]
pub struct Verdict {
    pub attempted: usize,
    pub acked: usize,
    pub replayed: usize,
    pub refused: usize,
    pub unknown: usize,
    pub unknown_present: usize,
    pub strong_reads_ok: u64,
    pub strong_reads_undecided: u64,
    pub rows_per_node: Vec<(u64, Option<usize>)>,
    /// kind -> (count, examples)
    pub violations: BTreeMap<&'static str, (usize, Vec<String>)>,
    /// Things that stopped the run from checking everything (a node that
    /// would not start or be read, no convergence, no recovery).
    pub problems: Vec<String>,
}

impl Verdict {
    fn violation(&mut self, kind: &'static str, what: String) {
        let e = self.violations.entry(kind).or_default();
        e.0 += 1;
        if e.1.len() < EXAMPLES {
            e.1.push(what);
        }
    }

    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.problems.is_empty()
    }

    /// The printed verdict.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "writes: {} attempted, {} acknowledged ({} of them answered from the stored outcome of an earlier attempt), {} refused, {} unknown ({} of those applied)",
            self.attempted, self.acked, self.replayed, self.refused, self.unknown, self.unknown_present
        );
        let _ = writeln!(
            s,
            "strong reads after an ack: {} saw the row, {} got no answer in time",
            self.strong_reads_ok, self.strong_reads_undecided
        );
        let rows: Vec<String> = self
            .rows_per_node
            .iter()
            .map(|(n, r)| format!("node {n}: {}", r.map_or("unreadable".to_string(), |r| r.to_string())))
            .collect();
        let _ = writeln!(s, "rows: {}", rows.join(", "));
        for p in &self.problems {
            let _ = writeln!(s, "PROBLEM: {p}");
        }
        for (kind, (n, examples)) in &self.violations {
            let _ = writeln!(s, "VIOLATION {kind}: {n}");
            for e in examples {
                let _ = writeln!(s, "  - {e}");
            }
            if *n > examples.len() {
                let _ = writeln!(s, "  - ... and {} more", n - examples.len());
            }
        }
        let _ = writeln!(
            s,
            "verdict: {}",
            if self.passed() {
                "PASS: nothing acknowledged is missing, nothing applied twice, every node identical".to_string()
            } else {
                format!(
                    "FAIL ({} violations, {} problems)",
                    self.violations.values().map(|v| v.0).sum::<usize>(),
                    self.problems.len()
                )
            }
        );
        s
    }
}

/// Check the writers' record against the nodes' tables.
pub fn check(writes: &[WriteRecord], tables: &[NodeTable], stale_reads: &[String]) -> Verdict {
    let mut v = Verdict { attempted: writes.len(), ..Default::default() };
    let by_key: HashMap<(u32, u64), &WriteRecord> = writes.iter().map(|w| ((w.writer, w.seq), w)).collect();
    for w in writes {
        match &w.outcome {
            Outcome::Acked { replayed, .. } => {
                v.acked += 1;
                v.replayed += usize::from(*replayed);
            }
            Outcome::Refused(_) => v.refused += 1,
            Outcome::Unknown => v.unknown += 1,
        }
    }
    for s in stale_reads {
        v.violation("stale read (an acknowledged write not seen by a strong read)", s.clone());
    }
    let mut readable: Vec<(u64, &Vec<Row>)> = Vec::new();
    for t in tables {
        match &t.rows {
            Ok(rows) => {
                v.rows_per_node.push((t.node, Some(rows.len())));
                readable.push((t.node, rows));
            }
            Err(e) => {
                v.rows_per_node.push((t.node, None));
                v.problems.push(format!("node {}'s table could not be read: {e}", t.node));
            }
        }
    }
    for (node, rows) in &readable {
        let mut on_node: HashMap<(u32, u64), Vec<&Row>> = HashMap::new();
        for r in rows.iter() {
            on_node.entry((r.writer, r.seq)).or_default().push(r);
        }
        for w in writes {
            let found = on_node.get(&(w.writer, w.seq)).map(Vec::as_slice).unwrap_or(&[]);
            match (&w.outcome, found) {
                (Outcome::Acked { id, term, index, .. }, []) => v.violation(
                    "lost (acknowledged, missing)",
                    format!("node {node}: write {} acknowledged as id {id} at {term}.{index} is missing", w.request_id),
                ),
                (Outcome::Acked { id, term, index, .. }, [r]) if r.id != *id => v.violation(
                    "changed (acknowledged with another row id)",
                    format!(
                        "node {node}: write {} acknowledged as id {id} at {term}.{index} is row id {}",
                        w.request_id, r.id
                    ),
                ),
                (Outcome::Refused(why), [r, ..]) => v.violation(
                    "phantom (a refused write applied)",
                    format!("node {node}: write {} was refused ({why}) but is row id {}", w.request_id, r.id),
                ),
                _ => {}
            }
        }
        for ((writer, seq), found) in &on_node {
            if found.len() > 1 {
                let ids: Vec<i64> = found.iter().map(|r| r.id).collect();
                v.violation(
                    "duplicate (applied more than once)",
                    format!("node {node}: writer {writer} seq {seq} is in {} rows, ids {ids:?}", found.len()),
                );
            }
            match by_key.get(&(*writer, *seq)) {
                None => v.violation(
                    "phantom (a row nobody wrote)",
                    format!("node {node}: row {:?} matches no write", found[0]),
                ),
                Some(w) if found.iter().any(|r| r.request_id != w.request_id) => v.violation(
                    "phantom (a row nobody wrote)",
                    format!("node {node}: row {:?} does not carry its write's request id {}", found[0], w.request_id),
                ),
                Some(_) => {}
            }
        }
    }
    // Unknown writes applied, as the first readable node has them.
    if let Some((_, rows)) = readable.first() {
        let present: BTreeSet<(u32, u64)> = rows.iter().map(|r| (r.writer, r.seq)).collect();
        v.unknown_present =
            writes.iter().filter(|w| w.outcome == Outcome::Unknown && present.contains(&(w.writer, w.seq))).count();
    }
    diverged(&mut v, &readable);
    v
}

/// Every row id that not every node holds identically.
fn diverged(v: &mut Verdict, readable: &[(u64, &Vec<Row>)]) {
    if readable.len() < 2 {
        return;
    }
    let mut by_id: BTreeMap<i64, BTreeMap<&Row, Vec<u64>>> = BTreeMap::new();
    for (node, rows) in readable {
        for r in rows.iter() {
            by_id.entry(r.id).or_default().entry(r).or_default().push(*node);
        }
    }
    let all: Vec<u64> = readable.iter().map(|(n, _)| *n).collect();
    for (id, versions) in by_id {
        let same = versions.len() == 1 && versions.values().next().is_some_and(|nodes| nodes.len() == all.len());
        if same {
            continue;
        }
        let mut parts: Vec<String> = versions
            .iter()
            .map(|(r, nodes)| format!("nodes {nodes:?} have (writer {}, seq {}, {})", r.writer, r.seq, r.request_id))
            .collect();
        let holding: BTreeSet<u64> = versions.values().flatten().copied().collect();
        let missing: Vec<u64> = all.iter().copied().filter(|n| !holding.contains(n)).collect();
        if !missing.is_empty() {
            parts.push(format!("nodes {missing:?} have no row"));
        }
        v.violation("diverged (nodes differ)", format!("row id {id}: {}", parts.join("; ")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(writer: u32, seq: u64, outcome: Outcome) -> WriteRecord {
        WriteRecord {
            writer,
            seq,
            request_id: format!("r-w{writer}-{seq}"),
            outcome,
            attempts: 1,
            started: 0.0,
            ended: 0.0,
        }
    }

    fn acked(id: i64) -> Outcome {
        Outcome::Acked { id, term: 1, index: id as u64, replayed: false }
    }

    fn row(id: i64, writer: u32, seq: u64) -> Row {
        Row { id, writer, seq, request_id: format!("r-w{writer}-{seq}") }
    }

    fn tables(per_node: &[Vec<Row>]) -> Vec<NodeTable> {
        per_node.iter().enumerate().map(|(i, rows)| NodeTable { node: i as u64 + 1, rows: Ok(rows.clone()) }).collect()
    }

    fn kinds(v: &Verdict) -> Vec<&'static str> {
        v.violations.keys().copied().collect()
    }

    #[test]
    fn identical_complete_tables_pass() {
        let writes = [write(0, 0, acked(1)), write(1, 0, acked(2)), write(0, 1, Outcome::Unknown)];
        let rows = vec![row(1, 0, 0), row(2, 1, 0), row(3, 0, 1)];
        let v = check(&writes, &tables(&[rows.clone(), rows.clone(), rows]), &[]);
        assert!(v.passed(), "{}", v.render());
        assert_eq!((v.acked, v.unknown, v.unknown_present), (2, 1, 1));
    }

    #[test]
    fn an_acknowledged_write_missing_on_one_node_is_lost_and_diverged() {
        let writes = [write(0, 0, acked(1)), write(0, 1, acked(2))];
        let full = vec![row(1, 0, 0), row(2, 0, 1)];
        let v = check(&writes, &tables(&[full.clone(), vec![row(1, 0, 0)], full]), &[]);
        assert_eq!(kinds(&v), ["diverged (nodes differ)", "lost (acknowledged, missing)"]);
        let text = v.render();
        assert!(text.contains("node 2: write r-w0-1 acknowledged as id 2 at 1.2 is missing"), "{text}");
        assert!(
            text.contains("row id 2: nodes [1, 3] have (writer 0, seq 1, r-w0-1); nodes [2] have no row"),
            "{text}"
        );
        assert!(text.contains("verdict: FAIL"), "{text}");
    }

    #[test]
    fn the_same_index_with_other_content_is_reported_per_node() {
        // The shape of a diverged log: index 2 holds W1 on one node and W2
        // on the others, and W1 was acknowledged first.
        let writes = [write(0, 0, acked(1)), write(0, 1, acked(2)), write(1, 0, acked(2))];
        let a = vec![row(1, 0, 0), row(2, 0, 1)];
        let b = vec![row(1, 0, 0), row(2, 1, 0)];
        let v = check(&writes, &tables(&[a, b.clone(), b]), &[]);
        assert!(kinds(&v).contains(&"diverged (nodes differ)"), "{}", v.render());
        assert!(kinds(&v).contains(&"lost (acknowledged, missing)"), "{}", v.render());
        assert!(v.render().contains("nodes [1] have (writer 0, seq 1, r-w0-1)"), "{}", v.render());
    }

    #[test]
    fn a_write_applied_twice_is_a_duplicate() {
        let writes = [write(0, 0, Outcome::Unknown)];
        let rows = vec![row(1, 0, 0), row(2, 0, 0)];
        let v = check(&writes, &tables(&[rows.clone(), rows.clone(), rows]), &[]);
        assert_eq!(kinds(&v), ["duplicate (applied more than once)"]);
        assert_eq!(v.violations["duplicate (applied more than once)"].0, 3);
    }

    #[test]
    fn rows_nobody_wrote_refused_writes_and_other_ids_are_flagged() {
        let writes = [write(0, 0, acked(1)), write(0, 1, Outcome::Refused("no".into())), write(0, 2, acked(3))];
        let rows = vec![row(1, 0, 0), row(2, 0, 1), row(4, 0, 2), row(5, 9, 9)];
        let v = check(&writes, &tables(&[rows]), &[]);
        assert_eq!(
            kinds(&v),
            [
                "changed (acknowledged with another row id)",
                "phantom (a refused write applied)",
                "phantom (a row nobody wrote)"
            ]
        );
    }

    #[test]
    fn stale_reads_and_unreadable_nodes_fail_the_run() {
        let writes = [write(0, 0, acked(1))];
        let mut t = tables(&[vec![row(1, 0, 0)]]);
        let addr = "127.0.0.1:7002".parse().unwrap();
        let reply = crate::blackbox::api::Reply::NoAnswer("connection refused".into());
        t.push(NodeTable { node: 2, rows: Err(TableError::Reply { addr, reply }) });
        let v = check(&writes, &t, &["write r-w0-0 ... returned []".into()]);
        assert!(!v.passed());
        assert_eq!(v.problems, ["node 2's table could not be read: 127.0.0.1:7002: no answer: connection refused"]);
        assert_eq!(v.violations.len(), 1);
    }
}
