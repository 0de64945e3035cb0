//! Badges: HS256 JWTs that say who someone is.
//!
//! The algorithm is pinned (`none` and every other `alg` are refused by jwt-compact's validator),
//! and we check what jwt-compact leaves to us: `iss`, `aud`, a sane `iat`, and the subject's shape.
//! Two keys may verify at once (current and previous) so the secret can be rotated without
//! logging everyone out; the `kid` header says which key signed.

use std::cell::RefCell;
use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use jwt_compact::alg::{Hs256, Hs256Key};
use jwt_compact::{AlgorithmExt, Claims, Header, TimeOptions, UntrustedToken};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::protocol::Username;

pub const ISSUER: &str = "clubhouse";
pub const AUDIENCE: &str = "clubhouse";
/// Clock skew tolerated on `exp` and `iat`.
pub const LEEWAY_SECS: i64 = 30;
/// Shortest secret accepted: 256 bits, the HS256 output size (RFC 7518 §3.2).
pub const MIN_SECRET_BYTES: usize = 32;
/// Longest token we will even parse; ours are ~300 bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Tokens whose signature this isolate has verified, remembered so that a client's reconnects
/// (and the sockets a client opens in several rooms) skip the HMAC and JSON work; emptied when
/// full, so it stays under ~0.5 MB.
const VERIFIED_CAPACITY: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct BadgeClaims {
    sub: String,
    iss: String,
    aud: String,
    jti: String,
    /// When it was issued, in milliseconds: `iat` has one-second resolution, and a "log out
    /// everywhere" must refuse a badge issued earlier in its second but not one issued after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat_ms: Option<i64>,
}

/// What a verified badge tells us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Badge {
    pub username: Username,
    pub jti: String,
    pub issued_at: i64,
    /// The issue time in milliseconds; for a badge without `iat_ms`, the last millisecond of
    /// its `iat` second (a logout in that second refuses it, whether it came before or after).
    pub issued_at_ms: i64,
    pub expires_at: i64,
}

/// A freshly signed badge.
#[derive(Debug, Clone)]
pub struct IssuedBadge {
    pub token: String,
    pub jti: String,
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    Missing,
    TooShort,
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::Missing => write!(f, "JWT_SECRET is not set"),
            KeyError::TooShort => write!(f, "JWT_SECRET is shorter than {MIN_SECRET_BYTES} bytes"),
        }
    }
}

/// Why a badge was refused. The client only ever sees "invalid token"; the reason is for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadgeError {
    Malformed,
    UnknownKey,
    BadSignatureOrAlg,
    Expired,
    IssuedInFuture,
    WrongIssuerOrAudience,
    BadSubject,
}

struct Key {
    kid: String,
    key: Hs256Key,
}

impl Key {
    fn new(secret: &str) -> Result<Self, KeyError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(KeyError::TooShort);
        }
        // The kid names the key without revealing it: a short prefix of its SHA-256.
        let digest = Sha256::digest(secret.as_bytes());
        let kid = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self {
            kid,
            key: Hs256Key::new(secret.as_bytes()),
        })
    }
}

/// The signing key and, during a rotation, the previous one that still verifies.
pub struct BadgeKeys {
    current: Key,
    previous: Option<Key>,
    /// Exact token text → what it says, for tokens that passed [`BadgeKeys::verify`]. Keyed by
    /// the whole token, signature included, so only a byte-identical token is found here; its
    /// times are checked again on every use.
    verified: RefCell<HashMap<String, Badge>>,
}

fn time_options(now_secs: i64) -> TimeOptions<impl Fn() -> DateTime<Utc>> {
    TimeOptions::new(Duration::seconds(LEEWAY_SECS), move || {
        DateTime::from_timestamp(now_secs, 0).unwrap_or_default()
    })
}

impl BadgeKeys {
    pub fn new(current: Option<&str>, previous: Option<&str>) -> Result<Self, KeyError> {
        let current = Key::new(current.filter(|s| !s.is_empty()).ok_or(KeyError::Missing)?)?;
        let previous = match previous.filter(|s| !s.is_empty()) {
            Some(p) => Some(Key::new(p)?),
            None => None,
        };
        Ok(Self {
            current,
            previous,
            verified: RefCell::new(HashMap::new()),
        })
    }

    pub fn current_kid(&self) -> &str {
        &self.current.kid
    }

    /// Signs a badge for `username`, valid from `now_ms` (milliseconds) for `ttl_secs`.
    pub fn issue(&self, username: &Username, now_ms: i64, ttl_secs: i64) -> IssuedBadge {
        self.issue_as(username, random_id(), now_ms, ttl_secs)
    }

