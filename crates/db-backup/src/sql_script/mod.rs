//! Reading an SQL script for `bulwark db load`: a `bulwark db dump`, a
//! `sqlite3 .dump`, or a `mysqldump --compatible=ansi
//! --skip-extended-insert` file of simple tables, one statement at a time
//! with the line it starts on and the byte offset after it (where a load
//! resumes).
//!
//! What the API cannot or need not run is left out: transaction statements
//! (each batch is one transaction already), `PRAGMA`, statements on
//! Bulwark's own `_bulwark*` tables or SQLite's `sqlite_stat*` /
//! `sqlite_sequence`; from MySQL also `SET`, `LOCK TABLES`, `UNLOCK TABLES`,
//! `USE`, `CREATE`/`DROP DATABASE` and the `/*!...*/` version comments.
//!
//! MySQL text is translated: string literals lose their backslash escapes
//! (`\'`, `\\`, `\n`, `\0`, ...) and are written the SQLite way (bytes that
//! are not UTF-8, `_binary '..'` and `0x..` become blobs); in `CREATE
//! TABLE`, the table options after the columns, `AUTO_INCREMENT`,
//! `UNSIGNED`, `ZEROFILL`, character sets, collations, `COMMENT`s and `ON
//! UPDATE` go, `enum(..)` and `set(..)` become `TEXT`, `UNIQUE KEY n (..)`
//! becomes `UNIQUE (..)` and each `KEY n (..)` its own `CREATE INDEX`. What
//! SQLite still cannot take fails on the primary with SQLite's message and
//! the line of the statement.
use crate::dump::is_bulwark_name;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

mod mysql;
use mysql::{mysql_statement, MysqlScan};

/// Which tool wrote the script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Mysql,
}

/// One statement to run, where it was in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptStatement {
    /// Line (1-based) the statement starts on.
    pub line: u64,
    /// Byte offset just after it.
    pub end: u64,
    /// The line after it (where reading goes on).
    pub next_line: u64,
    /// SQLite statements (a MySQL `CREATE TABLE` may give several).
    pub sql: Vec<String>,
}

/// Why a script cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("line {line}: {message}")]
    Bad { line: u64, message: String },
}

/// Which tool wrote the script whose first bytes are `head`.
pub fn detect(head: &[u8]) -> Dialect {
    let head = String::from_utf8_lossy(&head[..head.len().min(4096)]);
    if head.lines().take(5).any(|l| l.starts_with("-- MySQL dump") || l.starts_with("-- MariaDB dump")) {
        Dialect::Mysql
    } else {
        Dialect::Sqlite
    }
}

/// The statements of a script, from a byte offset on.
pub struct Script {
    reader: BufReader<std::fs::File>,
    dialect: Dialect,
    offset: u64,
    line: u64,
    mysql: MysqlScan,
}

