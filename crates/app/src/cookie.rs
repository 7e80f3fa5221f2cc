//! The signed read-your-writes cookie: `term.index.signature`, where the
//! signature is HMAC-SHA256 over `term.index` (base64url, no padding).
//!
//! The key is derived from the cluster secret (HMAC-SHA256 of a fixed
//! label keyed with the secret: the secret itself never keys anything
//! else), so every app server of the cluster accepts the cookies of the
//! others. Without a secret each server draws a random key: its cookies
//! still work with it, and are ignored by the others (their reads are then
//! plain reads). A cookie whose signature does not verify (constant-time
//! check) is ignored: the read goes on without a token. So a visitor cannot
//! hand the database a token that no write produced.
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bulwark_db_api::Token;
use ring::hmac;

/// What the cookie key is derived with from the cluster secret.
const KEY_LABEL: &[u8] = b"bulwark guestbook read-your-writes cookie v1";

/// Signs and checks read-your-writes cookies.
pub struct CookieKey(hmac::Key);

impl CookieKey {
    /// The key all app servers with this cluster secret share.
    pub fn from_secret(secret: &str) -> CookieKey {
        let master = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        let derived = hmac::sign(&master, KEY_LABEL);
        CookieKey(hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()))
    }

    /// A key of this process only.
    pub fn random() -> CookieKey {
        let rng = ring::rand::SystemRandom::new();
        CookieKey(hmac::Key::generate(hmac::HMAC_SHA256, &rng).expect("the system's random number generator works"))
    }

    /// The cookie value for `token`.
    pub fn sign(&self, token: Token) -> String {
        let payload = token.encode();
        let tag = hmac::sign(&self.0, payload.as_bytes());
        format!("{payload}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// The token of a cookie value whose signature verifies.
    pub fn verify(&self, value: &str) -> Option<Token> {
        let (payload, signature) = value.rsplit_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(signature).ok()?;
        hmac::verify(&self.0, payload.as_bytes(), &tag).ok()?;
        Token::decode(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cookies_signed_with_the_cluster_key_give_a_token() {
        let key = CookieKey::from_secret("the-cluster-secret-0123");
        let t = Token { term: 3, index: 42 };
        let cookie = key.sign(t);
        assert!(cookie.starts_with("3.42."), "{cookie}");
        assert_eq!(key.verify(&cookie), Some(t));
        // Another server with the same secret accepts it.
        assert_eq!(CookieKey::from_secret("the-cluster-secret-0123").verify(&cookie), Some(t));
        // Unsigned, forged, re-pointed or foreign cookies give nothing.
        for bad in [
            "3.42".to_string(),
            "1.18446744073709551615".to_string(),
            cookie.replacen("3.42", "3.43", 1),
            format!("{cookie}x"),
            CookieKey::from_secret("another-secret-0123456").sign(t),
            CookieKey::random().sign(t),
            "3.42.!!".to_string(),
        ] {
            assert_eq!(key.verify(&bad), None, "{bad}");
        }
    }

    #[test]
    fn the_key_is_not_the_secret() {
        let secret = "the-cluster-secret-0123";
        let plain = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        let t = Token { term: 1, index: 1 };
        let with_secret = URL_SAFE_NO_PAD.encode(hmac::sign(&plain, t.encode().as_bytes()).as_ref());
        assert!(!CookieKey::from_secret(secret).sign(t).ends_with(&with_secret));
    }
}
