use std::fmt;
use std::path::Path;

/// One problem found in a config: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Dotted key path, e.g. `backend[0].server[1].weight`; empty when the
    /// problem is not tied to one key (syntax errors).
    pub key: String,
    /// 1-based line in the source, when it could be located.
    pub line: Option<usize>,
    pub message: String,
}

/// Everything wrong with one config file. Display prints one line per issue
/// as `file:line: key: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub origin: String,
    pub issues: Vec<Issue>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.issues.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", self.origin)?;
            if let Some(line) = issue.line {
                write!(f, ":{line}")?;
            }
            write!(f, ": ")?;
            if !issue.key.is_empty() {
                write!(f, "{}: ", issue.key)?;
            }
            write!(f, "{}", issue.message)?;
        }
        Ok(())
    }
}

impl ConfigError {
    pub fn io(path: &Path, err: std::io::Error) -> Self {
        Self::message(&path.display().to_string(), &format!("cannot read: {err}"))
    }

    pub fn message(origin: &str, msg: &str) -> Self {
        ConfigError {
            origin: origin.to_string(),
            issues: vec![Issue { key: String::new(), line: None, message: msg.to_string() }],
        }
    }

    pub(crate) fn from_toml(origin: &str, text: &str, err: &toml::de::Error) -> Self {
        let line = err.span().map(|s| line_of(text, s.start));
        // A value serde refused (a bad address, a wrong type) is named by
        // its key, as the checks after parsing name theirs.
        let key = err.span().and_then(|s| key_at(text, s.start)).unwrap_or_default();
        // Some parse errors carry no message of their own; fall back to the
        // full rendering (which names the position) rather than say nothing.
        let message = match err.message().trim() {
            "" => err.to_string().lines().next().unwrap_or("invalid TOML").trim().to_string(),
            m => m.to_string(),
        };
        let message = if message.is_empty() { "invalid TOML".to_string() } else { message };
        let message = match RENAMED.iter().find(|(old, _)| message.starts_with(&format!("unknown field `{old}`"))) {
            Some((_, now)) => format!("{message}; {now}"),
            None => message,
        };
        ConfigError { origin: origin.to_string(), issues: vec![Issue { key, line, message }] }
    }
}

/// Keys of earlier versions that were replaced, and what to write instead.
const RENAMED: [(&str, &str); 3] = [
    ("tls_cert", "mutual TLS is one key now: mutual_tls = { cert = \"...\", key = \"...\", ca = \"...\" }"),
    ("tls_key", "mutual TLS is one key now: mutual_tls = { cert = \"...\", key = \"...\", ca = \"...\" }"),
    ("tls_ca", "mutual TLS is one key now: mutual_tls = { cert = \"...\", key = \"...\", ca = \"...\" }"),
];

/// The dotted key path of the plain value (not a table or array) at byte
/// `offset` of `text`.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let doc = text.parse::<toml_edit::ImDocument<String>>().ok()?;
    let mut path = Vec::new();
    value_in_table(doc.as_table(), offset, &mut path).then(|| render(&path))
}

fn value_in_table(t: &toml_edit::Table, offset: usize, path: &mut Vec<Seg>) -> bool {
    t.iter().any(|(k, item)| within(path, Seg::Key(k.to_string()), |p| value_in_item(item, offset, p)))
}

fn value_in_item(item: &toml_edit::Item, offset: usize, path: &mut Vec<Seg>) -> bool {
    use toml_edit::Item;
    match item {
        Item::Value(v) => value_in_value(v, offset, path),
        Item::Table(t) => value_in_table(t, offset, path),
        Item::ArrayOfTables(a) => {
            a.iter().enumerate().any(|(i, t)| within(path, Seg::Index(i), |p| value_in_table(t, offset, p)))
        }
        Item::None => false,
    }
}

fn value_in_value(v: &toml_edit::Value, offset: usize, path: &mut Vec<Seg>) -> bool {
    use toml_edit::Value;
    match v {
        Value::Array(a) => {
            a.iter().enumerate().any(|(i, v)| within(path, Seg::Index(i), |p| value_in_value(v, offset, p)))
        }
        Value::InlineTable(t) => {
            t.iter().any(|(k, v)| within(path, Seg::Key(k.to_string()), |p| value_in_value(v, offset, p)))
        }
        _ => v.span().is_some_and(|s| s.contains(&offset)),
    }
}