    /// [`BadgeKeys::issue`] with a `jti` chosen beforehand: the session ledger records a
    /// refresh family's badge before it is signed, so a revocation of the family can never miss it.
    pub fn issue_as(
        &self,
        username: &Username,
        jti: String,
        now_ms: i64,
        ttl_secs: i64,
    ) -> IssuedBadge {
        let now_secs = now_ms.div_euclid(1000);
        let custom = BadgeClaims {
            sub: username.as_str().to_owned(),
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            jti: jti.clone(),
            iat_ms: Some(now_ms),
        };
        let claims = Claims::new(custom)
            .set_duration_and_issuance(&time_options(now_secs), Duration::seconds(ttl_secs));
        let expires_at = now_secs + ttl_secs;
        let header = Header::empty().with_key_id(self.current.kid.clone());
        let token = Hs256
            .token(&header, &claims, &self.current.key)
            .expect("HS256 signing of plain claims cannot fail");
        IssuedBadge {
            token,
            jti,
            expires_at,
        }
    }

    /// Checks a badge completely: size, alg, key, signature, `exp`, `iat`, `iss`, `aud`, `sub`.
    pub fn verify(&self, token: &str, now_secs: i64) -> Result<Badge, BadgeError> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(BadgeError::Malformed);
        }
        if let Some(badge) = self.verified.borrow().get(token) {
            check_times(badge.expires_at, Some(badge.issued_at), now_secs)?;
            return Ok(badge.clone());
        }
        let badge = self.verify_signed(token, now_secs)?;
        let mut verified = self.verified.borrow_mut();
        if verified.len() >= VERIFIED_CAPACITY {
            verified.clear();
        }
        verified.insert(token.to_owned(), badge.clone());
        Ok(badge)
    }

    /// [`BadgeKeys::verify`] without the remembered tokens: signature, claims and times.
    fn verify_signed(&self, token: &str, now_secs: i64) -> Result<Badge, BadgeError> {
        let untrusted = UntrustedToken::new(token).map_err(|_| BadgeError::Malformed)?;
        let key = match untrusted.header().key_id.as_deref() {
            None => &self.current,
            Some(kid) if kid == self.current.kid => &self.current,
            Some(kid) => match &self.previous {
                Some(prev) if prev.kid == kid => prev,
                _ => return Err(BadgeError::UnknownKey),
            },
        };
        let token = Hs256
            .validator::<BadgeClaims>(&key.key)
            .validate(&untrusted)
            .map_err(|_| BadgeError::BadSignatureOrAlg)?;
        let claims = token.claims();
        // No `exp` at all counts as expired (jwt-compact's validator says "no claim").
        let expires_at = claims.expiration.ok_or(BadgeError::Expired)?.timestamp();
        let issued_at = check_times(
            expires_at,
            claims.issued_at.map(|at| at.timestamp()),
            now_secs,
        )?;
        let custom = &claims.custom;
        if custom.iss != ISSUER || custom.aud != AUDIENCE {
            return Err(BadgeError::WrongIssuerOrAudience);
        }
        let username = Username::parse(&custom.sub).map_err(|_| BadgeError::BadSubject)?;
        if custom.jti.is_empty() || custom.jti.len() > 64 {
            return Err(BadgeError::Malformed);
        }
        Ok(Badge {
            username,
            jti: custom.jti.clone(),
            issued_at,
            issued_at_ms: issued_at_ms(custom.iat_ms, issued_at),
            expires_at,
        })
    }
}

/// A badge's issue time in milliseconds: its `iat_ms` when that falls in its `iat` second,
/// else the last millisecond of that second.
fn issued_at_ms(iat_ms: Option<i64>, issued_at: i64) -> i64 {
    iat_ms
        .filter(|ms| ms.div_euclid(1000) == issued_at)
        .unwrap_or(issued_at * 1000 + 999)
}

/// The checks of a badge's times at `now_secs`, for a token verified now or remembered: past
/// `exp` by more than the leeway is expired (jwt-compact's `validate_expiration` rule), a
/// missing `iat` is malformed, an `iat` beyond the leeway is in the future. The `iat` back.
fn check_times(expires_at: i64, issued_at: Option<i64>, now_secs: i64) -> Result<i64, BadgeError> {
    if now_secs > expires_at + LEEWAY_SECS {
        return Err(BadgeError::Expired);
    }
    let issued_at = issued_at.ok_or(BadgeError::Malformed)?;
    if issued_at > now_secs + LEEWAY_SECS {
        return Err(BadgeError::IssuedInFuture);
    }
    Ok(issued_at)
}

