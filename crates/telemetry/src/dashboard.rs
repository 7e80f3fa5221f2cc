//! The dashboard page and the headers it is served with.
//!
//! The page is one self-contained HTML file: one inline `<style>`, one
//! inline `<script>`, no other resource. Its Content-Security-Policy allows
//! exactly those two blocks by their SHA-256 hashes, its data requests to
//! its own origin, and nothing else: no other script, no inline event
//! handler or `style` attribute, no framing, no form posting anywhere. A
//! value that slipped past the page's escaping could change text, but could
//! neither run code nor send the token elsewhere.
use base64::Engine as _;
use std::sync::LazyLock;

/// The live dashboard page the lb's admin listener serves at `/dashboard`:
/// one self-contained HTML file (inline CSS and JS, no external resources)
/// that polls `api/overview` (relative, so it works under any prefix) every
/// second, passing a `?token=` it was opened with (or one typed into its
/// token form) as `Authorization: Bearer`. DOM hooks for tests: every server
/// and node box has `data-node` and `data-state`; the "cannot reach the load
/// balancer" banner is `#offline`, the token form `#token-form`.
pub const DASHBOARD_HTML: &str = include_str!("../assets/dashboard.html");

/// `Content-Security-Policy` of the dashboard page.
pub fn dashboard_csp() -> &'static str {
    static CSP: LazyLock<String> = LazyLock::new(|| {
        format!(
            "default-src 'none'; script-src '{}'; style-src '{}'; connect-src 'self'; img-src 'self'; \
             base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            sha256_source(inline_block(DASHBOARD_HTML, "script")),
            sha256_source(inline_block(DASHBOARD_HTML, "style")),
        )
    });
    &CSP
}

/// `Content-Security-Policy` of every other admin answer (JSON, text): no
/// content of any kind, never framed.
pub const NO_CONTENT_CSP: &str = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The headers every admin answer carries, the page's own CSP aside.
pub const HARDENING_HEADERS: [(&str, &str); 3] =
    [("x-frame-options", "DENY"), ("x-content-type-options", "nosniff"), ("referrer-policy", "no-referrer")];

/// The text between `<tag>` and `</tag>`: what a browser hashes for CSP.
/// The page has exactly one of each (checked by the tests below).
fn inline_block<'a>(page: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = page.find(&open).map(|i| i + open.len()).unwrap_or(0);
    let end = page[start..].find(&close).map(|i| start + i).unwrap_or(start);
    &page[start..end]
}

/// A CSP hash source: `sha256-<base64 of the digest>`.
fn sha256_source(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    format!("sha256-{}", base64::engine::general_purpose::STANDARD.encode(digest.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_hashes_the_one_script_and_the_one_style() {
        let page = DASHBOARD_HTML;
        for tag in ["script", "style"] {
            assert_eq!(page.matches(&format!("<{tag}")).count(), 1, "exactly one <{tag}> block");
            assert_eq!(page.matches(&format!("</{tag}>")).count(), 1);
            assert!(inline_block(page, tag).len() > 1000, "<{tag}> is found");
        }
        let csp = dashboard_csp();
        assert!(csp.contains(&format!("script-src '{}'", sha256_source(inline_block(page, "script")))), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        // A known vector: sha256("") in base64.
        assert_eq!(sha256_source(""), "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
    }

    /// The policy blocks inline handlers and `style` attributes: the page
    /// must not use them (it sets styles through the CSSOM instead).
    #[test]
    fn the_page_has_no_inline_handlers_or_style_attributes() {
        let page = DASHBOARD_HTML;
        for bad in [" style=\"", " style='", "javascript:", "eval(", "new Function"] {
            assert!(!page.contains(bad), "`{bad}` is blocked by the page's CSP");
        }
        for attr in ["onclick", "onload", "onerror", "onsubmit", "oninput", "onchange"] {
            assert!(!page.contains(&format!(" {attr}=")), "inline `{attr}` is blocked by the page's CSP");
        }
    }
}
