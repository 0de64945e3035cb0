//! The wire format: validated input types and every frame in and out.
//!
//! Pure Rust, no `worker` types, so it is unit-tested natively. Values are parsed once at the
//! edge into newtypes (`Username`, `RoomId`, …) so the rest of the code cannot hold an invalid one.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Largest WebSocket text frame the room reads; bigger ones are refused, never broadcast.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Largest message `content`, in characters (Unicode scalar values).
pub const MAX_CONTENT_CHARS: usize = 4000;
pub const USERNAME_CHARS: std::ops::RangeInclusive<usize> = 3..=32;
pub const PASSWORD_CHARS: std::ops::RangeInclusive<usize> = 8..=128;
pub const ROOM_ID_CHARS: std::ops::RangeInclusive<usize> = 1..=64;
/// A frame's `client_id`: the sender's own id for it, repeated in the errors answering it (for a
/// message it also makes a resend idempotent).
pub const CLIENT_ID_CHARS: std::ops::RangeInclusive<usize> = 1..=64;

/// A client mistake in a value, with a message fit to show the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub Cow<'static, str>);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn invalid(msg: impl Into<Cow<'static, str>>) -> Invalid {
    Invalid(msg.into())
}

/// 3–32 characters of `[A-Za-z0-9_.-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Username(String);

