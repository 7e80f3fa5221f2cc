//! The security-headers preset (`[security_headers]`): headers set on
//! every response, static or proxied, that does not carry its own (an
//! application's stricter policy wins). Off, it is one `None` check per
//! response.
use bulwark_config::web::SecurityHeaders;
use http::header::{CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS};
use http::{HeaderMap, HeaderName, HeaderValue};

/// Why the preset cannot be built: the configured policy is not a header
/// value (the config is wrong; retrying cannot help).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("content_security_policy is not a header value")]
pub struct PolicyNotHeaderValue;

/// The headers of the preset, ready to apply.
#[derive(Debug, Clone)]
pub struct SecurityPreset(Vec<(HeaderName, HeaderValue)>);

impl SecurityPreset {
    /// `None` when the preset is off and no policy is configured.
    pub fn new(cfg: &SecurityHeaders) -> Result<Option<SecurityPreset>, PolicyNotHeaderValue> {
        let mut headers = Vec::new();
        if cfg.enabled {
            headers.push((X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")));
            headers.push((REFERRER_POLICY, HeaderValue::from_static("strict-origin-when-cross-origin")));
            headers.push((X_FRAME_OPTIONS, HeaderValue::from_static("SAMEORIGIN")));
        }
        if let Some(csp) = &cfg.content_security_policy {
            let v = HeaderValue::from_str(csp).map_err(|_| PolicyNotHeaderValue)?;
            headers.push((CONTENT_SECURITY_POLICY, v));
        }
        Ok((!headers.is_empty()).then_some(SecurityPreset(headers)))
    }

    /// Set each header the response does not have.
    pub fn apply(&self, h: &mut HeaderMap) {
        for (name, value) in &self.0 {
            if !h.contains_key(name) {
                h.insert(name.clone(), value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preset_fills_in_what_the_response_lacks() {
        let cfg = SecurityHeaders { enabled: true, content_security_policy: Some("default-src 'self'".into()) };
        let preset = SecurityPreset::new(&cfg).unwrap().unwrap();
        let mut h = HeaderMap::new();
        h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        preset.apply(&mut h);
        assert_eq!(h[X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(h[REFERRER_POLICY], "strict-origin-when-cross-origin");
        assert_eq!(h[X_FRAME_OPTIONS], "DENY", "the application's own value wins");
        assert_eq!(h[CONTENT_SECURITY_POLICY], "default-src 'self'");
        assert!(SecurityPreset::new(&SecurityHeaders::default()).unwrap().is_none());
    }
}
