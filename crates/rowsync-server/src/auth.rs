//! Who is asking: bearer tokens, checked on every request.
//!
//! A token reads `rs_<id>_<secret>`: 16 hex digits that name it and 48 that
//! prove it (192 random bits). The server keeps the id, the user, the
//! SHA-256 of the secret, and when it was made, expires and was revoked, in
//! `rowsync_tokens`; the secret itself is shown once, when the token is made,
//! and stored nowhere. A leaked database therefore leaks no usable token,
//! and since the secret is random and long, one hash is as strong as a slow
//! password hash would be.
//!
//! Every request looks its token up again (one read by primary key), so a
//! revocation takes effect on the next request, on every server process.
//! This module is the pure part: making, parsing and judging tokens, with
//! the time passed in. The lookup is the store's; the middleware is in
//! [`crate::http`].

use std::time::Duration;

use rand::RngCore;
use sha2::{Digest, Sha256};

/// A token as the server keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    /// The public part of the token, which names it in lists and logs.
    pub id: String,
    pub user: String,
    /// SHA-256 of the secret, in hex.
    pub hash: String,
    /// Unix milliseconds.
    pub created_ms: u64,
    pub expires_ms: Option<u64>,
    pub revoked_ms: Option<u64>,
}

/// A token just made: the whole token, to show once, and what is stored.
#[derive(Clone, Debug)]
pub struct NewToken {
    pub token: String,
    pub record: TokenRecord,
}

/// Why a request's credentials were refused. The message is safe to send:
/// it tells a caller what is wrong with its own token and nothing else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("this server needs a token: send the header `Authorization: Bearer TOKEN` (make one with `rowsync token create`)")]
    Missing,
    #[error("the token is malformed: tokens look like rs_<16 hex digits>_<48 hex digits>")]
    Malformed,
    #[error("the token is unknown to this server")]
    Unknown,
    #[error("the token has expired: make a new one with `rowsync token create`")]
    Expired,
    #[error("the token was revoked: make a new one with `rowsync token create`")]
    Revoked,
}

const PREFIX: &str = "rs_";
const ID_HEX: usize = 16;
const SECRET_HEX: usize = 48;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Checks a user name: 1 to 64 lowercase letters, digits and `.`, `_`,
/// `-`, `@`. Private rows are filled with it, so it must be plain text; and
/// one case only, so that no database's collation can take two users for
/// one.
pub fn check_user(user: &str) -> Result<(), String> {
    let fine = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-' | '@');
    if user.is_empty() || user.len() > 64 || !user.chars().all(fine) {
        return Err(format!(
            "user name {user:?}: use 1 to 64 lowercase letters, digits and the characters . _ - @ \
             (such as ada or ada@example.org)"
        ));
    }
    Ok(())
}

/// Makes a token for `user`, valid for `lifetime` from `now_ms` (for ever
/// without one).
pub fn generate(user: &str, now_ms: u64, lifetime: Option<Duration>) -> Result<NewToken, String> {
    check_user(user)?;
    let mut id = [0u8; ID_HEX / 2];
    let mut secret = [0u8; SECRET_HEX / 2];
    rand::rngs::OsRng.fill_bytes(&mut id);
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let (id, secret) = (hex(&id), hex(&secret));
    let expires_ms = lifetime.map(|d| now_ms.saturating_add(d.as_millis().min(u64::MAX as u128) as u64));
    Ok(NewToken {
        token: format!("{PREFIX}{id}_{secret}"),
        record: TokenRecord {
            id,
            user: user.to_string(),
            hash: hash_secret(&secret),
            created_ms: now_ms,
            expires_ms,
            revoked_ms: None,
        },
    })
}

/// The id and secret of a token, if it has the shape of one.
pub fn parse(token: &str) -> Result<(&str, &str), Refusal> {
    let rest = token.strip_prefix(PREFIX).ok_or(Refusal::Malformed)?;
    let (id, secret) = rest.split_once('_').ok_or(Refusal::Malformed)?;
    let lower_hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !lower_hex(id, ID_HEX) || !lower_hex(secret, SECRET_HEX) {
        return Err(Refusal::Malformed);
    }
    Ok((id, secret))
}

