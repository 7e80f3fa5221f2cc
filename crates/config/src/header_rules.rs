//! Header rules of an lb frontend (`[frontend.headers]`) or a web
//! `[[proxy]]` route (`[proxy.headers]`): headers to remove, set (replace)
//! and add (append) on the request sent to the server and on the response
//! sent to the client, applied in that order, after the proxy's own
//! headers (forwarded headers, `Via`, the request id).
//!
//! ```toml
//! [frontend.headers]
//! request_set = { "X-Client-Port" = "$remote_port", "X-TLS" = "$tls_version $tls_cipher" }
//! request_remove = ["X-Debug"]
//! response_set = { "Strict-Transport-Security" = "max-age=63072000" }
//! response_remove = ["Server", "X-Powered-By"]
//! ```
//!
//! Values may name facts of the client's connection: `$remote_addr`,
//! `$remote_port`, `$scheme` (`http`/`https`), and on a TLS frontend
//! `$tls_version`, `$tls_cipher`, `$tls_sni`, `$tls_alpn` (empty when
//! unknown); `$$` is a dollar sign. Headers that carry the message's
//! framing or a hop's credential cannot be touched.
use crate::access_log::{parse_fields, TemplateError, TemplatePart};
use crate::Validator;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A fact of the client's connection a header value may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFact {
    RemoteAddr,
    RemotePort,
    Scheme,
    TlsVersion,
    TlsCipher,
    TlsSni,
    TlsAlpn,
}

impl ClientFact {
    pub const ALL: [ClientFact; 7] = [
        ClientFact::RemoteAddr,
        ClientFact::RemotePort,
        ClientFact::Scheme,
        ClientFact::TlsVersion,
        ClientFact::TlsCipher,
        ClientFact::TlsSni,
        ClientFact::TlsAlpn,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ClientFact::RemoteAddr => "remote_addr",
            ClientFact::RemotePort => "remote_port",
            ClientFact::Scheme => "scheme",
            ClientFact::TlsVersion => "tls_version",
            ClientFact::TlsCipher => "tls_cipher",
            ClientFact::TlsSni => "tls_sni",
            ClientFact::TlsAlpn => "tls_alpn",
        }
    }

    pub fn is_tls(self) -> bool {
        matches!(self, ClientFact::TlsVersion | ClientFact::TlsCipher | ClientFact::TlsSni | ClientFact::TlsAlpn)
    }
}

/// A header value: text with `$fact` fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HeaderTemplate {
    source: String,
    pub parts: Vec<TemplatePart<ClientFact>>,
}

impl HeaderTemplate {
    /// Whether a value names a TLS fact.
    pub fn names_tls(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, TemplatePart::Field(f) if f.is_tls()))
    }
}

impl TryFrom<String> for HeaderTemplate {
    type Error = TemplateError;

    fn try_from(source: String) -> Result<Self, TemplateError> {
        let names = ClientFact::ALL.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ");
        let lookup = |n: &str| ClientFact::ALL.into_iter().find(|f| f.name() == n);
        let parts = parse_fields(&source, lookup, &names)?;
        Ok(HeaderTemplate { source, parts })
    }
}

impl From<HeaderTemplate> for String {
    fn from(t: HeaderTemplate) -> String {
        t.source
    }
}

/// Headers to remove, set and add, on requests and responses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeaderRules {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub request_remove: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub request_set: BTreeMap<String, HeaderTemplate>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub request_add: BTreeMap<String, HeaderTemplate>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub response_remove: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub response_set: BTreeMap<String, HeaderTemplate>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub response_add: BTreeMap<String, HeaderTemplate>,
}

/// Headers no rule may touch: the message's framing, hop-by-hop headers,
/// the request's `Host`, and the tier credential.
const PROTECTED: [&str; 10] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
    "host",
    "x-bulwark-cluster",
];

fn is_token(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl HeaderRules {
    pub fn is_empty(&self) -> bool {
        self == &HeaderRules::default()
    }

    /// Whether a value names a TLS fact (the listener then keeps them).
    pub fn names_tls(&self) -> bool {
        [&self.request_set, &self.request_add, &self.response_set, &self.response_add]
            .iter()
            .any(|m| m.values().any(HeaderTemplate::names_tls))
    }

    /// Check names and literal values (`key` is this table's path).
    pub fn validate_in(&self, v: &mut Validator) {
        let names = |v: &mut Validator, key: &str, list: &mut dyn Iterator<Item = &String>| {
            for name in list {
                if !is_token(name) {
                    v.error(key, format!("`{name}` is not a header name"));
                } else if PROTECTED.contains(&name.to_ascii_lowercase().as_str()) {
                    v.error(key, format!("`{name}` cannot be changed by a rule (framing, hop-by-hop or credential)"));
                }
            }
        };
        names(v, "request_remove", &mut self.request_remove.iter());
        names(v, "response_remove", &mut self.response_remove.iter());
        for (key, map) in [
            ("request_set", &self.request_set),
            ("request_add", &self.request_add),
            ("response_set", &self.response_set),
            ("response_add", &self.response_add),
        ] {
            names(v, key, &mut map.keys());
            for (name, value) in map {
                let bad = value.parts.iter().any(|p| match p {
                    TemplatePart::Literal(l) => l.bytes().any(|b| b != b'\t' && !(0x20..0x7f).contains(&b)),
                    TemplatePart::Field(_) => false,
                });
                if bad {
                    v.error(key, format!("`{name}`: a header value is visible ASCII, spaces and tabs"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> Result<HeaderRules, String> {
        let r: HeaderRules = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut v = Validator::default();
        r.validate_in(&mut v);
        if v.is_empty() {
            Ok(r)
        } else {
            Err(format!("{v:?}"))
        }
    }

    #[test]
    fn values_name_client_facts() {
        let r = rules(
            r#"request_set = { "X-Client" = "$remote_addr:${remote_port}", "X-TLS" = "$tls_version" }
               response_remove = ["Server"]"#,
        )
        .unwrap();
        assert_eq!(
            r.request_set["X-Client"].parts,
            vec![
                TemplatePart::Field(ClientFact::RemoteAddr),
                TemplatePart::Literal(":".into()),
                TemplatePart::Field(ClientFact::RemotePort)
            ]
        );
        assert!(r.names_tls());
        assert!(!rules("request_set = { \"X-A\" = \"$scheme\" }").unwrap().names_tls());
    }

    #[test]
    fn framing_credentials_and_bad_names_are_refused() {
        assert!(rules(r#"request_remove = ["Host"]"#).unwrap_err().contains("cannot be changed"));
        assert!(rules(r#"response_set = { "Content-Length" = "0" }"#).unwrap_err().contains("cannot be changed"));
        assert!(rules(r#"request_set = { "X-Bulwark-Cluster" = "x" }"#).unwrap_err().contains("cannot be changed"));
        assert!(rules(r#"request_add = { "Bad Name" = "x" }"#).unwrap_err().contains("not a header name"));
        assert!(rules("request_add = { \"X-A\" = \"a\\nb\" }").unwrap_err().contains("visible ASCII"));
        assert!(rules(r#"request_add = { "X-A" = "$nope" }"#).unwrap_err().contains("remote_addr"));
        assert!(rules(r#"request_sett = {}"#).is_err(), "unknown keys are refused");
    }
}
