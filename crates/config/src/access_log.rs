//! The access log's format and destination, shared by the lb and the web
//! tier: top-level keys `access_log_format` and `access_log_file`.
//!
//! `access_log_format` is one of
//! - `"text"` (default): one structured line per request among the other
//!   log lines on stderr (target `access`);
//! - `"combined"`: the Apache/nginx combined format, read by GoAccess,
//!   AWStats and every log tool;
//! - `"json"`: one JSON object a line with every field below;
//! - a template naming fields as `$name` or `${name}` (`$$` is a dollar
//!   sign), e.g. `"$remote_addr $status $request_time_ms $request_id"`.
//!
//! With `access_log_file` the lines (any format but `text`) go to that
//! file, opened for appending and reopened on SIGUSR1 (logrotate's
//! `postrotate`); without it they go to stderr.
use serde::{Deserialize, Serialize};
use std::fmt;

/// One field of an access record, named as in templates and JSON keys
/// (nginx's variable names where nginx has one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessField {
    /// The client's IP address.
    RemoteAddr,
    /// When the request arrived: `10/Oct/2000:13:55:36 +0000` (UTC).
    TimeLocal,
    /// When the request arrived: `2000-10-10T13:55:36Z`.
    TimeIso8601,
    /// The request line: `GET /path?q HTTP/1.1`.
    Request,
    RequestMethod,
    /// The target with its query.
    RequestUri,
    /// `HTTP/1.1`, `HTTP/2.0`.
    ServerProtocol,
    Status,
    /// Response body bytes sent to the client.
    BodyBytesSent,
    HttpReferer,
    HttpUserAgent,
    /// The `Host` header (or the HTTP/2 authority).
    Host,
    RequestId,
    /// The frontend (lb) or route (web) that took the request.
    Route,
    /// The name of the server that answered.
    Upstream,
    /// Attempts after the first.
    Retries,
    /// Arrival until a server was picked (the body read ahead included).
    QueueMs,
    /// Time spent opening connections to servers (0 on a pooled one).
    ConnectMs,
    /// From sending the request until the head of the server's answer.
    UpstreamHeaderMs,
    /// Arrival until the last byte of the response was handed over.
    RequestTimeMs,
}

impl AccessField {
    pub const ALL: [AccessField; 20] = [
        AccessField::RemoteAddr,
        AccessField::TimeLocal,
        AccessField::TimeIso8601,
        AccessField::Request,
        AccessField::RequestMethod,
        AccessField::RequestUri,
        AccessField::ServerProtocol,
        AccessField::Status,
        AccessField::BodyBytesSent,
        AccessField::HttpReferer,
        AccessField::HttpUserAgent,
        AccessField::Host,
        AccessField::RequestId,
        AccessField::Route,
        AccessField::Upstream,
        AccessField::Retries,
        AccessField::QueueMs,
        AccessField::ConnectMs,
        AccessField::UpstreamHeaderMs,
        AccessField::RequestTimeMs,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AccessField::RemoteAddr => "remote_addr",
            AccessField::TimeLocal => "time_local",
            AccessField::TimeIso8601 => "time_iso8601",
            AccessField::Request => "request",
            AccessField::RequestMethod => "request_method",
            AccessField::RequestUri => "request_uri",
            AccessField::ServerProtocol => "server_protocol",
            AccessField::Status => "status",
            AccessField::BodyBytesSent => "body_bytes_sent",
            AccessField::HttpReferer => "http_referer",
            AccessField::HttpUserAgent => "http_user_agent",
            AccessField::Host => "host",
            AccessField::RequestId => "request_id",
            AccessField::Route => "route",
            AccessField::Upstream => "upstream",
            AccessField::Retries => "retries",
            AccessField::QueueMs => "queue_ms",
            AccessField::ConnectMs => "connect_ms",
            AccessField::UpstreamHeaderMs => "upstream_header_ms",
            AccessField::RequestTimeMs => "request_time_ms",
        }
    }

    pub fn from_name(name: &str) -> Option<AccessField> {
        AccessField::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// A piece of a template: text, or a field filled in per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart<F = AccessField> {
    Literal(String),
    Field(F),
}

/// How access lines are written.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum AccessLogFormat {
    /// A structured line among the other log lines (stderr only).
    #[default]
    Text,
    /// Apache/nginx combined.
    Combined,
    /// One JSON object a line.
    Json,
    /// The source text and its parsed parts.
    Template(String, Vec<TemplatePart>),
}

impl AccessLogFormat {
    /// Whether lines go through the access log writer (every format but
    /// `text`).
    pub fn is_written(&self) -> bool {
        !self.is_text()
    }

    pub fn is_text(&self) -> bool {
        matches!(self, AccessLogFormat::Text)
    }
}

/// A template that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown field `${0}` (fields: {1})")]
    UnknownField(String, String),
    #[error("`$` at byte {0} names no field (write `$$` for a dollar sign)")]
    Dangling(usize),
    #[error("`${{` at byte {0} is not closed")]
    Unclosed(usize),
    #[error("a template names at least one field (`$status`); or use text, combined or json")]
    NoField,
}