/// Run `f` with `seg` on the path; keep it there when `f` found the value.
fn within(path: &mut Vec<Seg>, seg: Seg, f: impl FnOnce(&mut Vec<Seg>) -> bool) -> bool {
    path.push(seg);
    let found = f(path);
    if !found {
        path.pop();
    }
    found
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

/// Collects validation problems with their key paths. Schema modules call
/// [`Validator::scope`]/[`Validator::index`] to descend and
/// [`Validator::error`] to report.
#[derive(Debug, Default)]
pub struct Validator {
    path: Vec<Seg>,
    found: Vec<(Vec<Seg>, String)>,
}

impl Validator {
    /// Report a problem with `key` under the current path. `key` may be empty
    /// to report on the current table itself.
    pub fn error(&mut self, key: &str, message: impl Into<String>) {
        let mut p = self.path.clone();
        if !key.is_empty() {
            p.push(Seg::Key(key.to_string()));
        }
        self.found.push((p, message.into()));
    }

    /// Run `f` with the path extended by table key `key`.
    pub fn scope(&mut self, key: &str, f: impl FnOnce(&mut Validator)) {
        self.path.push(Seg::Key(key.to_string()));
        f(self);
        self.path.pop();
    }

    /// Run `f` with the path extended by array index `i`.
    pub fn index(&mut self, i: usize, f: impl FnOnce(&mut Validator)) {
        self.path.push(Seg::Index(i));
        f(self);
        self.path.pop();
    }

    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// Turn collected problems into a [`ConfigError`], locating each key's
    /// line in `text`.
    pub fn into_result(self, origin: &str, text: &str) -> Result<(), ConfigError> {
        if self.found.is_empty() {
            return Ok(());
        }
        let doc = text.parse::<toml_edit::ImDocument<String>>().ok();
        let issues = self
            .found
            .into_iter()
            .map(|(path, message)| {
                let line = doc.as_ref().and_then(|d| locate(d.as_table(), &path)).map(|off| line_of(text, off));
                Issue { key: render(&path), line, message }
            })
            .collect();
        Err(ConfigError { origin: origin.to_string(), issues })
    }
}

fn render(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Byte offset of the deepest part of `path` that exists in the document.
fn locate(root: &toml_edit::Table, path: &[Seg]) -> Option<usize> {
    use toml_edit::{Item, Value};
    enum Node<'a> {
        Item(&'a Item),
        Value(&'a Value),
        Table(&'a toml_edit::Table),
    }
    let mut node = Node::Table(root);
    let mut best = root.span().map(|s| s.start);
    for seg in path {
        let next = match (&node, seg) {
            (Node::Table(t), Seg::Key(k)) => {
                if let Some(key) = t.key(k) {
                    best = key.span().map(|s| s.start).or(best);
                }
                t.get(k).map(Node::Item)
            }
            (Node::Item(Item::Table(t)), Seg::Key(k)) => {
                if let Some(key) = t.key(k) {
                    best = key.span().map(|s| s.start).or(best);
                }
                t.get(k).map(Node::Item)
            }
            (Node::Item(Item::Value(Value::InlineTable(t))), Seg::Key(k))
            | (Node::Value(Value::InlineTable(t)), Seg::Key(k)) => {
                if let Some(key) = t.key(k) {
                    best = key.span().map(|s| s.start).or(best);
                }
                t.get(k).map(Node::Value)
            }
            (Node::Item(Item::ArrayOfTables(a)), Seg::Index(i)) => a.get(*i).map(|t| {
                best = t.span().map(|s| s.start).or(best);
                Node::Table(t)
            }),
            (Node::Item(Item::Value(Value::Array(a))), Seg::Index(i))
            | (Node::Value(Value::Array(a)), Seg::Index(i)) => a.get(*i).map(|v| {
                best = v.span().map(|s| s.start).or(best);
                Node::Value(v)
            }),
            _ => None,
        };
        match next {
            Some(n) => {
                let value = match &n {
                    Node::Item(Item::Value(v)) => Some(v),
                    Node::Value(v) => Some(*v),
                    _ => None,
                };
                if let Some(v) = value {
                    best = v.span().map(|s| s.start).or(best);
                }
                node = n;
            }
            None => break,
        }
    }
    best
}
