//! Compression of proxied responses: `[compression]` on the web tier and
//! `[frontend.compression]` on the lb's http frontends, one schema for
//! both.
use crate::Validator;
use serde::{Deserialize, Serialize};

/// Compression of proxied responses: gzip and Brotli, chosen by the
/// client's `Accept-Encoding`. Off by default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Compression {
    pub enabled: bool,
    /// Media types compressed: an entry ending in `/` covers its whole
    /// type (`text/`), any other names one type.
    pub types: Vec<String>,
    /// Bodies known to be shorter than this are sent as they are.
    pub min_bytes: u64,
    /// gzip level, 1 (fast) to 9 (small).
    pub gzip_level: u32,
    /// Brotli quality, 0 (fast) to 11 (small).
    pub brotli_quality: u32,
}

impl Default for Compression {
    fn default() -> Self {
        Compression {
            enabled: false,
            types: [
                "text/",
                "application/json",
                "application/javascript",
                "application/xml",
                "application/xhtml+xml",
                "application/rss+xml",
                "application/atom+xml",
                "application/manifest+json",
                "application/wasm",
                "image/svg+xml",
            ]
            .map(String::from)
            .to_vec(),
            min_bytes: 1024,
            gzip_level: 5,
            brotli_quality: 4,
        }
    }
}

impl Compression {
    pub fn is_default(&self) -> bool {
        self == &Compression::default()
    }

    /// Check the levels (within the `compression` scope).
    pub fn validate_in(&self, v: &mut Validator) {
        if !(1..=9).contains(&self.gzip_level) {
            v.error("gzip_level", "must be 1 to 9");
        }
        if self.brotli_quality > 11 {
            v.error("brotli_quality", "must be 0 to 11");
        }
    }
}
