//! Wire types of the HTTP SQL API, shared by the node and [`crate::Client`].
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One SQL value. In JSON: `null`, a number, a string, a boolean (stored as
/// 0/1) or `{"base64": "..."}` for a blob.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine;
        match self {
            Value::Null => s.serialize_none(),
            Value::Integer(i) => s.serialize_i64(*i),
            Value::Real(f) => s.serialize_f64(*f),
            Value::Text(t) => s.serialize_str(t),
            Value::Blob(b) => {
                let mut m = BTreeMap::new();
                m.insert("base64", base64::engine::general_purpose::STANDARD.encode(b));
                m.serialize(s)
            }
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        Value::from_json(v).map_err(serde::de::Error::custom)
    }
}

/// Why a JSON value is not an SQL parameter (the request is at fault).
#[derive(Debug, thiserror::Error)]
pub enum ParamError {
    #[error("number out of range")]
    OutOfRange,
    #[error("bad base64 blob: {0}")]
    Base64(#[source] base64::DecodeError),
    #[error("`base64` must be a string")]
    Base64NotString,
    #[error("unsupported SQL parameter value {0} (use null, number, string, bool or {{\"base64\": ...}})")]
    Unsupported(serde_json::Value),
}

impl Value {
    /// Convert a JSON value; arrays and objects other than `{"base64": ..}` are errors.
    pub fn from_json(v: serde_json::Value) -> Result<Value, ParamError> {
        use base64::Engine;
        Ok(match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Integer(b as i64),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Integer(i),
                None => Value::Real(n.as_f64().ok_or(ParamError::OutOfRange)?),
            },
            serde_json::Value::String(s) => Value::Text(s),
            serde_json::Value::Object(m) if m.len() == 1 && m.contains_key("base64") => match &m["base64"] {
                serde_json::Value::String(b) => {
                    Value::Blob(base64::engine::general_purpose::STANDARD.decode(b).map_err(ParamError::Base64)?)
                }
                _ => return Err(ParamError::Base64NotString),
            },
            other => return Err(ParamError::Unsupported(other)),
        })
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Integer(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Integer(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Blob(v)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map(Into::into).unwrap_or(Value::Null)
    }
}

/// Statement parameters: positional (`[1, "a"]`, bound to `?`/`?N`) or named
/// (`{":name": "a"}`; a key without its `:`/`@`/`$` prefix gets `:`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(untagged)]
pub enum Params {
    #[default]
    None,
    Positional(Vec<Value>),
    Named(BTreeMap<String, Value>),
}

impl Params {
    pub fn is_none(&self) -> bool {
        matches!(self, Params::None)
    }
}

/// One SQL statement with its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    pub sql: String,
    #[serde(default, skip_serializing_if = "Params::is_none")]
    pub params: Params,
}

impl Statement {
    /// A statement without parameters.
    pub fn new(sql: impl Into<String>) -> Statement {
        Statement { sql: sql.into(), params: Params::None }
    }

    /// A statement with positional parameters.
    pub fn with_params(sql: impl Into<String>, params: Vec<Value>) -> Statement {
        Statement { sql: sql.into(), params: Params::Positional(params) }
    }

    /// A statement with named parameters (`:name`).
    pub fn with_named(sql: impl Into<String>, params: impl IntoIterator<Item = (String, Value)>) -> Statement {
        Statement { sql: sql.into(), params: Params::Named(params.into_iter().collect()) }
    }
}

/// Read-your-writes token: the log position of a committed write. A read
/// carrying it sees that write (or anything newer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Token {
    pub term: u64,
    pub index: u64,
}

impl Token {
    /// `term.index`, e.g. for a cookie.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.term, self.index)
    }

    /// Parse [`Token::encode`]'s format.
    pub fn decode(s: &str) -> Option<Token> {
        let (t, i) = s.split_once('.')?;
        Some(Token { term: t.parse().ok()?, index: i.parse().ok()? })
    }
}

/// `POST /v1/execute` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    pub statements: Vec<Statement>,
    /// Makes the write idempotent: a second request with the same id
    /// (within [`REQUEST_ID_RETENTION_MS`]) is not executed again; it gets
    /// the stored outcome of the first, with `replayed = true`. At most
    /// [`MAX_REQUEST_ID_BYTES`] bytes, no control characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Longest accepted [`ExecuteRequest::request_id`].
pub const MAX_REQUEST_ID_BYTES: usize = 256;
/// How long (by the primary's clock stamped in the log) a request id is
/// remembered after its write.
pub const REQUEST_ID_RETENTION_MS: u64 = 3_600_000;

