//! A 3-node `bulwark db` cluster as real processes: replication to both
//! replicas, read-your-writes tokens, forwarding, read-only replicas, bad
//! input, kill -9 failover with no acknowledged write lost, rejoin, planned
//! leadership transfer and a full restart from disk.
mod db_common;

use bulwark_db_api::DbRole;
use bulwark_db_api::{ClientError, Consistency, Params, Statement, Value};
use bulwark_testkit::wait_until;
use db_common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[test]
fn three_nodes_replicate_fail_over_and_restart() {
    let rt = rt();
    let mut c = Cluster::start(&rt, &["127.0.0.1", "127.0.0.1", "127.0.0.1"]);
    let p = c.wait_primary();
    assert_eq!(p, 1);
    // `bulwark db status` lists every node, not just the first primary found.
    for _ in 0..5 {
        assert_eq!(rt.block_on(c.client.statuses()).len(), 3);
    }

    // Writes on the primary are readable on both replicas; a token read on
    // a replica sees the write at once.
    exec(&rt, &c.client, "CREATE TABLE msg (id INTEGER PRIMARY KEY, text TEXT NOT NULL, at TEXT)", vec![]);
    let w = exec(&rt, &c.client, "INSERT INTO msg (text, at) VALUES (?, CURRENT_TIMESTAMP)", vec!["hello".into()]);
    assert_eq!((w.rows_affected, w.last_insert_id), (1, 1));
    for id in [2, 3] {
        assert_eq!(count_on(c.node(id).addr, "msg", Some(w.token)), Some(1), "token read on replica {id}");
    }
    // The rewritten timestamp is identical everywhere.
    let at: Vec<String> = (1..=3)
        .map(|id| {
            let r = c.node(id).post(
                "/v1/query",
                &format!(r#"{{"sql":"SELECT at FROM msg","token":{}}}"#, serde_json::json!(w.token)),
            );
            assert_eq!(r.status, 200, "{}", r.text());
            r.text().split("\"rows\":").nth(1).unwrap().to_string()
        })
        .collect();
    assert!(at.iter().all(|a| a.split(',').next() == at[0].split(',').next()), "{at:?}");

    // A write through a replica is forwarded to the primary.
    let r = c.node(2).post(
        "/v1/execute",
        r#"{"statements":[{"sql":"INSERT INTO msg (text) VALUES (:t)","params":{"t":"via replica"}}]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // The same request id through two nodes applies once; the second call
    // gets the first outcome and token, marked as a replay.
    let once = r#"{"statements":[{"sql":"INSERT INTO msg (text) VALUES ('once')"}],"request_id":"test-once-1"}"#;
    let first = c.node(1).post("/v1/execute", once);
    assert_eq!(first.status, 200, "{}", first.text());
    let again = c.node(3).post("/v1/execute", once);
    assert_eq!(again.status, 200, "{}", again.text());
    let (f, a): (bulwark_db_api::ExecuteResult, bulwark_db_api::ExecuteResult) =
        (serde_json::from_str(&first.text()).unwrap(), serde_json::from_str(&again.text()).unwrap());
    assert!(!f.replayed && a.replayed, "{f:?} {a:?}");
    assert_eq!((a.last_insert_id, a.token), (f.last_insert_id, f.token));
    let n =
        c.node(1).post("/v1/query", r#"{"sql":"SELECT count(*) FROM msg WHERE text = 'once'","consistency":"strong"}"#);
    assert!(n.text().contains("[[1]]"), "{}", n.text());
    let r = c.node(1).post("/v1/execute", &once.replace("test-once-1", r"bad\u0001id"));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("control characters"), "{}", r.text());
    let r = rt.block_on(c.client.execute_once(&"k".repeat(300), &[Statement::new("SELECT 1")]));
    assert!(matches!(r, Err(ClientError::Rejected { status: 400, .. })), "{r:?}");

    // A replica's read path cannot write.
    let r = c.node(3).post("/v1/query", r#"{"sql":"DELETE FROM msg"}"#);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("read-only"), "{}", r.text());

    // Bad input: 4xx JSON errors with SQLite's message, nothing panics.
    let r = c.node(1).post("/v1/execute", r#"{"statements":[{"sql":"INSERT INTO nope VALUES (1)"}]}"#);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("no such table: nope"), "{}", r.text());
    let r = c.node(2).post("/v1/query", r#"{"sql":"SELEKT 1"}"#);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("syntax error"), "{}", r.text());
    let r = c.node(1).post(
        "/v1/execute",
        r#"{"statements":[{"sql":"INSERT INTO msg (text) VALUES (datetime('now','localtime'))"}]}"#,
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("localtime"), "{}", r.text());
    let r = c.node(1).post("/v1/execute", "{not json");
    assert_eq!(r.status, 400);
    let big = format!(r#"{{"statements":[{{"sql":"SELECT '{}'"}}]}}"#, "x".repeat(2 << 20));
    let r = c.node(1).post("/v1/execute", &big);
    assert_eq!(r.status, 413, "{}", r.text());
    for secret in [None, Some("wrong-secret-0123456789")] {
        let r = post(c.node(1).addr, "/v1/query", r#"{"sql":"SELECT 1"}"#, secret);
        assert_eq!(r.status, 401);
        assert!(r.text().contains("\"code\":\"unauthorized\""));
    }
    assert!(!c.node(1).logs().contains(SECRET), "the secret must never be logged");
    let e = rt.block_on(c.client.execute(&[Statement::new("INSERT INTO msg VALUES (1, NULL, NULL)")])).unwrap_err();
    assert!(matches!(&e, ClientError::Sql(m) if m.contains("NOT NULL")), "{e:?}");

    // Roles, term, applied index and lag are visible.
    wait_until("both replicas report a known, zero lag", || {
        [2, 3].iter().all(|id| {
            c.node(*id).status().is_some_and(|s| s.role == DbRole::Replica && s.lag.known && s.lag.entries == 0)
        })
    });
    let s = c.node(1).status().unwrap();
    assert_eq!((s.role.as_str(), s.leader_id, s.quorum), ("primary", Some(1), true));
    assert_eq!(bulwark_testkit::get(c.node(1).addr, "/primary").unwrap().status, 200);
    assert_eq!(bulwark_testkit::get(c.node(2).addr, "/primary").unwrap().status, 503);
    assert_eq!(bulwark_testkit::get(c.node(2).addr, "/replica?max_lag=5").unwrap().status, 200);
    assert_eq!(bulwark_testkit::get(c.node(1).addr, "/replica").unwrap().status, 503);
    assert_eq!(bulwark_testkit::get(c.node(3).addr, "/health").unwrap().status, 200);

    // kill -9 the primary under a steady stream of writes.
    let acked = Arc::new(Mutex::new(Vec::<(i64, Instant)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (client, acked, stop) = (c.client.clone(), acked.clone(), stop.clone());
        let handle = rt.handle().clone();
        std::thread::spawn(move || {
            let mut n = 0i64;
            let mut ambiguous = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let st = Statement::with_params(
                    "INSERT INTO msg (id, text) VALUES (?, 'load')",
                    vec![Value::Integer(1000 + n)],
                );
                match handle.block_on(client.execute(&[st])) {
                    Ok(_) => acked.lock().unwrap().push((1000 + n, Instant::now())),
                    Err(ClientError::Ambiguous(_)) => ambiguous += 1,
                    Err(e) => panic!("write failed: {e}"),
                }
            }
            ambiguous
        })
    };
    wait_until("some writes before the kill", || acked.lock().unwrap().len() >= 20);
    let before_kill = acked.lock().unwrap().len();
    c.node_mut(1).kill();
    let elected = wait_short("a new primary", Duration::from_secs(10), || c.primary().is_some_and(|p| p != 1));
    wait_until("writes acknowledged after the kill", || acked.lock().unwrap().len() >= before_kill + 20);
    let new_primary = c.wait_primary();
    assert_ne!(new_primary, 1);
    stop.store(true, Ordering::SeqCst);
    let ambiguous = writer.join().unwrap();
    // The longest pause between two acknowledged writes spans the failover.
    let times: Vec<Instant> = acked.lock().unwrap().iter().map(|(_, t)| *t).collect();
    let gap = times.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    eprintln!(
        "failover: node {new_primary} primary {elected:?} after kill -9 of the primary; longest write pause {gap:?}; {ambiguous} writes with unknown outcome"
    );
    assert!(elected < Duration::from_secs(5), "election took {elected:?}");
    assert!(gap < Duration::from_secs(5), "writes paused for {gap:?}");

    // Every acknowledged write is on the new primary and the other replica.
    let acked: Vec<i64> = acked.lock().unwrap().iter().map(|(id, _)| *id).collect();
    let ids_on = |addr| -> Vec<i64> {
        let r = post(
            addr,
            "/v1/query",
            r#"{"sql":"SELECT id FROM msg WHERE id > 1000","consistency":"strong"}"#,
            Some(SECRET),
        );
        let r = if r.status == 307 {
            post(
                c.node(new_primary).addr,
                "/v1/query",
                r#"{"sql":"SELECT id FROM msg WHERE id > 1000","consistency":"strong"}"#,
                Some(SECRET),
            )
        } else {
            r
        };
        let rows: bulwark_db_api::Rows = serde_json::from_slice(&r.body).unwrap();
        rows.rows.iter().map(|r| r[0].as_i64().unwrap()).collect()
    };
    let present = ids_on(c.node(new_primary).addr);
    for id in &acked {
        assert!(present.contains(id), "acknowledged write {id} lost after failover");
    }

    // The old primary restarts from disk and rejoins as a replica.
    let last = exec(&rt, &c.client, "INSERT INTO msg (text) VALUES ('after failover')", vec![]);
    c.node_mut(1).restart();
    wait_until("old primary rejoins as replica", || {
        c.node(1).status().is_some_and(|s| s.role == DbRole::Replica && s.applied_index >= last.token.index)
    });
    let total = count_on(c.node(new_primary).addr, "msg", Some(last.token)).unwrap();
    assert_eq!(count_on(c.node(1).addr, "msg", Some(last.token)), Some(total));

    // Planned leadership transfer back to node 1.
    let t = Instant::now();
    rt.block_on(async {
        let mut last = None;
        for _ in 0..3 {
            match c.client.promote(1).await {
                Ok(_) => return,
                Err(e) => last = Some(e),
            }
        }
        panic!("promote failed: {last:?}");
    });
    eprintln!("promote took {:?}", t.elapsed());
    assert_eq!(c.wait_primary(), 1);
    let w = exec(&rt, &c.client, "INSERT INTO msg (text) VALUES ('after promote')", vec![]);

    // Stop everything, start from disk: nothing committed is lost.
    for id in 1..=3 {
        c.node_mut(id).terminate();
    }
    for id in 1..=3 {
        c.node_mut(id).restart();
    }
    c.wait_primary();
    let rows = rt
        .block_on(c.client.query("SELECT count(*) FROM msg", Params::None, Consistency::Strong, None))
        .expect("query after restart");
    assert_eq!(rows.rows[0][0].as_i64(), Some(total + 1));
    for id in 1..=3 {
        assert_eq!(count_on(c.node(id).addr, "msg", Some(w.token)), Some(total + 1), "node {id} after restart");
    }
}
