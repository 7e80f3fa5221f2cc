//! MySQL text, translated to SQLite one statement at a time (see the
//! parent module for what is translated and what is left out).
use super::{skipped, touches_internal, ScriptError};
use crate::dump::{quote_ident, quote_text};

/// Where a MySQL scan is inside the text so far.
#[derive(Default)]
pub(super) struct MysqlScan {
    quote: Option<u8>,
    escaped: bool,
    block_comment: bool,
}

impl MysqlScan {
    /// Feed one line; answers whether a statement ends with it.
    pub(super) fn feed(&mut self, line: &[u8]) -> bool {
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
pub(super) fn mysql_statement(text: &[u8], line: u64) -> Result<Option<Vec<String>>, ScriptError> {
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