/// Why a request id is refused (the request is at fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestIdError {
    #[error("`request_id` is empty")]
    Empty,
    #[error("`request_id` is {len} bytes; at most {max} are allowed", max = MAX_REQUEST_ID_BYTES)]
    TooLong { len: usize },
    #[error("`request_id` contains control characters")]
    ControlCharacters,
}

/// Why a request id is refused, if it is.
pub fn check_request_id(id: &str) -> Result<(), RequestIdError> {
    if id.is_empty() {
        return Err(RequestIdError::Empty);
    }
    if id.len() > MAX_REQUEST_ID_BYTES {
        return Err(RequestIdError::TooLong { len: id.len() });
    }
    if id.chars().any(char::is_control) {
        return Err(RequestIdError::ControlCharacters);
    }
    Ok(())
}

/// The outcome of one statement of a write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatementResult {
    pub rows_affected: u64,
    pub last_insert_id: i64,
}

/// `POST /v1/execute` answer: the write was committed by a majority.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecuteResult {
    /// Sum over all statements.
    pub rows_affected: u64,
    /// `last_insert_rowid()` after the last statement.
    pub last_insert_id: i64,
    pub results: Vec<StatementResult>,
    pub token: Token,
    /// True when this is the stored outcome of an earlier execution with
    /// the same `request_id` (the statements did not run again); `token`
    /// is then the token of that first write.
    #[serde(default)]
    pub replayed: bool,
}

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Whatever the node serving the read has applied.
    #[default]
    None,
    /// The serving replica is at most this far behind the primary (else it
    /// waits briefly, then redirects to the primary).
    Bounded { max_lag: std::time::Duration },
    /// Linearizable: served by the primary after confirming leadership
    /// with a majority (read index).
    Strong,
}

/// `POST /v1/query` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    pub sql: String,
    #[serde(default, skip_serializing_if = "Params::is_none")]
    pub params: Params,
    /// `none` (default), `bounded` or `strong`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<String>,
    /// For `bounded`: largest acceptable lag behind the primary, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lag_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Token>,
}

impl QueryRequest {
    pub fn new(sql: &str, params: Params, consistency: Consistency, token: Option<Token>) -> QueryRequest {
        let (c, lag) = match consistency {
            Consistency::None => (None, None),
            Consistency::Bounded { max_lag } => (Some("bounded".to_string()), Some(max_lag.as_millis() as u64)),
            Consistency::Strong => (Some("strong".to_string()), None),
        };
        QueryRequest { sql: sql.to_string(), params, consistency: c, max_lag_ms: lag, token }
    }

    pub fn consistency(&self) -> Result<Consistency, ConsistencyError> {
        match self.consistency.as_deref().unwrap_or("none") {
            "none" => Ok(Consistency::None),
            "strong" => Ok(Consistency::Strong),
            "bounded" => match self.max_lag_ms {
                Some(ms) => Ok(Consistency::Bounded { max_lag: std::time::Duration::from_millis(ms) }),
                None => Err(ConsistencyError::NoMaxLag),
            },
            other => Err(ConsistencyError::Unknown(other.to_string())),
        }
    }
}

/// Why a query's consistency is not understood (the request is at fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsistencyError {
    #[error("consistency `bounded` needs `max_lag_ms`")]
    NoMaxLag,
    #[error("unknown consistency `{0}` (none, bounded, strong)")]
    Unknown(String),
}

/// A result column: its name and declared type (`null` for expressions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub decl_type: Option<String>,
}

/// `POST /v1/query` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rows {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Value>>,
    /// Node that served the read and the log index it had applied.
    pub node_id: u64,
    pub applied_index: u64,
}

impl Rows {
    /// Index of a column by name.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// [`ErrorBody::code`] of a read whose token the node refuses at once: the
/// token is beyond the primary's log or of a term above its own, so no
/// write of this cluster ever produced it (forged, or from another
/// cluster). HTTP 400; [`crate::Client`] reads from the primary without it.
pub const BAD_TOKEN: &str = "bad_token";

/// Every error answer: `{"error": "...", "code": "..."}` plus hints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    /// Machine-readable kind: `sql`, `bad_request`, `bad_token`,
    /// `unauthorized`, `too_large`, `no_leader`, `no_quorum`, `timeout`,
    /// `not_found`, ...
    pub code: String,
    /// The request did not take effect and may be retried elsewhere.
    #[serde(default)]
    pub retryable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
}

/// A member of the cluster as reported by `/v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub id: u64,
    /// Its client API, what clients use.
    pub address: String,
    /// Its Raft listener, what the other nodes dial.
    #[serde(default)]
    pub raft_address: String,
    pub voter: bool,
}

