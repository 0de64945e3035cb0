//! What the Worker tells a room about a WebSocket it hands over: the identity from the badge
//! whose signature it verified, the access it checked, and the client's options.
//!
//! It travels as one JSON header on a request the Worker builds from scratch, so no header a
//! client sent ever reaches the room. One header parsed once in WASM, rather than eight set and
//! read one by one, each a crossing between WASM and JS on every connect.

use serde::{Deserialize, Serialize};

use crate::auth::badge::Badge;
use crate::protocol::Username;

/// The header carrying a [`Handover`] to the room's `/connect`.
pub const HEADER: &str = "x-clubhouse-socket";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handover {
    /// The badge's user (verified), and the room the socket is for.
    pub user: String,
    pub room: String,
    /// The badge's id, issue and expiry times (seconds): what the session ledger admits.
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
    /// The badge's issue time in milliseconds (`Badge::issued_at_ms`).
    #[serde(default)]
    pub iat_ms: i64,
    /// Whether the Worker found the user a member of the room (D1). A socket handed over as
    /// not a member is refused by a private room, with a marked 403 (`client::PRIVATE_HEADER`).
    pub member: bool,
    /// The Worker's request id, for the room's `ws_connect` log entry.
    pub request_id: String,
    /// The client sent its badge as `Sec-WebSocket-Protocol: bearer, <JWT>`, so the 101 must
    /// select `bearer`.
    pub bearer: bool,
    /// `?since=`: the newest message id the client already has.
    pub since: Option<u64>,
    /// `?rev=`: the room's revision the client's copy reflects (a catch-up of changes too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rev: Option<u64>,
    /// `?batch=1`: the client takes the frames of one outbox flush as one `batch` frame
    /// (`protocol::batch_frames`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub batch: bool,
}

impl Handover {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a handover always serialises")
    }

    /// `None` for anything but a well-formed handover (only the Worker sets the header).
    pub fn decode(value: &str) -> Option<Handover> {
        serde_json::from_str(value).ok()
    }

    /// The verified badge, for the session ledger; `None` if the user name is not one.
    pub fn badge(&self) -> Option<Badge> {
        Some(Badge {
            username: Username::parse(&self.user).ok()?,
            jti: self.jti.clone(),
            issued_at: self.iat,
            issued_at_ms: self.iat_ms,
            expires_at: self.exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Handover {
        Handover {
            user: "alice".into(),
            room: "lobby".into(),
            jti: "0123456789abcdef".into(),
            iat: 1_700_000_000,
            exp: 1_700_003_600,
            iat_ms: 1_700_000_000_123,
            member: false,
            request_id: "8e1f2a3b4c5d6e7f-AMS \"quoted\"".into(),
            bearer: true,
            since: Some(42),
            rev: Some(7),
            batch: true,
        }
    }

    #[test]
    fn round_trips_through_one_header_value() {
        let encoded = sample().encode();
        assert!(!encoded.contains('\n') && !encoded.contains('\r'));
        assert_eq!(Handover::decode(&encoded), Some(sample()));
        let without_since = Handover {
            since: None,
            rev: None,
            batch: false,
            ..sample()
        };
        assert_eq!(
            Handover::decode(&without_since.encode()),
            Some(without_since)
        );
    }

    #[test]
    fn anything_else_is_refused() {
        assert_eq!(Handover::decode(""), None);
        assert_eq!(Handover::decode("alice"), None);
        assert_eq!(Handover::decode(r#"{"user":"alice"}"#), None);
    }

    #[test]
    fn gives_the_badge_it_describes() {
        let badge = sample().badge().expect("a valid user name");
        assert_eq!(badge.username.as_str(), "alice");
        assert_eq!(
            (badge.jti.as_str(), badge.issued_at, badge.expires_at),
            ("0123456789abcdef", 1_700_000_000, 1_700_003_600)
        );
        assert_eq!(badge.issued_at_ms, 1_700_000_000_123);
        let bad_user = Handover {
            user: "not a name!".into(),
            ..sample()
        };
        assert!(bad_user.badge().is_none());
    }
}
