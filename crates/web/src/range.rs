//! `Range: bytes=...` parsing (RFC 9110 §14.1.2), for one representation of
//! known length.
//!
//! Only single ranges are served as 206; a request for several ranges gets
//! the whole representation (200), which RFC 9110 allows and nginx also
//! does in some cases. Syntactically invalid headers are ignored (200), as
//! the RFC requires.

/// What a `Range` header asks of a representation of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// Serve everything (no usable range).
    Whole,
    /// Serve bytes `start..=end` (206).
    Part { start: u64, end: u64 },
    /// Nothing in the range exists (416).
    Unsatisfiable,
}

/// Parse a `Range` header value against a length.
pub fn parse(value: &[u8], len: u64) -> ByteRange {
    let Ok(s) = std::str::from_utf8(value) else { return ByteRange::Whole };
    let s = s.trim();
    let Some((unit, set)) = s.split_once('=') else { return ByteRange::Whole };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return ByteRange::Whole;
    }
    let mut specs = set.split(',').map(str::trim).filter(|p| !p.is_empty());
    let Some(spec) = specs.next() else { return ByteRange::Whole };
    let single = parse_spec(spec);
    if specs.next().is_some() {
        // Several ranges: answer with the whole file (a multipart body is
        // optional), unless the syntax is broken, which is ignored anyway.
        return ByteRange::Whole;
    }
    match single {
        None => ByteRange::Whole,
        Some(Spec::From(start)) => {
            if start >= len {
                ByteRange::Unsatisfiable
            } else {
                ByteRange::Part { start, end: len - 1 }
            }
        }
        Some(Spec::FromTo(start, end)) => {
            if start >= len {
                ByteRange::Unsatisfiable
            } else {
                ByteRange::Part { start, end: end.min(len - 1) }
            }
        }
        Some(Spec::Suffix(n)) => {
            if n == 0 || len == 0 {
                ByteRange::Unsatisfiable
            } else {
                ByteRange::Part { start: len.saturating_sub(n), end: len - 1 }
            }
        }
    }
}

enum Spec {
    From(u64),
    FromTo(u64, u64),
    Suffix(u64),
}

fn number(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Absurdly long numbers are beyond any file: saturate.
    Some(s.parse::<u64>().unwrap_or(u64::MAX))
}

fn parse_spec(spec: &str) -> Option<Spec> {
    let (a, b) = spec.split_once('-')?;
    if a.trim().is_empty() {
        return number(b).map(Spec::Suffix);
    }
    let start = number(a)?;
    if b.trim().is_empty() {
        return Some(Spec::From(start));
    }
    let end = number(b)?;
    if end < start {
        return None;
    }
    Some(Spec::FromTo(start, end))
}

#[cfg(test)]
mod tests {
    use super::ByteRange::*;
    use super::*;

    #[test]
    fn single_ranges() {
        assert_eq!(parse(b"bytes=0-99", 1000), Part { start: 0, end: 99 });
        assert_eq!(parse(b"bytes=500-", 1000), Part { start: 500, end: 999 });
        assert_eq!(parse(b"bytes=-100", 1000), Part { start: 900, end: 999 });
        assert_eq!(parse(b"bytes=-5000", 1000), Part { start: 0, end: 999 });
        assert_eq!(parse(b"bytes=990-2000", 1000), Part { start: 990, end: 999 });
        assert_eq!(parse(b"Bytes = 1-1", 10), Part { start: 1, end: 1 });
        assert_eq!(parse(b"bytes=0-99999999999999999999999", 10), Part { start: 0, end: 9 });
    }

    #[test]
    fn unsatisfiable_ranges() {
        assert_eq!(parse(b"bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(parse(b"bytes=1000-2000", 1000), Unsatisfiable);
        assert_eq!(parse(b"bytes=-0", 1000), Unsatisfiable);
        assert_eq!(parse(b"bytes=0-0", 0), Unsatisfiable);
        assert_eq!(parse(b"bytes=-1", 0), Unsatisfiable);
    }

    #[test]
    fn invalid_or_multiple_ranges_mean_whole() {
        for h in [&b"bytes=5-1"[..], b"items=0-1", b"bytes=abc", b"bytes=", b"bytes=1-2-3", b"0-1", b"bytes=--1"] {
            assert_eq!(parse(h, 1000), Whole, "{}", String::from_utf8_lossy(h));
        }
        assert_eq!(parse(b"bytes=0-1,5-9", 1000), Whole);
    }
}