impl Username {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let ok_chars = raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !USERNAME_CHARS.contains(&raw.len()) || !ok_chars {
            return Err(invalid(
                "username must be 3-32 characters of letters, digits, '_', '.' or '-'",
            ));
        }
        Ok(Self(raw.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// 8–128 characters. Never printed: `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Checks the signup policy. `username` is given so that a password equal to it is refused.
    pub fn parse_new(raw: &str, username: &Username) -> Result<Self, Invalid> {
        let chars = raw.chars().count();
        if !PASSWORD_CHARS.contains(&chars) {
            return Err(invalid("password must be 8-128 characters"));
        }
        if raw.eq_ignore_ascii_case(username.as_str()) {
            return Err(invalid("password must not be the username"));
        }
        Ok(Self(raw.to_owned()))
    }
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// 1–64 characters of `[A-Za-z0-9_-]`: safe in a URL path, a SQL value and a log line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct RoomId(String);

impl RoomId {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if is_dm_room(raw) {
            return Ok(Self(raw.to_owned()));
        }
        let ok_chars = raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
        if !ROOM_ID_CHARS.contains(&raw.len()) || !ok_chars {
            return Err(invalid(
                "room_id must be 1-64 characters of letters, digits, '_' or '-'",
            ));
        }
        Ok(Self(raw.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A direct-message room's id starts with this: `dm.` and 32 lowercase hex digits. A `.` is not
/// allowed in any other room name, so nobody can create, claim or use a DM's id as their own room.
pub const DM_ROOM_PREFIX: &str = "dm.";
/// Hex digits after [`DM_ROOM_PREFIX`] (128 bits of the SHA-256 of the two names).
pub const DM_ROOM_HEX: usize = 32;

/// Whether `raw` has the shape of a direct-message room id (`dm.` + 32 lowercase hex digits).
pub fn is_dm_room(raw: &str) -> bool {
    raw.strip_prefix(DM_ROOM_PREFIX).is_some_and(|hex| {
        hex.len() == DM_ROOM_HEX && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

impl RoomId {
    /// Whether this is a direct-message room (`dm.<hex>`).
    pub fn is_dm(&self) -> bool {
        is_dm_room(&self.0)
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// True when `json` is (syntactically headed as) a JSON object. serde would otherwise fill a
/// struct from an array by position, so `["hi","lobby"]` would pass for a message.
pub fn looks_like_object(json: &[u8]) -> bool {
    json.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// Longest reaction `emoji`, in bytes of UTF-8.
pub const MAX_EMOJI_BYTES: usize = 32;

/// The kinds of client frame (`"type"`); a frame without one is a `message`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FrameType {
    Message,
    Edit,
    Delete,
    React,
    Unreact,
    Typing,
    Read,
}

/// A string field that borrows from the frame when it has no escapes (serde borrows a `Cow`
/// only as a direct field, so an optional one needs this newtype).
#[derive(Debug, Deserialize)]
#[serde(transparent)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// A text frame from a client, every kind's fields together. Unknown fields (a client-sent
/// `username`, say) are ignored: identity comes from the badge only.
#[derive(Debug, Deserialize)]
struct RawClientFrame<'a> {
    #[serde(rename = "type", default)]
    kind: Option<FrameType>,
    #[serde(borrow, default)]
    content: Option<Text<'a>>,
    #[serde(borrow, default)]
    room_id: Option<Cow<'a, str>>,
    #[serde(default)]
    id: Option<i64>,
    #[serde(borrow, default)]
    emoji: Option<Text<'a>>,
    #[serde(borrow, default)]
    client_id: Option<Text<'a>>,
}

/// A validated chat message from a client, ready to store and broadcast.
#[derive(Debug, PartialEq, Eq)]
pub struct ClientMessage<'a> {
    pub content: Cow<'a, str>,
}

/// One reaction: a single emoji, 1–32 bytes of UTF-8 with no ASCII letters or digits, no
/// whitespace and no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emoji(String);

impl Emoji {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let ok = (1..=MAX_EMOJI_BYTES).contains(&raw.len())
            && !raw
                .chars()
                .any(|c| c.is_ascii_alphanumeric() || c.is_whitespace() || c.is_control());
        if !ok {
            return Err(invalid(
                "emoji must be one emoji: 1-32 bytes, no letters, digits, spaces or control characters",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a client's text frame asks for, validated.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientFrame<'a> {
    /// A new message.
    Message(ClientMessage<'a>),
    /// The author replaces a message's content.
    Edit { id: i64, content: Cow<'a, str> },
    /// The author or the room's owner deletes a message.
    Delete { id: i64 },
    /// A member adds (`add`) or takes back a reaction.
    React { id: i64, emoji: Emoji, add: bool },
    /// The member is typing (ephemeral).
    Typing,
    /// The member has read the room up to message `id` (their read marker moves forward).
    Read { id: i64 },
}

/// A valid client frame and the `client_id` it carried. Every kind but `typing` may carry one:
/// error frames answering the frame repeat it, so that a client with several frames out tells
/// which one was refused. For a message it is also the key that makes a resend idempotent
/// (`room::DEDUPE_WINDOW_MS`); for a change it is only that tag, neither stored nor broadcast.
#[derive(Debug, PartialEq, Eq)]
pub struct ParsedFrame<'a> {
    pub frame: ClientFrame<'a>,
    pub client_id: Option<Cow<'a, str>>,
}

/// A client frame refused by [`parse_client_frame`]: why, and the `client_id` it carried when
/// that could be read and is valid, so that the error frame names the frame it answers (a
/// message refused for its content, an edit for its room, say).
#[derive(Debug, PartialEq, Eq)]
pub struct BadFrame<'a> {
    pub why: Invalid,
    pub client_id: Option<Cow<'a, str>>,
}

impl From<Invalid> for BadFrame<'_> {
    fn from(why: Invalid) -> Self {
        Self {
            why,
            client_id: None,
        }
    }
}

/// Parses and validates one text frame for the room `room`.
pub fn parse_client_frame<'a>(frame: &'a str, room: &str) -> Result<ParsedFrame<'a>, BadFrame<'a>> {
    if frame.len() > MAX_FRAME_BYTES {
        return Err(invalid("frame too large (limit 65536 bytes)").into());
    }
    if !looks_like_object(frame.as_bytes()) {
        return Err(
            invalid("invalid message: expected a JSON object {\"content\": string}").into(),
        );
    }
    let mut raw: RawClientFrame<'a> = serde_json::from_str(frame).map_err(|e| {
        invalid(format!(
            "invalid message: expected {{\"content\": string, \"room_id\"?: string}} or {{\"type\": \"edit\"|\"delete\"|\"react\"|\"unreact\"|\"typing\"|\"read\", ...}} ({e})"
        ))
    })?;
    let kind = raw.kind.unwrap_or(FrameType::Message);
    // Typing is answered by nothing, so it has nothing to name. The client_id is read before the
    // other checks so that their refusal can name it; an invalid one is refused after them (the
    // order of the details stays), and never repeated back.
    let client_id = match kind {
        FrameType::Typing => Ok(None),
        _ => client_id(raw.client_id.take()),
    };
    match (frame_of(kind, raw, room), client_id) {
        (Ok(frame), Ok(client_id)) => Ok(ParsedFrame { frame, client_id }),
        (Err(why), client_id) => Err(BadFrame {
            why,
            client_id: client_id.ok().flatten(),
        }),
        (Ok(_), Err(why)) => Err(why.into()),
    }
}

/// The checks of each kind of frame but its `client_id`.
fn frame_of<'a>(
    kind: FrameType,
    raw: RawClientFrame<'a>,
    room: &str,
) -> Result<ClientFrame<'a>, Invalid> {
    if let Some(claimed) = &raw.room_id {
        if claimed != room {
            return Err(invalid("room_id does not match this connection's room"));
        }
    }
    let id = || match raw.id {
        Some(id) if id > 0 => Ok(id),
        _ => Err(invalid("id must be a positive integer: the message's id")),
    };
    let emoji = || match &raw.emoji {
        Some(e) => Emoji::parse(&e.0),
        None => Err(invalid("missing field `emoji`")),
    };
    Ok(match kind {
        FrameType::Message => ClientFrame::Message(ClientMessage {
            content: content(raw.content)?,
        }),
        FrameType::Edit => ClientFrame::Edit {
            id: id()?,
            content: content(raw.content)?,
        },
        FrameType::Delete => ClientFrame::Delete { id: id()? },
        FrameType::React | FrameType::Unreact => ClientFrame::React {
            id: id()?,
            emoji: emoji()?,
            add: kind == FrameType::React,
        },
        FrameType::Typing => ClientFrame::Typing,
        FrameType::Read => ClientFrame::Read { id: id()? },
    })
}

/// A frame's optional `client_id`: 1–64 characters.
fn client_id(raw: Option<Text<'_>>) -> Result<Option<Cow<'_, str>>, Invalid> {
    match raw {
        None => Ok(None),
        Some(Text(id)) if CLIENT_ID_CHARS.contains(&id.chars().count()) => Ok(Some(id)),
        Some(_) => Err(invalid("client_id must be 1-64 characters")),
    }
}

/// A message's content: present, not blank ([`is_blank`]), at most `MAX_CONTENT_CHARS` characters.
fn content(raw: Option<Text<'_>>) -> Result<Cow<'_, str>, Invalid> {
    let Some(Text(content)) = raw else {
        return Err(invalid(
            "invalid message: expected {\"content\": string, \"room_id\"?: string} (missing field `content`)",
        ));
    };
    if is_blank(&content) {
        return Err(invalid("content must not be empty"));
    }
    if content.chars().count() > MAX_CONTENT_CHARS {
        return Err(invalid("content too long (limit 4000 characters)"));
    }
    Ok(content)
}

/// Whether `content` shows nothing: only whitespace, control characters (NUL included) and
/// invisible characters. A message like that would be an empty line in every client, or a way to
/// post something nobody can see.
pub fn is_blank(content: &str) -> bool {
    content
        .chars()
        .all(|c| c.is_whitespace() || c.is_control() || is_invisible(c))
}

/// Characters that render as nothing: Unicode's format characters (general category Cf: zero-width
/// space and joiners, direction marks and isolates, the BOM, soft hyphen, invisible operators,
/// tag characters, ...), plus those that are not Cf but are drawn as nothing as well: the
/// combining grapheme joiner, variation selectors, Hangul fillers and the blank Braille pattern.
/// std has no Unicode category tables; this list is Unicode 15's Cf set and small enough to keep.
fn is_invisible(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x034F | 0x061C | 0x115F | 0x1160 | 0x17B4 | 0x17B5 | 0x180B..=0x180F
        | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F | 0x2800
        | 0x3164 | 0xFE00..=0xFE0F | 0xFEFF | 0xFFA0 | 0xFFF9..=0xFFFB
        | 0x0600..=0x0605 | 0x06DD | 0x070F | 0x0890 | 0x0891 | 0x08E2
        | 0x110BD | 0x110CD | 0x13430..=0x1343F | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A
        | 0xE0001 | 0xE0020..=0xE007F | 0xE0100..=0xE01EF)
}

/// A message's reactions: emoji → who reacted, in the order they did.
pub type Reactions = BTreeMap<String, Vec<String>>;

/// A stored chat message in its current state, as it goes out: in `history`, in catch-up
/// items and over HTTP. A deleted one keeps its id, author and time, and nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub id: i64,
    pub room_id: String,
    pub username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    pub ts: i64,
    /// The room's revision when the message was created.
    pub rev: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_ts: Option<i64>,
    #[serde(default, skip_serializing_if = "Reactions::is_empty")]
    pub reactions: Reactions,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// One item of a catch-up (`?rev=`): what happened after the client's revision, as the frames
/// that told it live, each carrying its `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LogItem {
    /// A message created after the client's revision, in its current state.
    Message(ChatMessage),
    Edited {
        id: i64,
        rev: i64,
        content: String,
        edited_ts: i64,
        username: String,
        room_id: String,
    },
    Deleted {
        id: i64,
        rev: i64,
        by: String,
        room_id: String,
    },
    Reactions {
        id: i64,
        rev: i64,
        room_id: String,
        reactions: Reactions,
    },
}

impl LogItem {
    pub fn rev(&self) -> i64 {
        match self {
            LogItem::Message(m) => m.rev,
            LogItem::Edited { rev, .. }
            | LogItem::Deleted { rev, .. }
            | LogItem::Reactions { rev, .. } => *rev,
        }
    }
}

/// What a `history` frame lists: messages in their current state, or, for a catch-up by
/// revision, the items that bring the client's copy up to date.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum HistoryItems<'a> {
    Messages(&'a [ChatMessage]),
    Changes(&'a [LogItem]),
}

/// Frames the server sends. Each broadcast is serialised once and the same text goes to every
/// recipient.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    Message {
        id: i64,
        room_id: &'a str,
        username: &'a str,
        content: &'a str,
        ts: i64,
        rev: i64,
        /// The sender's `client_id`, when it sent one.
        #[serde(skip_serializing_if = "Option::is_none")]
        client_id: Option<&'a str>,
    },
    History {
        messages: HistoryItems<'a>,
        truncated: bool,
        /// The room's revision when the history was built: every live frame after it has a
        /// higher one.
        rev: i64,
    },
    Edited {
        id: i64,
        rev: i64,
        content: &'a str,
        edited_ts: i64,
        username: &'a str,
        room_id: &'a str,
    },
    Deleted {
        id: i64,
        rev: i64,
        by: &'a str,
        room_id: &'a str,
    },
    /// The message's whole reaction state after a change.
    Reactions {
        id: i64,
        rev: i64,
        room_id: &'a str,
        reactions: &'a Reactions,
    },
    /// Someone else in the room is typing (never stored).
    Typing {
        username: &'a str,
    },
    Presence {
        users: &'a [String],
    },
    /// A member's read marker moved forward to message `id` (read receipts).
    Read {
        username: &'a str,
        id: i64,
    },
    Join {
        username: &'a str,
    },
    Leave {
        username: &'a str,
    },
    /// Joins and leaves batched during a burst (see `room/presence.rs`): each name once, under its
    /// state now, in the order of its latest change.
    PresenceChanges {
        joined: &'a [String],
        left: &'a [String],
    },
    Error(ErrorFrame<'a>),
    /// The last frame before the server closes the socket, with the close's code and reason:
    /// a client that never sees the close frame itself still learns that and why.
    Closing {
        code: u16,
        reason: &'a str,
    },
}

/// Why the server closes a socket. Each has the close code and reason it sends (also in the
/// `closing` frame before the close); this list is the one place they are defined, and the
/// README's close table mirrors it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The socket's badge was revoked: logout, logout everywhere.
    Revoked,
    /// The owner removed the user from the private room.
    Removed,
    /// The connection kept sending far past its rate limit.
    Flooding,
    /// The runtime reported an error on the socket.
    SocketError,
    /// A moderator kicked the user from the room: they may come back at once.
    Kicked,
    /// A moderator banned the user from the room.
    Banned,
}

impl CloseReason {
    /// 1008 (policy violation) for every decision about the client; 1011 for a server fault.
    pub const fn code(self) -> u16 {
        match self {
            CloseReason::Revoked
            | CloseReason::Removed
            | CloseReason::Flooding
            | CloseReason::Banned => 1008,
            CloseReason::SocketError => 1011,
            CloseReason::Kicked => 4001,
        }
    }

    /// The close frame's reason text (at most 123 bytes, the limit of a close frame).
    pub const fn reason(self) -> &'static str {
        match self {
            CloseReason::Revoked => "token revoked",
            CloseReason::Removed => "removed from room",
            CloseReason::Flooding => "rate limit exceeded",
            CloseReason::SocketError => "socket error",
            CloseReason::Kicked => "kicked",
            CloseReason::Banned => "banned",
        }
    }

    /// The `closing` frame sent just before the close.
    pub fn closing_frame(self) -> String {
        ServerFrame::Closing {
            code: self.code(),
            reason: self.reason(),
        }
        .to_json()
    }
}

impl ServerFrame<'_> {
    pub fn to_json(&self) -> String {
        // Serialising these plain structs cannot fail.
        serde_json::to_string(self).expect("server frames always serialise")
    }
}

/// An `error` frame: to the sender only, the connection keeps working. Built with
/// [`ErrorFrame::new`] and the fields that apply; every error frame the server sends is one.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ErrorFrame<'a> {
    /// Which refusal, for clients to branch on: `muted` or `slow_mode` (moderation).
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
    detail: &'a str,
    /// When the refused frame may be sent again (rate limit, slow mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
    /// With `muted`: when the mute ends (`Some(None)` is `null`: until lifted).
    #[serde(skip_serializing_if = "Option::is_none")]
    until: Option<Option<i64>>,
    /// The `client_id` of the frame this answers, when it carried one: a client with several
    /// frames out tells which one was refused by it.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
}

impl<'a> ErrorFrame<'a> {
    pub fn new(detail: &'a str) -> Self {
        Self {
            detail,
            ..Self::default()
        }
    }

    pub fn code(self, code: &'a str) -> Self {
        Self {
            code: Some(code),
            ..self
        }
    }

    pub fn retry_after_ms(self, ms: u64) -> Self {
        Self {
            retry_after_ms: Some(ms),
            ..self
        }
    }

    pub fn until(self, until: Option<i64>) -> Self {
        Self {
            until: Some(until),
            ..self
        }
    }

    /// Names the frame this error answers: the `client_id` of the client's frame, if any.
    pub fn answering(self, client_id: Option<&'a str>) -> Self {
        Self { client_id, ..self }
    }

    pub fn to_json(self) -> String {
        ServerFrame::Error(self).to_json()
    }
}

/// An error frame with only a detail.
pub fn error_frame(detail: &str) -> String {
    ErrorFrame::new(detail).to_json()
}

/// Most bytes of frames one `batch` frame carries (a single larger frame still goes, alone): a
/// client's parser handles the batch in one piece, so a burst is split into a few of these
/// rather than one unbounded string.
pub const MAX_BATCH_BYTES: usize = 128 * 1024;

/// What a client that opted into batched delivery (`?batch=1`) receives for `frames`, the
/// serialised frames of one outbox flush in order: `{"type":"batch","frames":[...]}`, split
/// where the next frame would take a batch past [`MAX_BATCH_BYTES`]. A batch of one frame is
/// sent as that frame itself: no client waits on a wrapper around a single frame, and every
/// client already reads bare frames (presence, typing and the rest are never batched).
///
/// The frames are JSON objects already, so a batch is their text joined, serialised once for
/// all its recipients.
pub fn batch_frames<S: AsRef<str>>(frames: &[S]) -> Vec<String> {
    const HEAD: &str = r#"{"type":"batch","frames":["#;
    const TAIL: &str = "]}";
    let mut batches = Vec::new();
    let mut start = 0;
    while start < frames.len() {
        let mut end = start + 1;
        let mut bytes = frames[start].as_ref().len();
        while end < frames.len() && bytes + 1 + frames[end].as_ref().len() <= MAX_BATCH_BYTES {
            bytes += 1 + frames[end].as_ref().len();
            end += 1;
        }
        let chunk = &frames[start..end];
        if let [only] = chunk {
            batches.push(only.as_ref().to_owned());
        } else {
            let mut text = String::with_capacity(HEAD.len() + bytes + TAIL.len());
            text.push_str(HEAD);
            for (i, frame) in chunk.iter().enumerate() {
                if i > 0 {
                    text.push(',');
                }
                text.push_str(frame.as_ref());
            }
            text.push_str(TAIL);
            batches.push(text);
        }
        start = end;
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The message a frame carries, or why it is refused.
    fn parse_client_message<'a>(frame: &'a str, room: &str) -> Result<ClientMessage<'a>, Invalid> {
        match parse_client_frame(frame, room)
            .map_err(|bad| bad.why)?
            .frame
        {
            ClientFrame::Message(m) => Ok(m),
            other => panic!("{frame} parsed as {other:?}"),
        }
    }

    #[test]
    fn visible_content_with_invisible_characters_is_kept_as_sent() {
        for content in ["a\u{200b}", "\u{0}x", "👩\u{200d}💻", "\u{feff}hello", "ـ"] {
            let frame = serde_json::json!({ "content": content }).to_string();
            let m = parse_client_message(&frame, "lobby").unwrap();
            assert_eq!(m.content, content);
        }
    }

    #[test]
    fn a_null_room_id_counts_as_absent() {
        let m = parse_client_message(r#"{"content":"hi","room_id":null}"#, "lobby").unwrap();
        assert_eq!(m.content, "hi");
    }

    #[test]
    fn every_close_reason_fits_a_close_frame_and_says_so_in_its_closing_frame() {
        use CloseReason::*;
        for why in [Revoked, Removed, Flooding, SocketError] {
            assert!(why.reason().len() <= 123, "{why:?}");
            let frame: serde_json::Value = serde_json::from_str(&why.closing_frame()).unwrap();
            assert_eq!(
                frame,
                serde_json::json!({"type": "closing", "code": why.code(), "reason": why.reason()})
            );
        }
    }

    proptest! {
        /// Any text frame: a valid message or a clean error, never a panic.
        #[test]
        fn any_frame_is_handled(frame in ".{0,300}") {
            match parse_client_frame(&frame, "lobby").map(|ok| ok.frame) {
                Ok(ClientFrame::Message(ClientMessage { content }) | ClientFrame::Edit { content, .. }) => {
                    prop_assert!(!is_blank(&content) && content.chars().count() <= MAX_CONTENT_CHARS)
                }
                Ok(_) => {}
                Err(e) => prop_assert!(!e.why.0.is_empty()),
            }
        }

        #[test]
        fn json_frames(content in ".{0,50}", room in prop::option::of("[a-z]{0,6}"), extra in ".{0,20}") {
            let mut v = serde_json::json!({"content": content, "username": extra});
            if let Some(r) = &room { v["room_id"] = r.clone().into(); }
            let frame = v.to_string();
            let result = parse_client_message(&frame, "lobby");
            let should_pass = !is_blank(&content) && room.as_deref().is_none_or(|r| r == "lobby");
            prop_assert_eq!(result.is_ok(), should_pass);
            if let Ok(m) = result { prop_assert_eq!(m.content, content); }
        }

        #[test]
        fn names_never_panic(raw in ".{0,80}") {
            if let Ok(u) = Username::parse(&raw) { prop_assert_eq!(u.as_str(), raw.as_str()); }
            if let Ok(r) = RoomId::parse(&raw) { prop_assert_eq!(r.as_str(), raw.as_str()); }
        }
    }

    #[test]
    fn usernames() {
        assert!(Username::parse("bob").is_ok());
        assert!(Username::parse("a.b-c_D9").is_ok());
        assert!(Username::parse(&"x".repeat(32)).is_ok());
        for bad in [
            "",
            "ab",
            "has space",
            "émile",
            "a/b",
            "<script>",
            &"x".repeat(33),
        ] {
            assert!(Username::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn passwords() {
        let bob = Username::parse("bobby").unwrap();
        assert!(Password::parse_new("correct horse", &bob).is_ok());
        assert!(Password::parse_new("short", &bob).is_err());
        assert!(Password::parse_new(&"p".repeat(129), &bob).is_err());
        assert!(
            Password::parse_new(&"é".repeat(128), &bob).is_ok(),
            "counts chars, not bytes"
        );
        let long_name = Username::parse("longusername").unwrap();
        assert!(Password::parse_new("LongUserName", &long_name).is_err());
        assert_eq!(
            format!("{:?}", Password::parse_new("secret-pass", &bob).unwrap()),
            "Password(<redacted>)"
        );
    }

    #[test]
    fn room_ids() {
        assert!(RoomId::parse("general").is_ok());
        assert!(RoomId::parse("a").is_ok());
        assert!(RoomId::parse(&"r".repeat(64)).is_ok());
        for bad in ["", "a.b", "a b", "a/b", "%2e", &"r".repeat(65)] {
            assert!(RoomId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn valid_message_borrows_content() {
        let m = parse_client_message(r#"{"content":"hi","room_id":"lobby"}"#, "lobby").unwrap();
        assert_eq!(m.content, "hi");
        assert!(matches!(m.content, Cow::Borrowed(_)));
        let m = parse_client_message(r#"{"content":"a\"b"}"#, "lobby").unwrap();
        assert_eq!(m.content, "a\"b");
    }

    #[test]
    fn client_username_is_ignored() {
        let m = parse_client_frame(r#"{"content":"hi","username":"admin"}"#, "r").unwrap();
        assert_eq!(
            m,
            ParsedFrame {
                frame: ClientFrame::Message(ClientMessage {
                    content: "hi".into()
                }),
                client_id: None,
            }
        );
    }

    #[test]
    fn client_ids_are_one_to_64_characters() {
        let m = parse_client_frame(r#"{"content":"hi","client_id":"a-1"}"#, "r").unwrap();
        assert_eq!(m.client_id.as_deref(), Some("a-1"));
        let longest = format!(r#"{{"content":"hi","client_id":"{}"}}"#, "é".repeat(64));
        assert!(parse_client_message(&longest, "r").is_ok());
        for bad in [
            r#"{"content":"hi","client_id":""}"#.to_owned(),
            format!(r#"{{"content":"hi","client_id":"{}"}}"#, "a".repeat(65)),
        ] {
            let err = parse_client_message(&bad, "r").unwrap_err();
            assert!(err.0.contains("client_id"), "{bad}: {err}");
        }
        let err = parse_client_message(r#"{"content":"hi","client_id":7}"#, "r").unwrap_err();
        assert!(err.0.contains("invalid message"), "{err}");
    }

    #[test]
    fn a_refused_message_names_its_valid_client_id() {
        let long = format!(
            r#"{{"content":"{}","client_id":"c-1"}}"#,
            "a".repeat(MAX_CONTENT_CHARS + 1)
        );
        let named = [
            (long.as_str(), "too long"),
            (r#"{"content":" \u200b ","client_id":"c-1"}"#, "empty"),
            (
                r#"{"content":"hi","room_id":"other","client_id":"c-1"}"#,
                "does not match",
            ),
            (r#"{"client_id":"c-1"}"#, "missing field `content`"),
            (
                r#"{"type":"message","content":"","client_id":"c-1"}"#,
                "empty",
            ),
        ];
        for (frame, want) in named {
            let bad = parse_client_frame(frame, "lobby").unwrap_err();
            assert!(bad.why.0.contains(want), "{frame}: {}", bad.why);
            assert_eq!(bad.client_id.as_deref(), Some("c-1"), "{frame}");
        }
        let escaped = parse_client_frame(r#"{"content":"","client_id":"a\"b\n"}"#, "r");
        assert_eq!(escaped.unwrap_err().client_id.as_deref(), Some("a\"b\n"));

        let unnamed = [
            // The client_id itself is invalid: never repeated back.
            r#"{"content":"","client_id":""}"#.to_owned(),
            format!(r#"{{"content":"","client_id":"{}"}}"#, "x".repeat(65)),
            r#"{"content":"hi","client_id":7}"#.to_owned(),
            // Unreadable: nothing to name.
            format!(
                r#"{{"content":"{}","client_id":"c-1"}}"#,
                "a".repeat(MAX_FRAME_BYTES)
            ),
            r#"{"content":5,"client_id":"c-1"}"#.to_owned(),
            r#"{"type":"edit","id":1,"content":"","client_id":7}"#.to_owned(),
        ];
        for frame in unnamed {
            let bad = parse_client_frame(&frame, "lobby").unwrap_err();
            assert_eq!(bad.client_id, None, "{frame}: {}", bad.why);
        }
        // Which fault is reported first stays: the room, then the content, then the client_id.
        let both = r#"{"content":"","room_id":"other","client_id":""}"#;
        let bad = parse_client_frame(both, "lobby").unwrap_err();
        assert!(bad.why.0.contains("does not match"), "{}", bad.why);
        assert_eq!(bad.client_id, None);
    }

    #[test]
    fn every_change_may_carry_a_client_id_and_typing_ignores_it() {
        let cases = [
            (
                r#"{"type":"edit","id":3,"content":"fixed""#,
                ClientFrame::Edit {
                    id: 3,
                    content: "fixed".into(),
                },
            ),
            (r#"{"type":"delete","id":3"#, ClientFrame::Delete { id: 3 }),
            (
                r#"{"type":"react","id":3,"emoji":"👍""#,
                ClientFrame::React {
                    id: 3,
                    emoji: Emoji::parse("👍").unwrap(),
                    add: true,
                },
            ),
            (
                r#"{"type":"unreact","id":3,"emoji":"👍""#,
                ClientFrame::React {
                    id: 3,
                    emoji: Emoji::parse("👍").unwrap(),
                    add: false,
                },
            ),
            (r#"{"type":"read","id":3"#, ClientFrame::Read { id: 3 }),
        ];
        for (head, frame) in cases {
            let without = format!("{head}}}");
            let without = parse_client_frame(&without, "r").unwrap();
            assert_eq!(without.frame, frame, "{head}");
            assert_eq!(without.client_id, None, "{head}");
            let with = format!(r#"{head},"client_id":"ch-1"}}"#);
            let with = parse_client_frame(&with, "r").unwrap();
            assert_eq!(with.frame, frame, "{head}");
            assert_eq!(with.client_id.as_deref(), Some("ch-1"), "{head}");
            for bad in [r#""""#.to_owned(), format!(r#""{}""#, "x".repeat(65))] {
                let text = format!(r#"{head},"client_id":{bad}}}"#);
                let refused = parse_client_frame(&text, "r").unwrap_err();
                assert!(
                    refused.why.0.contains("client_id"),
                    "{text}: {}",
                    refused.why
                );
                assert_eq!(refused.client_id, None, "{text}");
            }
            let text = format!(r#"{head},"client_id":7}}"#);
            let refused = parse_client_frame(&text, "r").unwrap_err();
            assert!(refused.why.0.contains("invalid message"), "{text}");
            assert_eq!(refused.client_id, None, "{text}");
        }
        for text in [
            r#"{"type":"typing","client_id":"ch-1"}"#.to_owned(),
            r#"{"type":"typing","client_id":""}"#.to_owned(),
            format!(r#"{{"type":"typing","client_id":"{}"}}"#, "x".repeat(65)),
        ] {
            let typing = parse_client_frame(&text, "r").unwrap();
            assert_eq!(
                typing,
                ParsedFrame {
                    frame: ClientFrame::Typing,
                    client_id: None
                },
                "{text}"
            );
        }
    }

    #[test]
    fn a_refused_change_names_its_valid_client_id() {
        let long = format!(
            r#"{{"type":"edit","id":1,"content":"{}","client_id":"ch-1"}}"#,
            "a".repeat(MAX_CONTENT_CHARS + 1)
        );
        let named = [
            (long.as_str(), "too long"),
            (
                r#"{"type":"edit","id":1,"content":" ","client_id":"ch-1"}"#,
                "empty",
            ),
            (
                r#"{"type":"edit","content":"x","client_id":"ch-1"}"#,
                "id must be",
            ),
            (
                r#"{"type":"delete","id":1,"room_id":"other","client_id":"ch-1"}"#,
                "does not match",
            ),
            (
                r#"{"type":"react","id":1,"emoji":"ok","client_id":"ch-1"}"#,
                "emoji must be",
            ),
            (
                r#"{"type":"unreact","id":1,"client_id":"ch-1"}"#,
                "missing field `emoji`",
            ),
            (r#"{"type":"read","id":0,"client_id":"ch-1"}"#, "id must be"),
        ];
        for (frame, want) in named {
            let bad = parse_client_frame(frame, "r").unwrap_err();
            assert!(bad.why.0.contains(want), "{frame}: {}", bad.why);
            assert_eq!(bad.client_id.as_deref(), Some("ch-1"), "{frame}");
        }
        // The change's own fault is reported before an invalid client_id, which is not named.
        let both = r#"{"type":"react","id":1,"emoji":"ok","client_id":""}"#;
        let bad = parse_client_frame(both, "r").unwrap_err();
        assert!(bad.why.0.contains("emoji must be"), "{}", bad.why);
        assert_eq!(bad.client_id, None);
    }

    #[test]
    fn error_frames_have_only_the_fields_given_and_escape_the_client_id() {
        let frame =
            |e: ErrorFrame| serde_json::from_str::<serde_json::Value>(&e.to_json()).unwrap();
        assert_eq!(
            frame(ErrorFrame::new("rate limited").retry_after_ms(250)),
            serde_json::json!({"type":"error","detail":"rate limited","retry_after_ms":250})
        );
        assert_eq!(
            frame(
                ErrorFrame::new("rate limited")
                    .retry_after_ms(250)
                    .answering(Some("c-1"))
            ),
            serde_json::json!({"type":"error","detail":"rate limited","retry_after_ms":250,"client_id":"c-1"})
        );
        assert_eq!(
            frame(ErrorFrame::new("no").answering(None)),
            serde_json::json!({"type":"error","detail":"no"})
        );
        assert_eq!(
            frame(ErrorFrame::new("muted").code("muted").until(None)),
            serde_json::json!({"type":"error","code":"muted","detail":"muted","until":null})
        );
        assert_eq!(
            frame(ErrorFrame::new("muted").code("muted").until(Some(9))),
            serde_json::json!({"type":"error","code":"muted","detail":"muted","until":9})
        );
        let tricky = "\"},\"type\":\"message\u{2028}\n\\";
        let text = ErrorFrame::new("x").answering(Some(tricky)).to_json();
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["client_id"], tricky, "{text}");
        assert_eq!(parsed["type"], "error", "{text}");
        assert_eq!(parsed.as_object().unwrap().len(), 3, "{text}");
    }

    #[test]
    fn invalid_messages() {
        let cases = [
            ("not json", "invalid message"),
            ("[]", "invalid message"),
            (r#"["hi","lobby"]"#, "JSON object"),
            ("{}", "missing field"),
            (r#"{"content":5}"#, "invalid message"),
            (r#"{"content":""}"#, "empty"),
            (r#"{"content":"   "}"#, "empty"),
            (r#"{"content":"\u0000\u0000"}"#, "empty"),
            (r#"{"content":"\u200b\u200c\u200d\u2060\ufeff"}"#, "empty"),
            (r#"{"content":" \u0007\u202e\u00ad\t\u3164"}"#, "empty"),
            (r#"{"content":"hi","room_id":"other"}"#, "does not match"),
            (r#"{"content":"hi","room_id":7}"#, "invalid message"),
        ];
        for (frame, want) in cases {
            let err = parse_client_message(frame, "lobby").unwrap_err();
            assert!(err.0.contains(want), "{frame}: {err}");
        }
    }

    #[test]
    fn content_limit_counts_characters() {
        let ok = format!(r#"{{"content":"{}"}}"#, "é".repeat(MAX_CONTENT_CHARS));
        assert!(parse_client_message(&ok, "r").is_ok());
        let long = format!(r#"{{"content":"{}"}}"#, "a".repeat(MAX_CONTENT_CHARS + 1));
        assert!(parse_client_message(&long, "r")
            .unwrap_err()
            .0
            .contains("too long"));
    }

    #[test]
    fn oversized_frame_refused_before_parsing() {
        let frame = format!(r#"{{"content":"{}"}}"#, "a".repeat(MAX_FRAME_BYTES));
        assert!(parse_client_message(&frame, "r")
            .unwrap_err()
            .0
            .contains("frame too large"));
    }

    #[test]
    fn frames_serialise_to_the_documented_shape() {
        let f = ServerFrame::Message {
            id: 7,
            room_id: "lobby",
            username: "bob",
            content: "<b>\"hi\"</b>",
            ts: 1700000000000,
            rev: 9,
            client_id: None,
        };
        let v: serde_json::Value = serde_json::from_str(&f.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"message","id":7,"room_id":"lobby","username":"bob",
                "content":"<b>\"hi\"</b>","ts":1700000000000i64,"rev":9})
        );
        let e: serde_json::Value = serde_json::from_str(&error_frame("nope")).unwrap();
        assert_eq!(e, serde_json::json!({"type":"error","detail":"nope"}));
        let users = vec!["a".to_string()];
        let p = ServerFrame::Presence { users: &users }.to_json();
        assert_eq!(p, r#"{"type":"presence","users":["a"]}"#);
        let (joined, left) = (vec!["b".to_string(), "a".to_string()], vec![]);
        let c = ServerFrame::PresenceChanges {
            joined: &joined,
            left: &left,
        }
        .to_json();
        assert_eq!(
            c,
            r#"{"type":"presence_changes","joined":["b","a"],"left":[]}"#
        );
    }

    #[test]
    fn change_frames_parse() {
        let parse_client_frame = |text, room| parse_client_frame(text, room).map(|ok| ok.frame);
        assert_eq!(
            parse_client_frame(r#"{"type":"edit","id":3,"content":"fixed"}"#, "r"),
            Ok(ClientFrame::Edit {
                id: 3,
                content: "fixed".into()
            })
        );
        assert_eq!(
            parse_client_frame(r#"{"type":"delete","id":3,"room_id":"r"}"#, "r"),
            Ok(ClientFrame::Delete { id: 3 })
        );
        assert_eq!(
            parse_client_frame(r#"{"type":"unreact","id":3,"emoji":"👍"}"#, "r"),
            Ok(ClientFrame::React {
                id: 3,
                emoji: Emoji::parse("👍").unwrap(),
                add: false
            })
        );
        assert_eq!(
            parse_client_frame(r#"{"type":"typing"}"#, "r"),
            Ok(ClientFrame::Typing)
        );
        assert!(matches!(
            parse_client_frame(r#"{"type":"message","content":"hi"}"#, "r"),
            Ok(ClientFrame::Message(_))
        ));
    }

    #[test]
    fn bad_change_frames_are_refused() {
        let cases = [
            (r#"{"type":"shout","content":"hi"}"#, "unknown variant"),
            (r#"{"type":"edit","content":"x"}"#, "id must be"),
            (r#"{"type":"edit","id":0,"content":"x"}"#, "id must be"),
            (r#"{"type":"edit","id":-4,"content":"x"}"#, "id must be"),
            (
                r#"{"type":"edit","id":"4","content":"x"}"#,
                "invalid message",
            ),
            (r#"{"type":"edit","id":4}"#, "missing field `content`"),
            (r#"{"type":"edit","id":4,"content":"  "}"#, "empty"),
            (
                r#"{"type":"delete","id":1,"room_id":"other"}"#,
                "does not match",
            ),
            (r#"{"type":"react","id":1}"#, "missing field `emoji`"),
            (r#"{"type":"react","id":1,"emoji":"ok"}"#, "emoji must be"),
            (r#"{"type":"react","id":1,"emoji":""}"#, "emoji must be"),
            (r#"{"type":"react","id":1,"emoji":"👍 "}"#, "emoji must be"),
            (
                r#"{"type":"react","id":1,"emoji":"1\ufe0f"}"#,
                "emoji must be",
            ),
            (
                r#"{"type":"react","id":1,"emoji":"\u0007"}"#,
                "emoji must be",
            ),
        ];
        for (frame, want) in cases {
            let err = parse_client_frame(frame, "r").unwrap_err().why;
            assert!(err.0.contains(want), "{frame}: {err}");
        }
        let long = "😀".repeat(9); // 36 bytes
        assert!(Emoji::parse(&long).is_err());
        assert!(Emoji::parse(&"😀".repeat(8)).is_ok(), "32 bytes");
        assert!(Emoji::parse("👍🏽").is_ok(), "a skin tone is one emoji");
    }

    #[test]
    fn change_frames_and_message_states_serialise_to_the_documented_shape() {
        let mut reactions = Reactions::new();
        reactions.insert("👍".into(), vec!["ann".into(), "bob".into()]);
        let r = ServerFrame::Reactions {
            id: 4,
            rev: 12,
            room_id: "r",
            reactions: &reactions,
        };
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"reactions","id":4,"rev":12,"room_id":"r","reactions":{"👍":["ann","bob"]}})
        );
        let tombstone = ChatMessage {
            id: 4,
            room_id: "r".into(),
            username: "ann".into(),
            content: None,
            ts: 5,
            rev: 4,
            edited_ts: None,
            reactions: Reactions::new(),
            deleted: true,
        };
        assert_eq!(
            serde_json::to_value(&tombstone).unwrap(),
            serde_json::json!({"id":4,"room_id":"r","username":"ann","ts":5,"rev":4,"deleted":true})
        );
        let items = [
            LogItem::Message(tombstone),
            LogItem::Edited {
                id: 2,
                rev: 6,
                content: "new".into(),
                edited_ts: 7,
                username: "bob".into(),
                room_id: "r".into(),
            },
        ];
        let h = ServerFrame::History {
            messages: HistoryItems::Changes(&items),
            truncated: false,
            rev: 6,
        };
        let v: serde_json::Value = serde_json::from_str(&h.to_json()).unwrap();
        assert_eq!(v["rev"], 6);
        assert_eq!(v["messages"][0]["type"], "message");
        assert_eq!(v["messages"][0]["deleted"], true);
        assert_eq!(
            v["messages"][1],
            serde_json::json!({"type":"edited","id":2,"rev":6,"content":"new","edited_ts":7,"username":"bob","room_id":"r"})
        );
        let plain = ServerFrame::History {
            messages: HistoryItems::Messages(&[]),
            truncated: true,
            rev: 0,
        }
        .to_json();
        assert_eq!(
            plain,
            r#"{"type":"history","messages":[],"truncated":true,"rev":0}"#
        );
    }

    #[test]
    fn dm_room_ids_are_their_own_namespace() {
        let dm = format!("dm.{}", "0a".repeat(16));
        assert!(is_dm_room(&dm));
        assert!(RoomId::parse(&dm).unwrap().is_dm());
        for not_dm in [
            "dm-0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a",
            "dm.0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A0A",
            "dm.0a0a",
            "dm.0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a",
            "dm.0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0g",
        ] {
            assert!(!is_dm_room(not_dm), "{not_dm}");
        }
        assert!(!RoomId::parse("lobby").unwrap().is_dm());
        // Any other name with a dot stays invalid: only the DM shape is let through.
        assert!(RoomId::parse("dm.alice").is_err());
        assert!(RoomId::parse("a.b").is_err());
    }

    #[test]
    fn read_frames() {
        assert_eq!(
            parse_client_frame(r#"{"type":"read","id":7}"#, "r").map(|ok| ok.frame),
            Ok(ClientFrame::Read { id: 7 })
        );
        for bad in [
            r#"{"type":"read"}"#,
            r#"{"type":"read","id":0}"#,
            r#"{"type":"read","id":-3}"#,
            r#"{"type":"read","id":"7"}"#,
            r#"{"type":"read","id":1.5}"#,
        ] {
            assert!(parse_client_frame(bad, "r").is_err(), "{bad}");
        }
        assert_eq!(
            ServerFrame::Read {
                username: "ann",
                id: 4
            }
            .to_json(),
            r#"{"type":"read","username":"ann","id":4}"#
        );
    }

    #[test]
    fn a_batch_holds_the_frames_in_order_and_parses_as_one_json_frame() {
        let frames = [
            ServerFrame::Join { username: "ann" }.to_json(),
            error_frame("x"),
            ServerFrame::Leave { username: "bo" }.to_json(),
        ];
        let batches = batch_frames(&frames);
        assert_eq!(batches.len(), 1);
        let parsed: serde_json::Value = serde_json::from_str(&batches[0]).unwrap();
        assert_eq!(parsed["type"], "batch");
        let inner: Vec<serde_json::Value> = frames
            .iter()
            .map(|f| serde_json::from_str(f).unwrap())
            .collect();
        assert_eq!(parsed["frames"], serde_json::Value::Array(inner));
    }

    #[test]
    fn a_batch_of_one_is_the_bare_frame_and_none_is_nothing() {
        let one = [error_frame("only")];
        assert_eq!(batch_frames(&one), vec![one[0].clone()]);
        assert!(batch_frames::<String>(&[]).is_empty());
    }

    #[test]
    fn batches_split_at_the_byte_limit_and_keep_every_frame_once_in_order() {
        // Frames of 9,997 bytes: 13 fit under 128 KiB with their commas, the 14th starts a new batch.
        let frames: Vec<String> = (0..30)
            .map(|i| format!(r#"{{"n":{i:>2},"pad":"{}"}}"#, "x".repeat(10_000 - 20)))
            .collect();
        let batches = batch_frames(&frames);
        let mut seen = Vec::new();
        for batch in &batches {
            let parsed: serde_json::Value = serde_json::from_str(batch).unwrap();
            let items = match parsed["type"].as_str() {
                Some("batch") => parsed["frames"].as_array().unwrap().clone(),
                _ => vec![parsed],
            };
            let inner_bytes: usize = items.iter().map(|f| f.to_string().len() + 1).sum();
            assert!(inner_bytes <= MAX_BATCH_BYTES + 1, "{inner_bytes}");
            seen.extend(items.iter().map(|f| f["n"].as_i64().unwrap()));
        }
        assert_eq!(seen, (0..30).collect::<Vec<i64>>());
        assert_eq!(batches.len(), 3);
        // A frame larger than the limit still goes, alone and bare.
        let huge = vec![
            "{\"a\":1}".to_owned(),
            format!(r#"{{"b":"{}"}}"#, "y".repeat(MAX_BATCH_BYTES)),
        ];
        let split = batch_frames(&huge);
        assert_eq!(split, huge);
    }
}