/// 128 random bits as hex: token ids and connection ids.
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).expect("the runtime always provides randomness");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "unit-test-secret-0123456789abcdef0123456789";
    const OTHER: &str = "another-secret-0123456789abcdef0123456789ab";
    const NOW: i64 = 1_800_000_000;

    fn keys() -> BadgeKeys {
        BadgeKeys::new(Some(SECRET), None).unwrap()
    }
    fn bob() -> Username {
        Username::parse("bob").unwrap()
    }

    fn b64(data: &[u8]) -> String {
        // Minimal base64url without padding, enough to forge tokens by hand.
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    proptest::proptest! {
        /// Any string as a token: refused cleanly, never a panic.
        #[test]
        fn any_token_is_refused(token in ".{0,600}") {
            proptest::prop_assert!(keys().verify(&token, NOW).is_err());
        }

        /// Three base64url-looking parts (the shape that reaches the JSON and signature code).
        #[test]
        fn jwt_shaped_garbage_is_refused(a in "[A-Za-z0-9_-]{0,80}", b in "[A-Za-z0-9_-]{0,200}", c in "[A-Za-z0-9_-]{0,60}") {
            let token = format!("{a}.{b}.{c}");
            proptest::prop_assert!(keys().verify(&token, NOW).is_err());
        }

        /// A real badge with one character changed is refused.
        #[test]
        fn tampered_badges_are_refused(pos in 0usize..300, ch in "[A-Za-z0-9_-]") {
            let token = keys().issue(&bob(), NOW * 1000, 3600).token;
            let pos = pos % token.len();
            let mut bytes = token.clone().into_bytes();
            // The last character of a base64url part may carry only padding bits, so changing
            // it need not change the decoded bytes: leave those (and the dots) alone.
            let last_of_part = pos + 1 == bytes.len() || bytes[pos + 1] == b'.';
            if bytes[pos] == b'.' || last_of_part || bytes[pos] == ch.as_bytes()[0] { return Ok(()); }
            bytes[pos] = ch.as_bytes()[0];
            let tampered = String::from_utf8(bytes).unwrap();
            proptest::prop_assert!(keys().verify(&tampered, NOW).is_err(), "accepted {}", tampered);
        }
    }

    #[test]
    fn round_trip() {
        let issued = keys().issue(&bob(), NOW * 1000, 3600);
        let badge = keys().verify(&issued.token, NOW + 10).unwrap();
        assert_eq!(badge.username, bob());
        assert_eq!(badge.jti, issued.jti);
        assert_eq!(badge.issued_at, NOW);
        assert_eq!(badge.issued_at_ms, NOW * 1000);
        assert_eq!(badge.expires_at, NOW + 3600);
        assert_eq!(issued.jti.len(), 32);
    }

    #[test]
    fn short_or_missing_secret_refused() {
        assert_eq!(BadgeKeys::new(None, None).err(), Some(KeyError::Missing));
        assert_eq!(
            BadgeKeys::new(Some(""), None).err(),
            Some(KeyError::Missing)
        );
        assert_eq!(
            BadgeKeys::new(Some("short"), None).err(),
            Some(KeyError::TooShort)
        );
        assert_eq!(
            BadgeKeys::new(Some(SECRET), Some("short")).err(),
            Some(KeyError::TooShort)
        );
    }

    #[test]
    fn expiry_with_leeway() {
        let issued = keys().issue(&bob(), NOW * 1000, 60);
        assert!(keys()
            .verify(&issued.token, NOW + 60 + LEEWAY_SECS - 1)
            .is_ok());
        assert_eq!(
            keys().verify(&issued.token, NOW + 60 + LEEWAY_SECS + 1),
            Err(BadgeError::Expired)
        );
    }

    #[test]
    fn a_remembered_token_still_has_its_times_checked() {
        let keys = keys();
        let issued = keys.issue(&bob(), NOW * 1000, 60);
        let first = keys.verify(&issued.token, NOW).unwrap();
        assert_eq!(keys.verified.borrow().len(), 1, "remembered");
        // Found again: the same badge while valid, then expired exactly when it would be.
        assert_eq!(
            keys.verify(&issued.token, NOW + 60 + LEEWAY_SECS),
            Ok(first)
        );
        assert_eq!(
            keys.verify(&issued.token, NOW + 60 + LEEWAY_SECS + 1),
            Err(BadgeError::Expired)
        );
        // ...and "issued in the future" seen from an earlier clock, as the full check says.
        assert_eq!(
            keys.verify(&issued.token, NOW - LEEWAY_SECS - 1),
            Err(BadgeError::IssuedInFuture)
        );
    }

    #[test]
    fn only_the_identical_token_is_remembered_and_the_memory_is_bounded() {
        let keys = keys();
        let issued = keys.issue(&bob(), NOW * 1000, 3600);
        keys.verify(&issued.token, NOW).unwrap();
        // The remembered token with its signature changed is checked in full, and refused.
        let (body, sig) = issued.token.rsplit_once('.').unwrap();
        let other_sig = if sig.starts_with('A') { "B" } else { "A" };
        let forged = format!("{body}.{other_sig}{}", &sig[1..]);
        assert_eq!(
            keys.verify(&forged, NOW),
            Err(BadgeError::BadSignatureOrAlg)
        );
        // Refusals are not remembered; many tokens never hold more than the capacity.
        assert_eq!(keys.verified.borrow().len(), 1);
        for _ in 0..VERIFIED_CAPACITY + 10 {
            let t = keys.issue(&bob(), NOW * 1000, 3600).token;
            keys.verify(&t, NOW).unwrap();
            assert!(keys.verified.borrow().len() <= VERIFIED_CAPACITY);
        }
    }

    #[test]
    fn issued_in_future_refused() {
        let issued = keys().issue(&bob(), (NOW + 3600) * 1000, 7200);
        assert_eq!(
            keys().verify(&issued.token, NOW),
            Err(BadgeError::IssuedInFuture)
        );
    }

    #[test]
    fn forged_with_other_key_refused() {
        let forged = BadgeKeys::new(Some(OTHER), None)
            .unwrap()
            .issue(&bob(), NOW * 1000, 3600);
        // Its kid names a key we do not have.
        assert_eq!(
            keys().verify(&forged.token, NOW),
            Err(BadgeError::UnknownKey)
        );
        // Without a kid it falls to the current key and the signature fails.
        let mut parts = forged.token.split('.');
        let (_, body, sig) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        let no_kid = format!("{}.{body}.{sig}", b64(br#"{"alg":"HS256","typ":"JWT"}"#));
        assert_eq!(
            keys().verify(&no_kid, NOW),
            Err(BadgeError::BadSignatureOrAlg)
        );
    }

    #[test]
    fn alg_none_and_other_algs_refused() {
        let body = b64(format!(
            r#"{{"sub":"bob","iss":"clubhouse","aud":"clubhouse","jti":"x","iat":{NOW},"exp":{}}}"#,
            NOW + 60
        )
        .as_bytes());
        for header in [
            r#"{"alg":"none"}"#,
            r#"{"alg":"HS512"}"#,
            r#"{"alg":"RS256"}"#,
        ] {
            for sig in ["", "AAAA"] {
                let token = format!("{}.{body}.{sig}", b64(header.as_bytes()));
                assert!(
                    keys().verify(&token, NOW).is_err(),
                    "{header} {sig:?} accepted"
                );
            }
        }
    }

    #[test]
    fn tampered_claims_refused() {
        let issued = keys().issue(&bob(), NOW * 1000, 3600);
        let parts: Vec<&str> = issued.token.split('.').collect();
        let body = b64(
            format!(r#"{{"sub":"admin","iss":"clubhouse","aud":"clubhouse","jti":"x","iat":{NOW},"exp":{}}}"#, NOW + 60)
                .as_bytes(),
        );
        let token = format!("{}.{body}.{}", parts[0], parts[2]);
        assert_eq!(
            keys().verify(&token, NOW),
            Err(BadgeError::BadSignatureOrAlg)
        );
    }

    #[test]
    fn garbage_refused() {
        for t in [
            "",
            "a",
            "a.b",
            "a.b.c",
            "....",
            &"x".repeat(MAX_TOKEN_BYTES + 1),
        ] {
            assert!(keys().verify(t, NOW).is_err(), "{t:?} accepted");
        }
    }

    #[test]
    fn rotation_previous_key_still_verifies() {
        let old = BadgeKeys::new(Some(OTHER), None)
            .unwrap()
            .issue(&bob(), NOW * 1000, 3600);
        let rotated = BadgeKeys::new(Some(SECRET), Some(OTHER)).unwrap();
        assert_eq!(rotated.verify(&old.token, NOW).unwrap().username, bob());
        let fresh = rotated.issue(&bob(), NOW * 1000, 3600);
        assert!(
            keys().verify(&fresh.token, NOW).is_ok(),
            "new badges use the new key"
        );
        assert_ne!(
            rotated.current_kid(),
            BadgeKeys::new(Some(OTHER), None).unwrap().current_kid()
        );
    }

    #[test]
    fn the_issue_time_in_milliseconds_must_fall_in_the_iat_second() {
        assert_eq!(issued_at_ms(Some(NOW * 1000 + 250), NOW), NOW * 1000 + 250);
        assert_eq!(
            issued_at_ms(None, NOW),
            NOW * 1000 + 999,
            "older badges: end of second"
        );
        assert_eq!(
            issued_at_ms(Some((NOW - 5) * 1000), NOW),
            NOW * 1000 + 999,
            "an iat_ms disagreeing with iat is not trusted"
        );
    }
}