/// The token of an `Authorization` header's value.
pub fn bearer(header: Option<&[u8]>) -> Result<&str, Refusal> {
    let value = std::str::from_utf8(header.ok_or(Refusal::Missing)?).map_err(|_| Refusal::Malformed)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(Refusal::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Refusal::Malformed);
    }
    Ok(token.trim())
}

/// Judges a presented secret against the stored record of its id (`None`:
/// no such id) at `now_ms`; returns the token's user.
pub fn judge<'r>(record: Option<&'r TokenRecord>, secret: &str, now_ms: u64) -> Result<&'r str, Refusal> {
    let record = record.ok_or(Refusal::Unknown)?;
    // Both sides are hashes of the same length: compare them in time that
    // does not depend on where they differ.
    let presented = hash_secret(secret);
    let differ = presented.bytes().zip(record.hash.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if differ != 0 || presented.len() != record.hash.len() {
        return Err(Refusal::Unknown);
    }
    if record.revoked_ms.is_some() {
        return Err(Refusal::Revoked);
    }
    if record.expires_ms.is_some_and(|expires| now_ms >= expires) {
        return Err(Refusal::Expired);
    }
    Ok(&record.user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_token_parses_and_is_judged_valid_until_it_expires() {
        let new = generate("ada", 1_000, Some(Duration::from_secs(60))).unwrap();
        let (id, secret) = parse(&new.token).unwrap();
        assert_eq!(id, new.record.id);
        assert!(!new.record.hash.contains(secret), "the secret is not stored");
        assert_eq!(judge(Some(&new.record), secret, 1_000), Ok("ada"));
        assert_eq!(judge(Some(&new.record), secret, 60_999), Ok("ada"));
        assert_eq!(judge(Some(&new.record), secret, 61_000), Err(Refusal::Expired));
    }

    #[test]
    fn wrong_secrets_unknown_ids_and_revoked_tokens_are_refused() {
        let new = generate("ada", 0, None).unwrap();
        let other = generate("bob", 0, None).unwrap();
        let (_, other_secret) = parse(&other.token).unwrap();
        assert_eq!(judge(Some(&new.record), other_secret, 0), Err(Refusal::Unknown));
        assert_eq!(judge(None, other_secret, 0), Err(Refusal::Unknown));
        let mut revoked = new.record.clone();
        revoked.revoked_ms = Some(5);
        let (_, secret) = parse(&new.token).unwrap();
        assert_eq!(judge(Some(&revoked), secret, 0), Err(Refusal::Revoked));
        assert_eq!(judge(Some(&new.record), secret, u64::MAX), Ok("ada"), "no expiry: valid for ever");
    }

    #[test]
    fn malformed_tokens_and_headers_are_told_apart_from_missing_ones() {
        for bad in ["", "rs_", "rs_abc_def", "xx_0123456789abcdef_", "rs_0123456789ABCDEF_00", "rs_0123456789abcdef"] {
            assert_eq!(parse(bad), Err(Refusal::Malformed), "{bad:?}");
        }
        let token = generate("ada", 0, None).unwrap().token;
        assert!(parse(&format!("{token}0")).is_err());
        assert_eq!(bearer(None), Err(Refusal::Missing));
        assert_eq!(bearer(Some(b"Basic abc")), Err(Refusal::Malformed));
        assert_eq!(bearer(Some(b"Bearer")), Err(Refusal::Malformed));
        assert_eq!(bearer(Some(&[0xff, 0xfe])), Err(Refusal::Malformed));
        assert_eq!(bearer(Some(format!("bearer {token}").as_bytes())), Ok(token.as_str()));
    }

    #[test]
    fn user_names_are_plain() {
        assert!(check_user("ada@example.org").is_ok());
        for bad in ["", "a b", "Ada", "x'; DROP TABLE t; --", &"a".repeat(65), "é"] {
            assert!(check_user(bad).is_err(), "{bad:?}");
        }
    }
}
