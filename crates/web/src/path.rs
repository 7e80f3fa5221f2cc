//! Turning a request path into a path relative to the root that cannot
//! leave it.
//!
//! The request path is split on `/` first and each segment is then
//! percent-decoded, so an encoded separator (`%2f`) can never create a new
//! segment. A segment that decodes to `..` is refused, not resolved: a URL
//! that tries to climb is an attack or a bug, never a file to serve. Symlinks
//! are checked separately, after resolution on disk (see `files.rs`).
use http::StatusCode;
use percent_encoding::percent_decode;
use std::borrow::Cow;

/// Why a request path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRefusal {
    /// Not an absolute path (`*`, empty).
    NotAbsolute,
    /// A `..` segment, plain or percent-encoded.
    Traversal,
    /// A `/` or `\` that came from percent-decoding, or a raw `\`.
    EncodedSeparator,
    /// A NUL byte.
    Nul,
    /// A segment starting with `.` while dotfiles are hidden.
    Hidden,
}

impl PathRefusal {
    pub fn status(self) -> StatusCode {
        match self {
            PathRefusal::NotAbsolute | PathRefusal::Nul => StatusCode::BAD_REQUEST,
            PathRefusal::Traversal | PathRefusal::EncodedSeparator => StatusCode::FORBIDDEN,
            PathRefusal::Hidden => StatusCode::NOT_FOUND,
        }
    }
}

/// A request path made safe: segments joined by `/`, no leading slash, no
/// empty, `.` or `..` segments, no NUL. `rel` is empty for the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanPath<'a> {
    pub rel: Cow<'a, [u8]>,
    /// The URL ended in `/` (asks for a directory).
    pub trailing_slash: bool,
}

impl CleanPath<'_> {
    /// The key this path is cached under: `rel`, plus a final `/` when the
    /// URL asked for a directory.
    pub fn key(&self) -> Cow<'_, [u8]> {
        if self.trailing_slash && !self.rel.is_empty() {
            let mut k = self.rel.to_vec();
            k.push(b'/');
            Cow::Owned(k)
        } else {
            Cow::Borrowed(&self.rel)
        }
    }
}

