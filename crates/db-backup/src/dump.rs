//! SQL text of a database's application tables (`bulwark db dump`).
//!
//! The text is what `sqlite3 .dump` writes, without Bulwark's own
//! `_bulwark*` tables and SQLite's internal ones: `BEGIN TRANSACTION;`, each
//! table's `CREATE TABLE` followed by one `INSERT` per row, then the
//! indexes, triggers and views, then `COMMIT;`. Every value keeps its type:
//! `NULL`, integers, reals written so that they read back as the same
//! double (and as reals: `2.0`, not `2`), text quoted with `''`
//! (newlines kept as they are), blobs as `X'..'`; text that is not UTF-8 is
//! written as a blob cast to text. Generated columns are left out of the
//! `INSERT`s (SQLite computes them). `sqlite3` reads the text as it is, and
//! `bulwark db load` loads it through the primary.
//!
//! The dump is written from a local copy of the database (a backup), so it
//! is consistent: one log index, recorded in its first line.
use rusqlite::types::ValueRef;
use rusqlite::Connection;
use std::io::Write;

/// Why a dump failed.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("reading the database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("writing the dump: {0}")]
    Io(#[from] std::io::Error),
}

/// A database to dump (a local copy).
pub type Database = Connection;

/// Open a local copy of a database, read-only.
pub fn open_copy(path: &std::path::Path) -> rusqlite::Result<Database> {
    Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
}

/// `name` as a quoted SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `s` as a quoted SQL string literal.
pub fn quote_text(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// One value as an SQL literal of the same type.
pub fn literal(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Null => "NULL".into(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) if f.is_infinite() => if f > 0.0 { "1e999" } else { "-1e999" }.into(),
        ValueRef::Real(f) if f.is_nan() => "NULL".into(),
        // Debug writes the shortest text that reads back as the same
        // double, with a `.0` or an exponent: SQLite reads it as a real.
        ValueRef::Real(f) => format!("{f:?}"),
        ValueRef::Text(t) => match std::str::from_utf8(t) {
            Ok(s) => quote_text(s),
            Err(_) => format!("CAST(X'{}' AS TEXT)", crate::backup::hex(t)),
        },
        ValueRef::Blob(b) => format!("X'{}'", crate::backup::hex(b)),
    }
}

/// Whether `name` is one of Bulwark's tables, indexes or triggers.
pub fn is_bulwark_name(name: &str) -> bool {
    name.len() >= 8 && name[..8].eq_ignore_ascii_case("_bulwark")
}

/// Write the dump of `c`'s application tables to `out`; `header` goes
/// first as a comment line. Answers the number of rows written.
pub fn write_dump(c: &Connection, header: &str, out: &mut dyn Write) -> Result<u64, DumpError> {
    writeln!(out, "-- {header}")?;
    writeln!(out, "BEGIN TRANSACTION;")?;
    let mut schema =
        c.prepare("SELECT type, name, tbl_name, sql FROM sqlite_schema WHERE sql IS NOT NULL ORDER BY rowid")?;
    let entries: Vec<(String, String, String, String)> =
        schema.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?.collect::<Result<_, _>>()?;
    let keep = |name: &str, table: &str| {
        !is_bulwark_name(name)
            && !is_bulwark_name(table)
            && !name.starts_with("sqlite_")
            && !table.starts_with("sqlite_")
    };
    let mut rows = 0u64;
    for (_, name, table, sql) in entries.iter().filter(|e| e.0 == "table") {
        if !keep(name, table) {
            continue;
        }
        writeln!(out, "{sql};")?;
        if sql.trim_start().to_ascii_uppercase().starts_with("CREATE VIRTUAL") {
            continue;
        }
        rows += dump_rows(c, name, out)?;
    }
    for (_, name, table, sql) in entries.iter().filter(|e| e.0 != "table") {
        if keep(name, table) {
            writeln!(out, "{sql};")?;
        }
    }
    writeln!(out, "COMMIT;")?;
    out.flush()?;
    Ok(rows)
}

/// The `INSERT`s of one table's rows, in rowid (or primary key) order.
fn dump_rows(c: &Connection, table: &str, out: &mut dyn Write) -> Result<u64, DumpError> {
    let q = quote_ident(table);
    // hidden: 0 an ordinary column, 2 and 3 generated ones.
    let mut info = c.prepare(&format!("SELECT name, hidden FROM pragma_table_xinfo({})", quote_text(table)))?;
    let cols: Vec<String> = info
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
        .filter_map(|r| match r {
            Ok((name, 0)) => Some(Ok(name)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<Result<_, _>>()?;
    if cols.is_empty() {
        return Ok(0);
    }
    let list: Vec<String> = cols.iter().map(|c| quote_ident(c)).collect();
    let list = list.join(",");
    let mut stmt = c.prepare(&format!("SELECT {list} FROM {q}"))?;
    let mut rs = stmt.query([])?;
    let mut n = 0u64;
    let mut line = String::new();
    while let Some(r) = rs.next()? {
        line.clear();
        line.push_str(&format!("INSERT INTO {q}({list}) VALUES("));
        for i in 0..cols.len() {
            if i > 0 {
                line.push(',');
            }
            line.push_str(&literal(r.get_ref(i)?));
        }
        line.push_str(");\n");
        out.write_all(line.as_bytes())?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_is_written_as_a_literal_of_that_type() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE t (a, b TEXT, g AS (b || 'x'));
             CREATE TABLE _bulwark_meta (k, v);
             CREATE INDEX t_b ON t (b);",
        )
        .unwrap();
        c.execute(
            "INSERT INTO t (a, b) VALUES (NULL, 'it''s\nhere'), (-7, ''), (2.0, NULL), (0.1, 'x'), (X'00ff', 'y'), (1e300, 'z')",
            [],
        )
        .unwrap();
        let mut out = Vec::new();
        let n = write_dump(&c, "test", &mut out).unwrap();
        assert_eq!(n, 6);
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("_bulwark"), "{text}");
        assert!(text.contains("VALUES(NULL,'it''s\nhere');"), "{text}");
        assert!(text.contains("VALUES(2.0,NULL);"), "{text}");
        assert!(text.contains("VALUES(0.1,'x');"), "{text}");
        assert!(text.contains("VALUES(X'00ff','y');"), "{text}");
        assert!(text.contains("VALUES(1e300,'z');"), "{text}");
        assert!(text.contains("CREATE INDEX t_b ON t (b);"), "{text}");
        // Read back by SQLite itself: the same values of the same types.
        let back = Connection::open_in_memory().unwrap();
        back.execute_batch(&text).unwrap();
        let q = "SELECT group_concat(quote(a) || typeof(a) || quote(b) || quote(g), '|') FROM t";
        let want: String = c.query_row(q, [], |r| r.get(0)).unwrap();
        let got: String = back.query_row(q, [], |r| r.get(0)).unwrap();
        assert_eq!(got, want);
    }
}