/// Parse an access log template: `$name`, `${name}`, `$$`, and literal
/// text; at least one field.
pub fn parse_template(text: &str) -> Result<Vec<TemplatePart>, TemplateError> {
    let names = AccessField::ALL.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ");
    let parts = parse_fields(text, AccessField::from_name, &names)?;
    if !parts.iter().any(|p| matches!(p, TemplatePart::Field(_))) {
        return Err(TemplateError::NoField);
    }
    Ok(parts)
}

/// Parse text with `$name` / `${name}` fields looked up by `lookup`
/// (`names` lists them for the error), `$$` for a dollar sign.
pub fn parse_fields<F>(
    text: &str,
    lookup: impl Fn(&str) -> Option<F>,
    names: &str,
) -> Result<Vec<TemplatePart<F>>, TemplateError> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            let next = text[i..].find('$').map_or(text.len(), |n| i + n);
            literal.push_str(&text[i..next]);
            i = next;
            continue;
        }
        let (name, end) = match bytes.get(i + 1) {
            Some(b'$') => {
                literal.push('$');
                i += 2;
                continue;
            }
            Some(b'{') => {
                let close = text[i + 2..].find('}').ok_or(TemplateError::Unclosed(i))?;
                (&text[i + 2..i + 2 + close], i + 3 + close)
            }
            _ => {
                let len = text[i + 1..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(text.len() - i - 1);
                (&text[i + 1..i + 1 + len], i + 1 + len)
            }
        };
        if name.is_empty() {
            return Err(TemplateError::Dangling(i));
        }
        let field = lookup(name).ok_or_else(|| TemplateError::UnknownField(name.to_string(), names.to_string()))?;
        if !literal.is_empty() {
            parts.push(TemplatePart::Literal(std::mem::take(&mut literal)));
        }
        parts.push(TemplatePart::Field(field));
        i = end;
    }
    if !literal.is_empty() {
        parts.push(TemplatePart::Literal(literal));
    }
    Ok(parts)
}

impl TryFrom<String> for AccessLogFormat {
    type Error = TemplateError;

    fn try_from(s: String) -> Result<Self, TemplateError> {
        Ok(match s.as_str() {
            "text" => AccessLogFormat::Text,
            "combined" => AccessLogFormat::Combined,
            "json" => AccessLogFormat::Json,
            _ => {
                let parts = parse_template(&s)?;
                AccessLogFormat::Template(s, parts)
            }
        })
    }
}

impl From<AccessLogFormat> for String {
    fn from(f: AccessLogFormat) -> String {
        f.to_string()
    }
}

impl fmt::Display for AccessLogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AccessLogFormat::Text => "text",
            AccessLogFormat::Combined => "combined",
            AccessLogFormat::Json => "json",
            AccessLogFormat::Template(s, _) => s,
        })
    }
}

/// Check the two keys together: a file takes written lines only.
pub fn check(v: &mut crate::Validator, format: &AccessLogFormat, file: Option<&std::path::Path>) {
    if file.is_some() && !format.is_written() {
        v.error("access_log_file", "needs access_log_format = \"combined\", \"json\" or a template");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(s: &str) -> Result<AccessLogFormat, TemplateError> {
        AccessLogFormat::try_from(s.to_string())
    }

    #[test]
    fn names_and_templates_parse() {
        assert_eq!(format("combined").unwrap(), AccessLogFormat::Combined);
        assert_eq!(format("json").unwrap(), AccessLogFormat::Json);
        let AccessLogFormat::Template(_, parts) = format("$remote_addr ${status}ms=$$$request_time_ms.").unwrap()
        else {
            panic!("a template")
        };
        assert_eq!(
            parts,
            vec![
                TemplatePart::Field(AccessField::RemoteAddr),
                TemplatePart::Literal(" ".into()),
                TemplatePart::Field(AccessField::Status),
                TemplatePart::Literal("ms=$".into()),
                TemplatePart::Field(AccessField::RequestTimeMs),
                TemplatePart::Literal(".".into()),
            ]
        );
    }

    #[test]
    fn bad_templates_say_why() {
        assert!(matches!(format("$nope").unwrap_err(), TemplateError::UnknownField(n, _) if n == "nope"));
        assert!(format("$nope").unwrap_err().to_string().contains("remote_addr"), "lists the fields");
        assert_eq!(format("a $ b").unwrap_err(), TemplateError::Dangling(2));
        assert_eq!(format("${status").unwrap_err(), TemplateError::Unclosed(0));
        assert_eq!(format("plain").unwrap_err(), TemplateError::NoField);
    }

    #[test]
    fn every_field_name_round_trips() {
        for f in AccessField::ALL {
            assert_eq!(AccessField::from_name(f.name()), Some(f));
        }
    }
}