/// Sanitise the path of a request URI (`uri.path()`, still percent-encoded).
pub fn sanitize(raw: &str, dotfiles: bool) -> Result<CleanPath<'_>, PathRefusal> {
    let Some(body) = raw.strip_prefix('/') else {
        return Err(PathRefusal::NotAbsolute);
    };
    let trailing_slash = body.is_empty() || body.ends_with('/');
    // Fast path: nothing to decode or drop, so `body` is already clean.
    let trimmed = body.strip_suffix('/').unwrap_or(body);
    if trimmed.is_empty() && body.len() <= 1 {
        return Ok(CleanPath { rel: Cow::Borrowed(b""), trailing_slash: true });
    }
    let mut plain = true;
    for seg in trimmed.split('/') {
        let b = seg.as_bytes();
        if b.is_empty() || b.contains(&b'%') || seg == "." || b.contains(&b'\\') || b.contains(&0) {
            plain = false;
            break;
        }
        if seg == ".." {
            return Err(PathRefusal::Traversal);
        }
        if !dotfiles && b[0] == b'.' {
            return Err(PathRefusal::Hidden);
        }
    }
    if plain {
        return Ok(CleanPath { rel: Cow::Borrowed(trimmed.as_bytes()), trailing_slash });
    }
    let mut out: Vec<u8> = Vec::with_capacity(body.len());
    let mut last_was_dot = false;
    for seg in body.split('/') {
        if seg.as_bytes().contains(&b'\\') {
            return Err(PathRefusal::EncodedSeparator);
        }
        let decoded: Cow<'_, [u8]> = percent_decode(seg.as_bytes()).into();
        if decoded.contains(&0) {
            return Err(PathRefusal::Nul);
        }
        if decoded.contains(&b'/') || decoded.contains(&b'\\') {
            return Err(PathRefusal::EncodedSeparator);
        }
        last_was_dot = false;
        match &*decoded {
            b"" => continue,
            b"." => {
                last_was_dot = true;
                continue;
            }
            b".." => return Err(PathRefusal::Traversal),
            d if !dotfiles && d[0] == b'.' => return Err(PathRefusal::Hidden),
            d => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(d);
            }
        }
    }
    // `/dir/.` names the directory itself, like `/dir/`.
    let trailing_slash = trailing_slash || last_was_dot || out.is_empty();
    Ok(CleanPath { rel: Cow::Owned(out), trailing_slash })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> (String, bool) {
        let c = sanitize(raw, false).unwrap_or_else(|e| panic!("{raw}: {e:?}"));
        (String::from_utf8(c.rel.into_owned()).unwrap(), c.trailing_slash)
    }

    #[test]
    fn plain_paths_pass_through_borrowed() {
        assert_eq!(ok("/"), ("".into(), true));
        assert_eq!(ok("/index.html"), ("index.html".into(), false));
        assert_eq!(ok("/a/b/c.css"), ("a/b/c.css".into(), false));
        assert_eq!(ok("/docs/"), ("docs".into(), true));
        assert!(matches!(sanitize("/a/b.txt", false).unwrap().rel, Cow::Borrowed(_)));
    }

    #[test]
    fn decodes_and_normalises() {
        assert_eq!(ok("/a%20b.txt"), ("a b.txt".into(), false));
        assert_eq!(ok("//a///b"), ("a/b".into(), false));
        assert_eq!(ok("/a/./b"), ("a/b".into(), false));
        assert_eq!(ok("/a/."), ("a".into(), true));
        assert_eq!(ok("/%2e/a"), ("a".into(), false));
        assert_eq!(ok("/caf%C3%A9"), ("café".into(), false));
    }

    #[test]
    fn refuses_traversal_in_every_spelling() {
        for raw in ["/../etc/passwd", "/a/../../etc/passwd", "/%2e%2e/etc/passwd", "/%2E%2E%2fetc", "/.%2e/x", "/a/.."]
        {
            let r = sanitize(raw, true).unwrap_err();
            assert!(matches!(r, PathRefusal::Traversal | PathRefusal::EncodedSeparator), "{raw}: {r:?}");
            assert!(r.status() == StatusCode::FORBIDDEN, "{raw}");
        }
        assert_eq!(sanitize("/%2e%2e%2fetc%2fpasswd", true), Err(PathRefusal::EncodedSeparator));
        assert_eq!(sanitize("/a%2fb", true), Err(PathRefusal::EncodedSeparator));
        assert_eq!(sanitize("/a%5cb", true), Err(PathRefusal::EncodedSeparator));
        assert_eq!(sanitize("/a\\..\\b", true), Err(PathRefusal::EncodedSeparator));
    }

    #[test]
    fn refuses_nul_and_relative() {
        assert_eq!(sanitize("/a%00.txt", true), Err(PathRefusal::Nul));
        assert_eq!(sanitize("*", true), Err(PathRefusal::NotAbsolute));
        assert_eq!(sanitize("", true), Err(PathRefusal::NotAbsolute));
    }

    #[test]
    fn hides_dotfiles_unless_allowed() {
        assert_eq!(sanitize("/.env", false), Err(PathRefusal::Hidden));
        assert_eq!(sanitize("/a/.git/config", false), Err(PathRefusal::Hidden));
        assert_eq!(sanitize("/%2egit/config", false), Err(PathRefusal::Hidden));
        assert_eq!(sanitize("/.env", false).unwrap_err().status(), StatusCode::NOT_FOUND);
        assert_eq!(&*sanitize("/.well-known/x", true).unwrap().rel, b".well-known/x");
        assert_eq!(&*sanitize("/a.b/c", false).unwrap().rel, b"a.b/c");
    }

    #[test]
    fn cache_key_keeps_the_directory_slash() {
        assert_eq!(&*sanitize("/docs/", false).unwrap().key(), b"docs/");
        assert_eq!(&*sanitize("/docs", false).unwrap().key(), b"docs");
        assert_eq!(&*sanitize("/", false).unwrap().key(), b"");
    }
}
