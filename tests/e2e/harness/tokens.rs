//! Badges (JWTs) for the tests: good ones signed with the test servers' secret, and every kind of
//! bad one (another key, `alg: none`, a lying header, tampered parts). Signing and verifying go
//! through `jwt-compact`, the crate the Worker itself uses; base64url through `base64ct`, the one
//! `jwt-compact` uses.

use base64ct::{Base64UrlUnpadded, Encoding};
use jwt_compact::alg::{Hs256, Hs256Key};
use jwt_compact::{AlgorithmExt, Claims, Header, Renamed, UntrustedToken};
use serde_json::{json, Value};

use super::{now_secs, random_u64};

/// The `JWT_SECRET` every test server runs with (written to its `.dev.vars`), so tests can craft
/// tokens the server must accept, and tokens it must reject.
pub const TEST_JWT_SECRET: &str = "clubhouse-e2e-test-secret-0123456789abcdef-do-not-use";
/// Token issuer and audience the Worker puts in and requires.
pub const JWT_ISS: &str = "clubhouse";
pub const JWT_AUD: &str = "clubhouse";
/// A key that is not the server's: what it signs must be refused.
pub const OTHER_KEY: &[u8] = b"not-the-server-secret-not-the-server-secret";

pub fn b64url_encode(data: &[u8]) -> String {
    Base64UrlUnpadded::encode_string(data)
}

pub fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    Base64UrlUnpadded::decode_vec(s).ok()
}

/// The (header, claims) of a compact JWT, without verifying anything.
pub fn decode_jwt(token: &str) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a compact JWT: {token}");
    let part = |s: &str| -> Value {
        serde_json::from_slice(&b64url_decode(s).expect("base64url")).expect("JSON JWT part")
    };
    (part(parts[0]), part(parts[1]))
}

/// Claims of a token the Worker would issue for `sub`, valid now for an hour.
pub fn good_claims(sub: &str) -> Value {
    let now = now_secs();
    json!({
        "sub": sub,
        "iat": now,
        "exp": now + 3600,
        "iss": JWT_ISS,
        "aud": JWT_AUD,
        "jti": format!("{:016x}", random_u64()),
    })
}

/// Signs `claims` (any JSON object, taken as it is) with HMAC-SHA256 under `secret`, with the
/// header `{"alg": <alg_name>, "typ": "JWT"}` whatever `alg_name` says (for lying headers).
pub fn sign_hs256_as(alg_name: &'static str, claims: &Value, secret: &[u8]) -> String {
    Renamed::new(Hs256, alg_name)
        .token(
            &Header::empty().with_token_type("JWT"),
            &Claims::new(claims),
            &Hs256Key::new(secret),
        )
        .expect("sign a test token")
}

/// Signs `claims` as an HS256 JWT with `secret`, header `{"alg":"HS256","typ":"JWT"}`.
pub fn sign_hs256(claims: &Value, secret: &[u8]) -> String {
    sign_hs256_as("HS256", claims, secret)
}

/// A token signed by the test servers' own secret.
pub fn test_token(claims: &Value) -> String {
    sign_hs256(claims, TEST_JWT_SECRET.as_bytes())
}

/// An unsigned token: header `{"alg":"none"}` and an empty signature.
pub fn unsigned_token(claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64url_encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64url_encode(claims.to_string().as_bytes())
    )
}

/// Whether an HS256 JWT's signature verifies against `secret`.
pub fn hs256_signature_valid(token: &str, secret: &[u8]) -> bool {
    let Ok(untrusted) = UntrustedToken::new(token) else {
        return false;
    };
    Hs256
        .validator::<Value>(&Hs256Key::new(secret))
        .validate(&untrusted)
        .is_ok()
}

// ---------------------------------------------------------------------------------------------
// The token pieces themselves (cheap; no server)
// ---------------------------------------------------------------------------------------------

/// The HMAC under every forged signature is `jwt-compact`'s HS256 primitive.
#[test]
fn harness_hmac_sha256_matches_rfc4231() {
    use jwt_compact::{Algorithm, AlgorithmSignature};
    let hmac_sha256 = |key: &[u8], msg: &[u8]| -> String {
        let mac = Hs256.sign(&Hs256Key::new(key), msg);
        mac.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
    };
    // RFC 4231 test case 2.
    assert_eq!(
        hmac_sha256(b"Jefe", b"what do ya want for nothing?"),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    // A key longer than the block size is hashed first (RFC 4231 test case 6).
    assert_eq!(
        hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        ),
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
    );
}

#[test]
fn harness_tokens_are_what_jwt_compact_verifies() {
    let token = test_token(&good_claims("alice"));
    assert!(hs256_signature_valid(&token, TEST_JWT_SECRET.as_bytes()));
    assert!(!hs256_signature_valid(
        &token,
        b"another-secret-another-secret-00"
    ));
    let (header, claims) = decode_jwt(&token);
    assert_eq!(header["alg"], "HS256");
    assert_eq!(claims["sub"], "alice");
    for data in [&b""[..], b"f", b"fo", b"foo", b"foob", b"fooba", b"foobar"] {
        assert_eq!(b64url_decode(&b64url_encode(data)).unwrap(), data);
    }
    assert_eq!(b64url_encode(b"foobar"), "Zm9vYmFy");
    assert_eq!(b64url_encode(&[0xfb, 0xff]), "-_8");
}
