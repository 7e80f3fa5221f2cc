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
use crate::dump::{is_bulwark_name, quote_ident, quote_text};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

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

/// Where a MySQL scan is inside the text so far.
#[derive(Default)]
struct MysqlScan {
    quote: Option<u8>,
    escaped: bool,
    block_comment: bool,
}

impl MysqlScan {
    /// Feed one line; answers whether a statement ends with it.
    fn feed(&mut self, line: &[u8]) -> bool {
        let mut i = 0;
        let mut ended = false;
        while i < line.len() {
            let b = line[i];
            if self.block_comment {
                if b == b'*' && line.get(i + 1) == Some(&b'/') {
                    self.block_comment = false;
                    i += 1;
                }
            } else if let Some(q) = self.quote {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' && q == b'\'' {
                    self.escaped = true;
                } else if b == q {
                    self.quote = None;
                }
            } else {
                match b {
                    b'\'' | b'"' | b'`' => self.quote = Some(b),
                    b'/' if line.get(i + 1) == Some(&b'*') => {
                        self.block_comment = true;
                        i += 1;
                    }
                    b'-' if line.get(i + 1) == Some(&b'-') => break,
                    b'#' => break,
                    b';' => ended = true,
                    c if !c.is_ascii_whitespace() => ended = false,
                    _ => {}
                }
            }
            i += 1;
        }
        ended && self.quote.is_none() && !self.block_comment
    }
}

/// A token of MySQL text.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Ident(String),
    Str(Vec<u8>),
    Blob(Vec<u8>),
    Punct(char),
    Other(String),
}

