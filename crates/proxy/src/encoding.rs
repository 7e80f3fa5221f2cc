//! Choosing a precompressed sibling (`.br`, `.gz`) from `Accept-Encoding`
//! (RFC 9110 §12.5.3).

/// The content coding of a served representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
    Brotli,
}

impl Coding {
    /// The `Content-Encoding` token (none for identity).
    pub fn token(self) -> Option<&'static str> {
        match self {
            Coding::Identity => None,
            Coding::Gzip => Some("gzip"),
            Coding::Brotli => Some("br"),
        }
    }
}

/// The q-value of `coding` in an `Accept-Encoding` value (`*` covers codings
/// not listed; not mentioned at all means not acceptable). Thousandths.
fn quality(accept: &str, coding: &str) -> u16 {
    let mut star = None;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        let mut q = 1000;
        for p in parts {
            if let Some((k, v)) = p.split_once('=') {
                if k.trim().eq_ignore_ascii_case("q") {
                    q = parse_q(v.trim()).unwrap_or(0);
                }
            }
        }
        if name.eq_ignore_ascii_case(coding) || (coding == "gzip" && name.eq_ignore_ascii_case("x-gzip")) {
            return q;
        }
        if name == "*" {
            star = Some(q);
        }
    }
    star.unwrap_or(0)
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in thousandths.
fn parse_q(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for (i, b) in frac.bytes().enumerate() {
        thousandths += u16::from(b - b'0') * [100, 10, 1][i];
    }
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Pick the coding to serve: the acceptable (q > 0) precompressed sibling
/// with the highest q, Brotli first on a tie; identity otherwise.
pub fn negotiate(accept: Option<&[u8]>, have_br: bool, have_gzip: bool) -> Coding {
    let Some(accept) = accept.and_then(|a| std::str::from_utf8(a).ok()) else {
        return Coding::Identity;
    };
    let br = if have_br { quality(accept, "br") } else { 0 };
    let gz = if have_gzip { quality(accept, "gzip") } else { 0 };
    if br > 0 && br >= gz {
        Coding::Brotli
    } else if gz > 0 {
        Coding::Gzip
    } else {
        Coding::Identity
    }
}

#[cfg(test)]
mod tests {
    use super::Coding::*;
    use super::*;

    fn n(a: &str) -> Coding {
        negotiate(Some(a.as_bytes()), true, true)
    }

    #[test]
    fn prefers_brotli_then_gzip() {
        assert_eq!(n("gzip, deflate, br"), Brotli);
        assert_eq!(n("gzip"), Gzip);
        assert_eq!(n("x-gzip"), Gzip);
        assert_eq!(n("br;q=0.5, gzip;q=0.8"), Gzip);
        assert_eq!(n("br;q=1.0, gzip;q=0.999"), Brotli);
        assert_eq!(n("*"), Brotli);
        assert_eq!(n("*;q=0.1, br;q=0"), Gzip);
    }

    #[test]
    fn identity_when_nothing_acceptable_or_available() {
        assert_eq!(negotiate(None, true, true), Identity);
        assert_eq!(n("identity"), Identity);
        assert_eq!(n("gzip;q=0, br;q=0.000"), Identity);
        assert_eq!(n("deflate"), Identity);
        assert_eq!(negotiate(Some(b"br"), false, true), Identity);
        assert_eq!(negotiate(Some(b"br, gzip"), false, true), Gzip);
        // An invalid q-value makes the coding unacceptable.
        assert_eq!(n("gzip;q=2"), Identity);
    }
}
