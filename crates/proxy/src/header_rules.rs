//! Header rules of a frontend or route ([`bulwark_config::header_rules`]),
//! compiled once per (re)load: names parsed, values without a field made
//! header values up front. Applied to the request after the proxy's own
//! headers (`crate::prepare`) and to every response the forwarder
//! returns, its error pages included ([`crate::Forwarder::forward`]):
//! remove, then set, then add.
//!
//! A value naming a fact of the client's connection is filled in from the
//! [`ClientContext`] ([`TlsFacts`] on a TLS frontend); only such values
//! are built per request.
use crate::forward::ClientContext;
use bulwark_config::access_log::TemplatePart;
use bulwark_config::header_rules::{ClientFact, HeaderRules, HeaderTemplate};
use http::{HeaderMap, HeaderName, HeaderValue};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// What the TLS handshake with the client settled, as header values.
#[derive(Debug, Clone)]
pub struct TlsFacts {
    /// `TLSv1.2`, `TLSv1.3`.
    pub version: HeaderValue,
    /// The cipher suite's IANA name, e.g. `TLS13_AES_128_GCM_SHA256`.
    pub cipher: HeaderValue,
    /// The server name the client asked for (SNI).
    pub sni: Option<HeaderValue>,
    /// The application protocol agreed (ALPN): `h2`, `http/1.1`.
    pub alpn: Option<HeaderValue>,
}

/// Why header rules do not compile: a name or value the config gave is not
/// valid HTTP (the config is wrong; retrying cannot help).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderRuleError {
    #[error("`{0}` is not a header name")]
    Name(String),
    #[error("`{0}` is not a header value")]
    Value(String),
}

/// A rule's value: ready, or built per request from the client's facts.
#[derive(Debug, Clone)]
enum Value {
    Fixed(HeaderValue),
    Built(Vec<TemplatePart<ClientFact>>),
}

impl Value {
    fn new(t: &HeaderTemplate) -> Result<Value, HeaderRuleError> {
        if t.parts.iter().any(|p| matches!(p, TemplatePart::Field(_))) {
            return Ok(Value::Built(t.parts.clone()));
        }
        let text: String = t
            .parts
            .iter()
            .map(|p| match p {
                TemplatePart::Literal(l) => l.as_str(),
                TemplatePart::Field(_) => "",
            })
            .collect();
        HeaderValue::from_str(&text).map(Value::Fixed).map_err(|_| HeaderRuleError::Value(text))
    }

    fn render(&self, ctx: &ClientContext) -> Option<HeaderValue> {
        let parts = match self {
            Value::Fixed(v) => return Some(v.clone()),
            Value::Built(parts) => parts,
        };
        let mut out = String::new();
        for p in parts {
            match p {
                TemplatePart::Literal(l) => out.push_str(l),
                TemplatePart::Field(f) => fact(*f, ctx, &mut out),
            }
        }
        HeaderValue::from_str(&out).ok()
    }
}

fn fact(f: ClientFact, ctx: &ClientContext, out: &mut String) {
    let tls = ctx.tls.as_ref();
    let text = |v: Option<&HeaderValue>, out: &mut String| {
        out.push_str(v.and_then(|v| v.to_str().ok()).unwrap_or(""));
    };
    match f {
        ClientFact::RemoteAddr => {
            let _ = write!(out, "{}", ctx.addr.ip());
        }
        ClientFact::RemotePort => {
            let _ = write!(out, "{}", ctx.addr.port());
        }
        ClientFact::Scheme => out.push_str(ctx.forwarded.proto),
        ClientFact::TlsVersion => text(tls.map(|t| &t.version), out),
        ClientFact::TlsCipher => text(tls.map(|t| &t.cipher), out),
        ClientFact::TlsSni => text(tls.and_then(|t| t.sni.as_ref()), out),
        ClientFact::TlsAlpn => text(tls.and_then(|t| t.alpn.as_ref()), out),
    }
}

/// Remove, set and add for one direction.
#[derive(Debug, Clone, Default)]
struct Ops {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, Value)>,
    add: Vec<(HeaderName, Value)>,
}