/// How far a node is behind the primary.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct ReplicationLag {
    /// Entries the primary has applied that this node has not.
    pub entries: u64,
    /// How old this node's data may be: the age of the newest word from
    /// the primary whose applied index this node has applied.
    pub seconds: f64,
    /// False when no recent word from a primary: the lag is unknown.
    pub known: bool,
}

/// What a database node is in its cluster (`/v1/status`'s `role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DbRole {
    /// Takes the writes; a majority elected it.
    Primary,
    /// A voter following the primary.
    Replica,
    /// An asynchronous read replica: follows the primary, never votes.
    Learner,
    /// Campaigning to become primary.
    Candidate,
    /// Not a member yet (waits to be added).
    Detached,
    /// Its Raft has stopped.
    Stopped,
}

impl DbRole {
    /// Every role, in the order `/metrics` lists them.
    pub const ALL: [DbRole; 6] =
        [DbRole::Primary, DbRole::Replica, DbRole::Learner, DbRole::Candidate, DbRole::Detached, DbRole::Stopped];

    /// The role as `/v1/status` and `/metrics` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            DbRole::Primary => "primary",
            DbRole::Replica => "replica",
            DbRole::Learner => "learner",
            DbRole::Candidate => "candidate",
            DbRole::Detached => "detached",
            DbRole::Stopped => "stopped",
        }
    }

    /// A replica or a learner: a node that follows a primary.
    pub fn follows(self) -> bool {
        matches!(self, DbRole::Replica | DbRole::Learner)
    }
}

impl std::fmt::Display for DbRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: u64,
    /// This node's client API, what clients use.
    pub address: String,
    /// This node's Raft listener, what the other nodes dial.
    #[serde(default)]
    pub raft_address: String,
    pub role: DbRole,
    pub term: u64,
    pub leader_id: Option<u64>,
    pub leader_address: Option<String>,
    pub applied_index: u64,
    pub last_log_index: u64,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    /// Primary only: a majority acknowledged it within the election timeout.
    pub quorum: bool,
    pub lag: ReplicationLag,
    pub members: Vec<Member>,
    /// Primary only: per member, entries it is behind.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub replication: BTreeMap<u64, u64>,
}

/// `POST /v1/members/add`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    pub node_id: u64,
    /// The new node's client API (`advertise`).
    pub address: String,
    /// The new node's Raft listener (`raft_advertise`).
    pub raft_address: String,
    /// Voter (replica that counts for the majority) or learner (async).
    #[serde(default)]
    pub voter: bool,
}

/// `POST /v1/members/remove` and `POST /v1/promote`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeRef {
    pub node_id: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_json() {
        let vals =
            vec![Value::Null, Value::Integer(-3), Value::Real(1.5), Value::Text("x".into()), Value::Blob(vec![0, 255])];
        let j = serde_json::to_string(&vals).unwrap();
        assert_eq!(j, r#"[null,-3,1.5,"x",{"base64":"AP8="}]"#);
        let back: Vec<Value> = serde_json::from_str(&j).unwrap();
        assert_eq!(back, vals);
        assert!(serde_json::from_str::<Value>("[1]").is_err());
        assert_eq!(serde_json::from_str::<Value>("true").unwrap(), Value::Integer(1));
    }

    #[test]
    fn params_are_positional_or_named() {
        let s: Statement = serde_json::from_str(r#"{"sql":"x","params":[1,"a"]}"#).unwrap();
        assert_eq!(s.params, Params::Positional(vec![Value::Integer(1), Value::Text("a".into())]));
        let s: Statement = serde_json::from_str(r#"{"sql":"x","params":{":a":1}}"#).unwrap();
        assert!(matches!(s.params, Params::Named(_)));
        let s: Statement = serde_json::from_str(r#"{"sql":"x"}"#).unwrap();
        assert_eq!(s.params, Params::None);
    }

    #[test]
    fn consistency_parses_and_names_errors() {
        let q: QueryRequest =
            serde_json::from_str(r#"{"sql":"select 1","consistency":"bounded","max_lag_ms":50}"#).unwrap();
        assert_eq!(q.consistency().unwrap(), Consistency::Bounded { max_lag: std::time::Duration::from_millis(50) });
        let q: QueryRequest = serde_json::from_str(r#"{"sql":"select 1","consistency":"bounded"}"#).unwrap();
        assert!(q.consistency().unwrap_err().to_string().contains("max_lag_ms"));
        let q: QueryRequest = serde_json::from_str(r#"{"sql":"select 1","consistency":"eventual"}"#).unwrap();
        assert!(q.consistency().unwrap_err().to_string().contains("eventual"));
    }

    #[test]
    fn token_encodes_for_cookies() {
        let t = Token { term: 3, index: 42 };
        assert_eq!(Token::decode(&t.encode()), Some(t));
        assert_eq!(Token::decode("x.1"), None);
    }
}
