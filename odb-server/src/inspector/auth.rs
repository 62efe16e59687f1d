//! Who may see the inspector: whoever holds the service token.
//!
//! A request is let in with `Authorization: Bearer TOKEN`, or with the cookie a sign-in gives.
//! Signing in posts the token from a form; the answer sets a cookie holding a random session
//! id (never the token, which also grants writing through the protocol), `HttpOnly` (scripts
//! cannot read it) and `SameSite=Strict` (other sites cannot make the browser send it). Tokens
//! and session ids are compared in constant time, and wrong tokens are answered late by the
//! same per-address throttle as wrong tokens in a hello.

use parking_lot::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// The name of the session cookie.
pub(crate) const COOKIE: &str = "odb_inspector";

/// How long a session lasts after sign-in.
pub(crate) const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// Most sessions at once; signing in beyond it ends the oldest.
const MAX_SESSIONS: usize = 64;

/// Whether two secrets are equal, in time that does not depend on where they differ.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The token of an `Authorization: Bearer` header value.
pub(crate) fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The value of cookie `name` in a `Cookie` header value.
pub(crate) fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (n, v) = pair.trim().split_once('=')?;
        (n == name).then_some(v)
    })
}

/// The signed-in sessions.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    live: Mutex<Vec<(String, Instant)>>,
}

impl Sessions {
    /// Starts a session; returns its id, or `None` if no random number could be had.
    pub fn start(&self) -> Option<String> {
        let mut bytes = [0u8; 32];
        crate::tls::ring_provider()
            .secure_random
            .fill(&mut bytes)
            .ok()?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut live = self.live.lock();
        live.retain(|(_, expires)| *expires > now);
        if live.len() >= MAX_SESSIONS {
            live.remove(0);
        }
        live.push((id.clone(), now + SESSION_LIFETIME));
        Some(id)
    }

    /// Whether `id` is a live session. Every session is compared, each in constant time.
    pub fn is_live(&self, id: &str) -> bool {
        let now = Instant::now();
        let live = self.live.lock();
        live.iter().fold(false, |found, (known, expires)| {
            found | (same_secret(known, id) && *expires > now)
        })
    }

    /// Ends a session.
    pub fn end(&self, id: &str) {
        self.live
            .lock()
            .retain(|(known, _)| !same_secret(known, id));
    }
}

/// The value of field `name` in an `application/x-www-form-urlencoded` body.
pub(crate) fn form_field(body: &[u8], name: &str) -> Option<String> {
    let body = std::str::from_utf8(body).ok()?;
    body.split('&').find_map(|pair| {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(n)? == name)
            .then(|| percent_decode(v))
            .flatten()
    })
}

/// Decodes `+` and `%XX` escapes; `None` for a malformed escape or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = (bytes.next()? as char).to_digit(16)?;
                let lo = (bytes.next()? as char).to_digit(16)?;
                out.push((hi * 16 + lo) as u8);
            }
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_are_decoded() {
        assert_eq!(
            form_field(b"a=1&token=s%3Dcr+et%21", "token").as_deref(),
            Some("s=cr et!")
        );
        assert_eq!(form_field(b"token=%zz", "token"), None);
        assert_eq!(form_field(b"other=1", "token"), None);
        assert_eq!(form_field(b"token=%4", "token"), None);
    }

    #[test]
    fn headers_are_read() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(cookie("a=1; odb_inspector=xyz", COOKIE), Some("xyz"));
        assert_eq!(cookie("odb_inspector_x=1", COOKIE), None);
    }

    #[test]
    fn sessions_start_and_end() {
        let sessions = Sessions::default();
        let id = sessions.start().unwrap();
        assert_eq!(id.len(), 64);
        assert!(sessions.is_live(&id));
        assert!(!sessions.is_live("0"));
        let other = sessions.start().unwrap();
        assert_ne!(id, other);
        sessions.end(&id);
        assert!(!sessions.is_live(&id));
        assert!(sessions.is_live(&other));
    }

    #[test]
    fn sessions_are_capped() {
        let sessions = Sessions::default();
        let first = sessions.start().unwrap();
        for _ in 0..MAX_SESSIONS {
            sessions.start().unwrap();
        }
        assert!(!sessions.is_live(&first));
    }
}