impl Ops {
    fn new(
        remove: &[String],
        set: &BTreeMap<String, HeaderTemplate>,
        add: &BTreeMap<String, HeaderTemplate>,
    ) -> Result<Ops, HeaderRuleError> {
        let name = |n: &String| HeaderName::from_bytes(n.as_bytes()).map_err(|_| HeaderRuleError::Name(n.clone()));
        let pairs = |m: &BTreeMap<String, HeaderTemplate>| -> Result<Vec<(HeaderName, Value)>, HeaderRuleError> {
            m.iter().map(|(n, v)| Ok((name(n)?, Value::new(v)?))).collect()
        };
        Ok(Ops { remove: remove.iter().map(name).collect::<Result<_, _>>()?, set: pairs(set)?, add: pairs(add)? })
    }

    fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    fn apply(&self, h: &mut HeaderMap, ctx: &ClientContext) {
        for n in &self.remove {
            h.remove(n);
        }
        for (n, v) in &self.set {
            match v.render(ctx) {
                Some(v) => {
                    h.insert(n.clone(), v);
                }
                None => {
                    h.remove(n);
                }
            }
        }
        for (n, v) in &self.add {
            if let Some(v) = v.render(ctx) {
                h.append(n.clone(), v);
            }
        }
    }
}

/// A frontend's or route's rules, ready to apply.
#[derive(Debug, Clone, Default)]
pub struct CompiledRules {
    request: Ops,
    response: Ops,
}

impl CompiledRules {
    /// Compile validated rules; `None` when there are none (nothing to do
    /// per request).
    pub fn new(rules: &HeaderRules) -> Result<Option<CompiledRules>, HeaderRuleError> {
        if rules.is_empty() {
            return Ok(None);
        }
        Ok(Some(CompiledRules {
            request: Ops::new(&rules.request_remove, &rules.request_set, &rules.request_add)?,
            response: Ops::new(&rules.response_remove, &rules.response_set, &rules.response_add)?,
        }))
    }

    pub fn apply_request(&self, h: &mut HeaderMap, ctx: &ClientContext) {
        if !self.request.is_empty() {
            self.request.apply(h, ctx);
        }
    }

    pub fn apply_response(&self, h: &mut HeaderMap, ctx: &ClientContext) {
        if !self.response.is_empty() {
            self.response.apply(h, ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(toml_text: &str) -> CompiledRules {
        let rules: HeaderRules = toml::from_str(toml_text).unwrap();
        CompiledRules::new(&rules).unwrap().unwrap()
    }

    fn ctx(tls: bool) -> ClientContext {
        let mut c = ClientContext::new("192.0.2.7:50123".parse().unwrap(), if tls { "https" } else { "http" });
        if tls {
            c.tls = Some(TlsFacts {
                version: HeaderValue::from_static("TLSv1.3"),
                cipher: HeaderValue::from_static("TLS13_AES_128_GCM_SHA256"),
                sni: Some(HeaderValue::from_static("example.test")),
                alpn: None,
            });
        }
        c
    }

    #[test]
    fn remove_then_set_then_add_with_client_facts() {
        let rules = compiled(
            r#"request_remove = ["X-Debug"]
               request_set = { "X-Client" = "$remote_addr:$remote_port", "X-Env" = "prod" }
               request_add = { "X-Tag" = "b" }
               response_set = { "X-TLS" = "$tls_version $tls_cipher $tls_sni [$tls_alpn] $scheme" }
               response_remove = ["Server"]"#,
        );
        let mut h = HeaderMap::new();
        h.insert("x-debug", HeaderValue::from_static("1"));
        h.insert("x-env", HeaderValue::from_static("dev"));
        h.insert("x-tag", HeaderValue::from_static("a"));
        rules.apply_request(&mut h, &ctx(false));
        assert!(!h.contains_key("x-debug"));
        assert_eq!(h["x-client"], "192.0.2.7:50123");
        assert_eq!(h["x-env"], "prod", "set replaces");
        assert_eq!(h.get_all("x-tag").iter().collect::<Vec<_>>(), ["a", "b"], "add appends");

        let mut r = HeaderMap::new();
        r.insert("server", HeaderValue::from_static("app/1.0"));
        rules.apply_response(&mut r, &ctx(true));
        assert!(!r.contains_key("server"));
        assert_eq!(r["x-tls"], "TLSv1.3 TLS13_AES_128_GCM_SHA256 example.test [] https");
    }

    #[test]
    fn no_rules_compile_to_nothing() {
        assert!(CompiledRules::new(&HeaderRules::default()).unwrap().is_none());
    }
}
