//! Refresh tokens (RFC 6749 §6): opaque to clients, `<username>.<64 hex digits>`, where the hex
//! is 256 bits from `getrandom`. The name only says which ledger shard holds the token's family
//! (`ledger/`); the shard stores the token's SHA-256 alone and matches on it, so a token with
//! its name changed is simply unknown. Pure: tested natively.

use sha2::{Digest, Sha256};

use crate::protocol::Username;

/// Random bytes in a refresh token: 256 bits, beyond guessing.
const RANDOM_BYTES: usize = 32;
/// Longest refresh token read at all (a name of 32 characters, a dot and 64 hex digits is 97).
pub const MAX_REFRESH_TOKEN_BYTES: usize = 128;

/// A new refresh token and the hash the ledger keeps of it.
pub struct NewRefreshToken {
    pub token: String,
    pub hash: String,
}

/// A refresh token as presented: the shard's user and the hash to look up.
#[derive(Debug, PartialEq, Eq)]
pub struct PresentedToken {
    pub username: Username,
    pub hash: String,
}

/// A fresh token for `username`.
pub fn issue(username: &Username) -> NewRefreshToken {
    let mut bytes = [0u8; RANDOM_BYTES];
    getrandom::getrandom(&mut bytes).expect("the runtime always provides randomness");
    let token = format!("{}.{}", username.as_str(), hex(&bytes));
    NewRefreshToken {
        hash: hash(&token),
        token,
    }
}

/// Reads a presented token; `None` for anything that cannot be one of ours.
pub fn parse(token: &str) -> Option<PresentedToken> {
    if token.len() > MAX_REFRESH_TOKEN_BYTES {
        return None;
    }
    let (name, random) = token.rsplit_once('.')?;
    let is_random = random.len() == RANDOM_BYTES * 2
        && random
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !is_random {
        return None;
    }
    Some(PresentedToken {
        username: Username::parse(name).ok()?,
        hash: hash(token),
    })
}

/// The SHA-256 of a token, in hex: what the ledger stores. A fast hash is enough here (unlike
/// for passwords): the token has 256 random bits, so there is nothing to guess from the hash.
fn hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bob() -> Username {
        Username::parse("Bob.x").unwrap()
    }

    #[test]
    fn issued_tokens_parse_back_to_their_hash_and_user() {
        let issued = issue(&bob());
        assert!(issued.token.starts_with("Bob.x."));
        assert_eq!(issued.token.len(), "Bob.x.".len() + 64);
        let presented = parse(&issued.token).unwrap();
        assert_eq!(presented.username, bob());
        assert_eq!(presented.hash, issued.hash);
        assert_eq!(issued.hash.len(), 64);
        assert_ne!(
            issued.hash,
            issue(&bob()).hash,
            "fresh randomness each time"
        );
        assert!(
            !issued.hash.contains(&issued.token[6..]),
            "only a hash is kept"
        );
    }

    #[test]
    fn a_changed_name_is_another_token() {
        let issued = issue(&bob());
        let other = issued.token.replacen("Bob.x", "eve", 1);
        assert_ne!(parse(&other).unwrap().hash, issued.hash);
    }

    #[test]
    fn anything_else_is_refused() {
        let random = "a".repeat(64);
        for bad in [
            String::new(),
            random.clone(),
            format!(".{random}"),
            format!("bo.{random}"),
            format!("bob.{}", "A".repeat(64)),
            format!("bob.{}", "a".repeat(63)),
            format!("bob.{}", "a".repeat(65)),
            format!("b b.{random}"),
            format!("{}.{random}", "x".repeat(70)),
        ] {
            assert_eq!(parse(&bad), None, "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_string_is_refused_or_read(s in ".{0,200}") {
            if let Some(p) = parse(&s) {
                proptest::prop_assert!(s.len() <= MAX_REFRESH_TOKEN_BYTES);
                proptest::prop_assert_eq!(p.hash.len(), 64);
            }
        }
    }
}
