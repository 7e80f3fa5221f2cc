//! Sticky sessions by cookie (a backend's `sticky = "cookie"`, HAProxy's
//! `cookie SERVERID insert indirect`): the answer to a client without a
//! valid cookie sets one naming the server that answered, signed; a
//! request carrying it goes to that server while the server is available
//! (not disabled, not down, not ejected, under its connection cap), and is
//! balanced again otherwise, getting a new cookie.
//!
//! The cookie is `<server name>.<tag>`, the tag HMAC-SHA256 over the
//! backend and server names (base64url), checked in constant time. A client
//! can only name a server of this backend that this lb signed for: a
//! forged, altered or foreign cookie is ignored, and the cookie never
//! carries an address. The cookie is removed from the request before it
//! is forwarded: the servers never see it.
use base64::Engine;
use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue};
use ring::hmac;

/// The signing key and cookie name of one backend.
pub struct StickyCookie {
    name: String,
    key: hmac::Key,
    /// The random key's bytes, kept so a reload keeps the cookies valid.
    random: Option<[u8; 32]>,
}

impl std::fmt::Debug for StickyCookie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StickyCookie({})", self.name)
    }
}

impl StickyCookie {
    /// Sign with a key derived from `secret`; with none, a random key
    /// (the `previous` one's across a reload).
    pub fn new(name: &str, secret: Option<&[u8]>, previous: Option<&StickyCookie>) -> StickyCookie {
        let (key, random) = match secret {
            Some(s) => {
                let derive = hmac::Key::new(hmac::HMAC_SHA256, s);
                let derived = hmac::sign(&derive, b"bulwark sticky cookie v1");
                (hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()), None)
            }
            None => {
                let bytes = previous.and_then(|p| p.random).unwrap_or_else(rand::random);
                (hmac::Key::new(hmac::HMAC_SHA256, &bytes), Some(bytes))
            }
        };
        StickyCookie { name: name.to_string(), key, random }
    }

    fn message(backend: &str, server: &str) -> Vec<u8> {
        [backend.as_bytes(), b"\0", server.as_bytes()].concat()
    }

    fn tag(&self, backend: &str, server: &str) -> String {
        let full = hmac::sign(&self.key, &Self::message(backend, server));
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(full.as_ref())
    }

    /// The server name a request's valid cookie names, if any.
    pub fn server_named<'h>(&self, headers: &'h HeaderMap, backend: &str) -> Option<&'h str> {
        let value = cookie_value(headers, &self.name)?;
        let (server, tag) = value.rsplit_once('.')?;
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(tag).ok()?;
        hmac::verify(&self.key, &Self::message(backend, server), &tag).ok()?;
        Some(server)
    }

    /// `Set-Cookie` naming `server`; `Secure` when the client used HTTPS.
    pub fn set_cookie(&self, backend: &str, server: &str, secure: bool) -> Option<HeaderValue> {
        let secure = if secure { "; Secure" } else { "" };
        let tag = self.tag(backend, server);
        HeaderValue::from_str(&format!("{}={server}.{tag}; Path=/; HttpOnly; SameSite=Lax{secure}", self.name)).ok()
    }

    /// Remove this cookie from the request's `Cookie` headers (the other
    /// cookies stay, in order).
    pub fn strip(&self, headers: &mut HeaderMap) {
        if cookie_value(headers, &self.name).is_none() {
            return;
        }
        let kept: Vec<String> = headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .map(str::trim)
            .filter(|pair| !pair.is_empty() && pair.split_once('=').map_or(*pair, |(k, _)| k).trim() != self.name)
            .map(str::to_string)
            .collect();
        headers.remove(COOKIE);
        if !kept.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
                headers.insert(COOKIE, v);
            }
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim())
}

/// Add a `Set-Cookie` to a response.
pub(crate) fn add_set_cookie(headers: &mut HeaderMap, value: HeaderValue) {
    headers.append(SET_COOKIE, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_str(v).unwrap());
        h
    }

    fn value_of(set_cookie: &HeaderValue) -> String {
        set_cookie.to_str().unwrap().split(';').next().unwrap().split_once('=').unwrap().1.to_string()
    }

    #[test]
    fn a_signed_cookie_names_its_server_and_nothing_else_does() {
        let c = StickyCookie::new("srv", Some(b"0123456789abcdef0123"), None);
        let set = c.set_cookie("app", "web1", true).unwrap();
        assert!(set.to_str().unwrap().ends_with("; Path=/; HttpOnly; SameSite=Lax; Secure"), "{set:?}");
        let good = value_of(&set);
        assert_eq!(c.server_named(&with_cookie(&format!("a=1; srv={good}; b=2")), "app"), Some("web1"));

        let (_, tag) = good.rsplit_once('.').unwrap();
        let forged = [
            format!("web2.{tag}"),                      // another server, web1's tag
            format!("web1.{}", &tag[..tag.len() - 1]),  // truncated
            format!("web1.{}A", &tag[..tag.len() - 1]), // altered
            "web1".to_string(),
            "127.0.0.1:8080".to_string(),
            format!("web1.{tag}.extra"),
        ];
        for f in forged {
            assert_eq!(c.server_named(&with_cookie(&format!("srv={f}")), "app"), None, "{f}");
        }
        assert_eq!(c.server_named(&with_cookie(&format!("srv={good}")), "other-backend"), None);
        let other_key = StickyCookie::new("srv", Some(b"another-secret-of-16+"), None);
        assert_eq!(other_key.server_named(&with_cookie(&format!("srv={good}")), "app"), None);
    }

    #[test]
    fn a_random_key_survives_a_reload() {
        let first = StickyCookie::new("srv", None, None);
        let good = value_of(&first.set_cookie("app", "web1", false).unwrap());
        let reloaded = StickyCookie::new("srv", None, Some(&first));
        assert_eq!(reloaded.server_named(&with_cookie(&format!("srv={good}")), "app"), Some("web1"));
        let restarted = StickyCookie::new("srv", None, None);
        assert_eq!(restarted.server_named(&with_cookie(&format!("srv={good}")), "app"), None);
    }

    #[test]
    fn the_cookie_is_stripped_and_the_others_kept() {
        let c = StickyCookie::new("srv", Some(b"0123456789abcdef0123"), None);
        let mut h = with_cookie("a=1; srv=x.y; b=2");
        h.append(COOKIE, HeaderValue::from_static("srv=z"));
        c.strip(&mut h);
        assert_eq!(h.get_all(COOKIE).iter().collect::<Vec<_>>(), ["a=1; b=2"]);
        let mut only = with_cookie("srv=x.y");
        c.strip(&mut only);
        assert!(!only.contains_key(COOKIE));
    }
}