impl Script {
    /// Open `path` at `offset` (the start of line `line`; 0 and 1 for the
    /// beginning).
    pub fn open(path: &Path, offset: u64, line: u64) -> Result<Script, ScriptError> {
        let mut f = std::fs::File::open(path)?;
        let mut head = Vec::new();
        (&mut f).take(4096).read_to_end(&mut head)?;
        let dialect = detect(&head);
        f.seek(SeekFrom::Start(offset))?;
        Ok(Script { reader: BufReader::new(f), dialect, offset, line: line.max(1), mysql: MysqlScan::default() })
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The next statement to run, or `None` at the end.
    pub fn next_statement(&mut self) -> Result<Option<ScriptStatement>, ScriptError> {
        loop {
            let mut text: Vec<u8> = Vec::new();
            let start_line = self.line;
            let mut first_line = None;
            loop {
                let before = text.len();
                let n = self.reader.read_until(b'\n', &mut text)?;
                if n == 0 {
                    if text.iter().all(u8::is_ascii_whitespace) {
                        return Ok(None);
                    }
                    return Err(ScriptError::Bad {
                        line: first_line.unwrap_or(start_line),
                        message: "the file ends inside a statement (no closing `;`)".into(),
                    });
                }
                self.offset += n as u64;
                self.line += 1;
                let line_no = self.line - 1;
                if first_line.is_none() && !is_blank_or_comment(&text[before..]) {
                    first_line = Some(line_no);
                }
                if first_line.is_none() {
                    text.clear();
                    continue;
                }
                let complete = match self.dialect {
                    Dialect::Sqlite => sqlite_complete(&text),
                    Dialect::Mysql => self.mysql.feed(&text[before..]),
                };
                if complete {
                    break;
                }
            }
            let line = first_line.unwrap_or(start_line);
            let sql = match self.dialect {
                Dialect::Sqlite => sqlite_statement(&text, line)?,
                Dialect::Mysql => mysql_statement(&text, line)?,
            };
            if let Some(sql) = sql {
                return Ok(Some(ScriptStatement { line, end: self.offset, next_line: self.line, sql }));
            }
        }
    }

    /// Byte offset and line of the next unread statement.
    pub fn position(&self) -> (u64, u64) {
        (self.offset, self.line)
    }
}

fn is_blank_or_comment(line: &[u8]) -> bool {
    let t = String::from_utf8_lossy(line);
    let t = t.trim();
    t.is_empty() || t.starts_with("--") || t.starts_with('#')
}

fn sqlite_complete(text: &[u8]) -> bool {
    let Ok(c) = std::ffi::CString::new(text.to_vec()) else { return true };
    // SAFETY: a NUL-terminated string that outlives the call.
    unsafe { rusqlite::ffi::sqlite3_complete(c.as_ptr()) != 0 }
}

/// Words a statement starts with that the load leaves out.
fn skipped(upper: &str) -> bool {
    let first: Vec<&str> =
        upper.split(|c: char| c.is_whitespace() || c == ';').filter(|w| !w.is_empty()).take(3).collect();
    let w = |i: usize| first.get(i).copied().unwrap_or("");
    matches!(w(0), "BEGIN" | "COMMIT" | "END" | "ROLLBACK" | "PRAGMA" | "SAVEPOINT" | "RELEASE" | "ANALYZE")
        || matches!((w(0), w(1)), ("CREATE" | "DROP", "DATABASE" | "SCHEMA"))
}

/// A `sqlite3 .dump` statement, or `None` when left out.
fn sqlite_statement(text: &[u8], line: u64) -> Result<Option<Vec<String>>, ScriptError> {
    let s = String::from_utf8(text.to_vec())
        .map_err(|_| ScriptError::Bad { line, message: "the statement is not UTF-8 text".into() })?;
    let s = s.trim().to_string();
    let upper = s.to_ascii_uppercase();
    if skipped(&upper) || touches_internal(&s) {
        return Ok(None);
    }
    Ok(Some(vec![s]))
}

/// Whether a statement names a `_bulwark*`, `sqlite_stat*` or
/// `sqlite_sequence` object as the table it creates or writes.
fn touches_internal(s: &str) -> bool {
    let words: Vec<String> = s
        .split(|c: char| c.is_whitespace() || c == '(')
        .filter(|w| !w.is_empty())
        .take(8)
        .map(|w| w.trim_matches(|c| c == '"' || c == '`' || c == '[' || c == ']').to_string())
        .collect();
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    let target = match upper.first().map(String::as_str) {
        Some("INSERT" | "REPLACE") => upper.iter().position(|w| w == "INTO").and_then(|i| words.get(i + 1)),
        Some("DELETE") => upper.iter().position(|w| w == "FROM").and_then(|i| words.get(i + 1)),
        Some("CREATE") => {
            let i = upper.iter().position(|w| matches!(w.as_str(), "TABLE" | "INDEX" | "TRIGGER" | "VIEW"));
            i.and_then(|i| {
                let mut j = i + 1;
                if upper.get(j).map(String::as_str) == Some("IF") {
                    j += 3;
                }
                words.get(j)
            })
        }
        _ => None,
    };
    target.is_some_and(|t| {
        let t = t.rsplit('.').next().unwrap_or(t);
        is_bulwark_name(t) || t.to_ascii_lowercase().starts_with("sqlite_")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statements(text: &str) -> Vec<(u64, Vec<String>)> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.sql");
        std::fs::write(&p, text).unwrap();
        let mut s = Script::open(&p, 0, 1).unwrap();
        let mut out = Vec::new();
        while let Some(st) = s.next_statement().unwrap() {
            out.push((st.line, st.sql));
        }
        out
    }

    #[test]
    fn a_sqlite_dump_loses_its_transaction_and_internal_tables() {
        let got = statements(
            "PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\nCREATE TABLE t(a, b);\nINSERT INTO t VALUES(1,'x;\ny');\n\
             CREATE TABLE _bulwark_meta (k, v);\nINSERT INTO \"_bulwark_meta\" VALUES('a','b');\n\
             DELETE FROM sqlite_sequence;\nCOMMIT;\n",
        );
        assert_eq!(
            got,
            vec![
                (3, vec!["CREATE TABLE t(a, b);".to_string()]),
                (4, vec!["INSERT INTO t VALUES(1,'x;\ny');".to_string()])
            ]
        );
    }

    #[test]
    fn a_mysqldump_is_translated() {
        let text = "-- MySQL dump 10.13  Distrib 8.0.36\n/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;\n\
            SET NAMES utf8mb4;\nDROP TABLE IF EXISTS \"msg\";\n\
            CREATE TABLE \"msg\" (\n  \"id\" int(10) unsigned NOT NULL AUTO_INCREMENT,\n  \"body\" varchar(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci DEFAULT NULL COMMENT 'the text',\n\
              \"kind\" enum('a','b') DEFAULT 'a',\n  \"at\" timestamp NOT NULL DEFAULT current_timestamp() ON UPDATE current_timestamp(),\n\
              \"data\" blob,\n  PRIMARY KEY (\"id\"),\n  UNIQUE KEY \"u_body\" (\"body\"(20)),\n  KEY \"k_kind\" (\"kind\")\n) ENGINE=InnoDB AUTO_INCREMENT=3 DEFAULT CHARSET=utf8mb4;\n\
            LOCK TABLES \"msg\" WRITE;\n\
            INSERT INTO \"msg\" VALUES (1,'it\\'s a \\\\ \\\"test\\\"\\nline;two','a','2024-01-01 00:00:00',0x00FF);\n\
            INSERT INTO \"msg\" VALUES (2,NULL,'b','2024-01-01 00:00:00',_binary 'ab');\nUNLOCK TABLES;\n";
        let got = statements(text);
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[0].1, vec!["DROP TABLE IF EXISTS \"msg\"".to_string()]);
        let create = &got[1].1;
        assert_eq!(got[1].0, 5);
        let c = rusqlite::Connection::open_in_memory().unwrap();
        for st in got.iter().flat_map(|g| g.1.iter()) {
            c.execute_batch(st).unwrap_or_else(|e| panic!("{st}: {e}"));
        }
        assert_eq!(create.len(), 2, "{create:?}");
        let body: String = c.query_row("SELECT body FROM msg WHERE id = 1", [], |r| r.get(0)).unwrap();
        assert_eq!(body, "it's a \\ \"test\"\nline;two");
        let data: Vec<u8> = c.query_row("SELECT data FROM msg WHERE id = 1", [], |r| r.get(0)).unwrap();
        assert_eq!(data, vec![0, 255]);
        let t: String = c.query_row("SELECT typeof(data) FROM msg WHERE id = 2", [], |r| r.get(0)).unwrap();
        assert_eq!(t, "blob");
    }

    #[test]
    fn an_unfinished_statement_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.sql");
        std::fs::write(&p, "CREATE TABLE t(a);\n\nINSERT INTO t VALUES(1\n").unwrap();
        let mut s = Script::open(&p, 0, 1).unwrap();
        assert!(s.next_statement().unwrap().is_some());
        let e = s.next_statement().unwrap_err().to_string();
        assert!(e.starts_with("line 3:"), "{e}");
    }
}
