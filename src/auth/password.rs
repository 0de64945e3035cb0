//! argon2id password hashing with a configurable cost, verification that takes the same time
//! whether or not the user exists, and a re-hash policy for hashes made with older parameters.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// argon2id cost. The default is OWASP's recommendation (19 MiB, 2 passes, 1 lane).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashCost {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for HashCost {
    fn default() -> Self {
        Self {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl HashCost {
    fn hasher(&self) -> Result<Argon2<'static>, argon2::Error> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, None)?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

#[derive(Debug)]
pub struct HashError(pub String);

/// Hashes a password with a fresh random salt into a PHC string (`$argon2id$v=19$m=…`).
pub fn hash(password: &[u8], cost: HashCost) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(|e| HashError(format!("no randomness: {e}")))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| HashError(e.to_string()))?;
    let hasher = cost.hasher().map_err(|e| HashError(e.to_string()))?;
    hasher
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// True when `password` matches the stored PHC string. A malformed stored hash never matches.
/// The parameters come from the stored hash, so old hashes keep verifying after a cost change.
pub fn verify(password: &[u8], stored_phc: &str) -> bool {
    match PasswordHash::new(stored_phc) {
        Ok(parsed) => Argon2::default().verify_password(password, &parsed).is_ok(),
        Err(_) => false,
    }
}

/// Spends the same work as a real verification, for a user that does not exist, so response
/// time does not tell which usernames are registered. Always false.
pub fn verify_dummy(password: &[u8], cost: HashCost) -> bool {
    // A syntactically valid hash at the current cost whose digest nobody can match.
    let phc = format!(
        "$argon2id$v=19$m={},t={},p={}$Y2x1YmhvdXNlLWR1bW15$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        cost.memory_kib, cost.iterations, cost.parallelism
    );
    let _ = verify(password, &phc);
    false
}

/// True when a stored hash was made with another algorithm or cost than `cost`: after a
/// successful login it is replaced by a hash at the current cost.
pub fn needs_rehash(stored_phc: &str, cost: HashCost) -> bool {
    let Ok(parsed) = PasswordHash::new(stored_phc) else {
        return true;
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return true;
    };
    parsed.algorithm.as_str() != "argon2id"
        || params.m_cost() != cost.memory_kib
        || params.t_cost() != cost.iterations
        || params.p_cost() != cost.parallelism
}

#[cfg(test)]
mod tests {
    use super::*;

    // Small cost keeps the unit tests fast; one test checks the default separately.
    const CHEAP: HashCost = HashCost {
        memory_kib: 256,
        iterations: 1,
        parallelism: 1,
    };

    #[test]
    fn hash_then_verify() {
        let phc = hash(b"correct horse", CHEAP).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=256,t=1,p=1$"), "{phc}");
        assert!(verify(b"correct horse", &phc));
        assert!(!verify(b"correct horsE", &phc));
    }

    #[test]
    fn salts_differ() {
        assert_ne!(
            hash(b"pw-pw-pw", CHEAP).unwrap(),
            hash(b"pw-pw-pw", CHEAP).unwrap()
        );
    }

    #[test]
    fn default_cost_is_owasp() {
        let phc = hash(b"correct horse", HashCost::default()).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify(b"correct horse", &phc));
    }

    #[test]
    fn malformed_hash_never_matches() {
        assert!(!verify(b"x", ""));
        assert!(!verify(b"x", "$argon2id$garbage"));
    }

    #[test]
    fn dummy_is_well_formed_and_false() {
        assert!(!verify_dummy(b"anything", CHEAP));
        let phc = format!(
            "$argon2id$v=19$m={},t={},p={}$Y2x1YmhvdXNlLWR1bW15$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            CHEAP.memory_kib, CHEAP.iterations, CHEAP.parallelism
        );
        assert!(
            PasswordHash::new(&phc).is_ok(),
            "dummy must parse, or it costs nothing"
        );
    }

    #[test]
    fn rehash_policy() {
        let phc = hash(b"pw-pw-pw", CHEAP).unwrap();
        assert!(!needs_rehash(&phc, CHEAP));
        assert!(needs_rehash(&phc, HashCost::default()));
        assert!(needs_rehash("not a hash", CHEAP));
    }
}