fn tokenize(text: &[u8], line: u64) -> Result<Vec<Tok>, ScriptError> {
    let bad = |m: &str| ScriptError::Bad { line, message: m.to_string() };
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        match b {
            c if c.is_ascii_whitespace() => i += 1,
            b'-' if text.get(i + 1) == Some(&b'-') => {
                while i < text.len() && text[i] != b'\n' {
                    i += 1;
                }
            }
            b'#' => {
                while i < text.len() && text[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if text.get(i + 1) == Some(&b'*') => {
                let end = text[i + 2..].windows(2).position(|w| w == b"*/").ok_or_else(|| bad("unclosed comment"))?;
                i += end + 4;
            }
            b'\'' => {
                let mut s = Vec::new();
                i += 1;
                loop {
                    let c = *text.get(i).ok_or_else(|| bad("unclosed string"))?;
                    match c {
                        b'\\' => {
                            let e = *text.get(i + 1).ok_or_else(|| bad("unclosed string"))?;
                            s.push(match e {
                                b'0' => 0,
                                b'n' => b'\n',
                                b'r' => b'\r',
                                b't' => b'\t',
                                b'b' => 8,
                                b'Z' => 26,
                                other => other,
                            });
                            i += 2;
                        }
                        b'\'' if text.get(i + 1) == Some(&b'\'') => {
                            s.push(b'\'');
                            i += 2;
                        }
                        b'\'' => {
                            i += 1;
                            break;
                        }
                        c => {
                            s.push(c);
                            i += 1;
                        }
                    }
                }
                // `_binary '...'` is a blob.
                if matches!(out.last(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case("_binary")) {
                    out.pop();
                    out.push(Tok::Blob(s));
                } else {
                    out.push(Tok::Str(s));
                }
            }
            b'"' | b'`' => {
                let q = b;
                let mut s = Vec::new();
                i += 1;
                loop {
                    let c = *text.get(i).ok_or_else(|| bad("unclosed quoted name"))?;
                    if c == q && text.get(i + 1) == Some(&q) {
                        s.push(q);
                        i += 2;
                    } else if c == q {
                        i += 1;
                        break;
                    } else {
                        s.push(c);
                        i += 1;
                    }
                }
                out.push(Tok::Ident(String::from_utf8_lossy(&s).into_owned()));
            }
            b'0' if matches!(text.get(i + 1), Some(b'x' | b'X')) => {
                let start = i + 2;
                let mut j = start;
                while j < text.len() && text[j].is_ascii_hexdigit() {
                    j += 1;
                }
                let hex = std::str::from_utf8(&text[start..j]).unwrap_or_default();
                let bytes = (0..hex.len() / 2)
                    .map(|k| u8::from_str_radix(&hex[2 * k..2 * k + 2], 16))
                    .collect::<Result<Vec<u8>, _>>()
                    .map_err(|_| bad("bad hex literal"))?;
                out.push(Tok::Blob(bytes));
                i = j;
            }
            c if c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80 => {
                let start = i;
                while i < text.len()
                    && (text[i].is_ascii_alphanumeric()
                        || matches!(text[i], b'_' | b'$' | b'.')
                        || text[i] >= 0x80
                        || (matches!(text[i], b'+' | b'-')
                            && matches!(text[i - 1], b'e' | b'E')
                            && text[start].is_ascii_digit()))
                {
                    i += 1;
                }
                out.push(Tok::Word(String::from_utf8_lossy(&text[start..i]).into_owned()));
            }
            b';' => i += 1,
            c if b"(),=".contains(&c) => {
                out.push(Tok::Punct(c as char));
                i += 1;
            }
            c => {
                out.push(Tok::Other((c as char).to_string()));
                i += 1;
            }
        }
    }
    Ok(out)
}

fn render(toks: &[Tok]) -> String {
    let mut s = String::new();
    for (k, t) in toks.iter().enumerate() {
        let piece = match t {
            Tok::Word(w) => w.clone(),
            Tok::Ident(n) => quote_ident(n),
            Tok::Str(b) => match std::str::from_utf8(b) {
                Ok(t) => quote_text(t),
                Err(_) => format!("X'{}'", crate::backup::hex(b)),
            },
            Tok::Blob(b) => format!("X'{}'", crate::backup::hex(b)),
            Tok::Punct(c) => c.to_string(),
            Tok::Other(o) => o.clone(),
        };
        let glue = k == 0
            || matches!(t, Tok::Punct(',' | ')'))
            || matches!(toks[k - 1], Tok::Punct('('))
            || matches!(t, Tok::Punct('(')) && matches!(toks[k - 1], Tok::Word(_));
        if !glue {
            s.push(' ');
        }
        s.push_str(&piece);
    }
    s
}

fn word_is(t: Option<&Tok>, w: &str) -> bool {
    matches!(t, Some(Tok::Word(x)) if x.eq_ignore_ascii_case(w))
}

/// A MySQL statement as SQLite statements, or `None` when left out.
fn mysql_statement(text: &[u8], line: u64) -> Result<Option<Vec<String>>, ScriptError> {
    let toks = tokenize(text, line)?;
    let Some(first) = toks.first() else { return Ok(None) };
    let upper = |t: Option<&Tok>| match t {
        Some(Tok::Word(w)) => w.to_ascii_uppercase(),
        _ => String::new(),
    };
    let head = format!("{} {}", upper(Some(first)), upper(toks.get(1)));
    if matches!(upper(Some(first)).as_str(), "SET" | "LOCK" | "UNLOCK" | "USE") || skipped(&head) {
        return Ok(None);
    }
    let rendered = render(&toks);
    if touches_internal(&rendered) {
        return Ok(None);
    }
    if head == "CREATE TABLE" {
        return create_table(&toks, line).map(Some);
    }
    Ok(Some(vec![rendered]))
}

/// Split `toks` at top-level commas.
fn split_top(toks: &[Tok]) -> Vec<&[Tok]> {
    let (mut depth, mut start, mut parts) = (0i32, 0, Vec::new());
    for (i, t) in toks.iter().enumerate() {
        match t {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => depth -= 1,
            Tok::Punct(',') if depth == 0 => {
                parts.push(&toks[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&toks[start..]);
    parts
}

/// The index of the `)` matching the `(` at `open`.
fn matching(toks: &[Tok], open: usize) -> Option<usize> {
    let mut depth = 0;
    for (i, t) in toks.iter().enumerate().skip(open) {
        match t {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Key columns without MySQL's prefix lengths (`"name"(10)`).
fn key_columns(toks: &[Tok]) -> String {
    let Some(open) = toks.iter().position(|t| *t == Tok::Punct('(')) else { return "()".into() };
    let close = matching(toks, open).unwrap_or(toks.len() - 1);
    let cols: Vec<String> = split_top(&toks[open + 1..close])
        .into_iter()
        .filter_map(|c| c.iter().find_map(|t| if let Tok::Ident(n) = t { Some(quote_ident(n)) } else { None }))
        .collect();
    format!("({})", cols.join(","))
}

fn create_table(toks: &[Tok], line: u64) -> Result<Vec<String>, ScriptError> {
    let bad = |m: &str| ScriptError::Bad { line, message: m.to_string() };
    let open = toks.iter().position(|t| *t == Tok::Punct('(')).ok_or_else(|| bad("CREATE TABLE without columns"))?;
    let close = matching(toks, open).ok_or_else(|| bad("CREATE TABLE: unbalanced parentheses"))?;
    let table = toks[..open]
        .iter()
        .rev()
        .find_map(|t| match t {
            Tok::Ident(n) => Some(n.clone()),
            Tok::Word(w) if !w.eq_ignore_ascii_case("EXISTS") && !w.eq_ignore_ascii_case("TABLE") => Some(w.clone()),
            _ => None,
        })
        .ok_or_else(|| bad("CREATE TABLE without a name"))?;
    let mut defs = Vec::new();
    let mut indexes = Vec::new();
    for def in split_top(&toks[open + 1..close]) {
        let w0 = match def.first() {
            Some(Tok::Word(w)) => w.to_ascii_uppercase(),
            _ => String::new(),
        };
        match w0.as_str() {
            "KEY" | "INDEX" | "FULLTEXT" | "SPATIAL" => {
                let name = def.iter().find_map(|t| if let Tok::Ident(n) = t { Some(n.clone()) } else { None });
                let name = format!("{table}_{}", name.unwrap_or_else(|| format!("key{}", indexes.len() + 1)));
                indexes.push(format!(
                    "CREATE INDEX {} ON {} {}",
                    quote_ident(&name),
                    quote_ident(&table),
                    key_columns(def)
                ));
            }
            "UNIQUE" => defs.push(format!("UNIQUE {}", key_columns(def))),
            "PRIMARY" => defs.push(format!("PRIMARY KEY {}", key_columns(def))),
            "CONSTRAINT" | "FOREIGN" | "CHECK" => defs.push(render(def)),
            _ => defs.push(column(def)),
        }
    }
    let mut out = vec![format!("{} ({})", render(&toks[..open]), defs.join(", "))];
    out.extend(indexes);
    Ok(out)
}

/// A column definition without what SQLite does not take.
fn column(def: &[Tok]) -> String {
    let mut out: Vec<Tok> = Vec::new();
    let mut i = 0;
    while i < def.len() {
        let t = &def[i];
        let upper = if let Tok::Word(w) = t { w.to_ascii_uppercase() } else { String::new() };
        match upper.as_str() {
            "UNSIGNED" | "SIGNED" | "ZEROFILL" | "AUTO_INCREMENT" => i += 1,
            "CHARACTER" if word_is(def.get(i + 1), "SET") => i += 3,
            "CHARSET" | "COLLATE" => i += 2,
            "COMMENT" => i += 2,
            "ON" if word_is(def.get(i + 1), "UPDATE") => {
                i += 3;
                if def.get(i) == Some(&Tok::Punct('(')) {
                    i = matching(def, i).map_or(def.len(), |c| c + 1);
                }
            }
            "ENUM" | "SET" if i == 1 => {
                out.push(Tok::Word("TEXT".into()));
                i = if def.get(i + 1) == Some(&Tok::Punct('(')) {
                    matching(def, i + 1).map_or(def.len(), |c| c + 1)
                } else {
                    i + 1
                };
            }
            "CURRENT_TIMESTAMP" | "NOW" | "LOCALTIMESTAMP" => {
                out.push(Tok::Word("CURRENT_TIMESTAMP".into()));
                i += 1;
                if def.get(i) == Some(&Tok::Punct('(')) {
                    i = matching(def, i).map_or(def.len(), |c| c + 1);
                }
            }
            _ => {
                out.push(t.clone());
                i += 1;
            }
        }
    }
    render(&out)
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
