//! `GET /me/rooms`: the caller's rooms (private rooms and DMs they are a member of, public rooms
//! they joined by connecting), newest activity first, with each room's newest message, unread
//! count and read marker; and `DELETE /me/rooms/{room_id}`, leaving a public room.
//!
//! Answered from D1 alone (`directory.rs`), which rooms keep current behind their messages
//! (`room/activity.rs`): a list of 200 rooms is one query, and wakes no room.

use worker::{Env, Request, Response};

use super::{guard, rooms};
use crate::directory::{unread, Directory, ListedRoom};
use crate::http::{self, ApiError, ApiResult};
use crate::room::client::RoomStub;
use crate::store::{RoomAccess, Store};

/// Rooms per page.
pub const PAGE: i64 = 50;
/// Longest `cursor` read (a page's last time and room id, hex-encoded).
const MAX_CURSOR_CHARS: usize = 200;

/// The cursor after `room`: opaque to clients (hex of `<sort_ts>:<room_id>`).
fn encode_cursor(sort_ts: i64, room: &str) -> String {
    format!("{sort_ts}:{room}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The position a cursor names; `None` for anything [`encode_cursor`] did not make.
fn decode_cursor(cursor: &str) -> Option<(i64, String)> {
    if cursor.len() > MAX_CURSOR_CHARS || !cursor.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(cursor.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    let text = String::from_utf8(bytes).ok()?;
    let (ts, room) = text.split_once(':')?;
    let ts = ts.parse::<i64>().ok()?;
    crate::protocol::RoomId::parse(room).ok()?;
    Some((ts, room.to_owned()))
}

/// One room as the list shows it.
fn shown(room: &ListedRoom) -> serde_json::Value {
    let last_message = match (&room.last_id, &room.last_username, &room.last_ts) {
        (Some(id), Some(username), Some(ts)) => {
            let snippet = room.snippet.as_deref().unwrap_or("");
            // Content is never blank, so an empty snippet is a deleted message.
            if snippet.is_empty() {
                serde_json::json!({ "id": id, "username": username, "content": null, "ts": ts, "deleted": true })
            } else {
                serde_json::json!({ "id": id, "username": username, "content": snippet, "ts": ts })
            }
        }
        _ => serde_json::Value::Null,
    };
    let mut shown = serde_json::json!({
        "room_id": room.room_id,
        "kind": room.kind,
        "last_message": last_message,
        "unread": unread(room.last_id.unwrap_or(0), room.last_read_id),
        "last_read_id": room.last_read_id,
    });
    if let Some(with) = &room.with_user {
        shown["with"] = serde_json::Value::from(with.as_str());
    }
    shown
}

/// `GET /me/rooms?cursor=` → `{"rooms":[...],"next_cursor"}` (`null` on the last page).
pub async fn list(req: Request, env: &Env) -> ApiResult<Response> {
    let badge = guard::bearer(&req, env).await?;
    let after = match http::raw_query_param(&req.inner().url(), "cursor") {
        None => None,
        Some(cursor) => Some(decode_cursor(&cursor).ok_or_else(|| {
            ApiError::unprocessable("cursor must be a next_cursor from an earlier page")
        })?),
    };
    let mut rooms = Directory::from_env(env)?
        .my_rooms(
            badge.username.as_str(),
            after.as_ref().map(|(ts, room)| (*ts, room.as_str())),
            PAGE + 1,
        )
        .await?;
    let more = rooms.len() as i64 > PAGE;
    rooms.truncate(PAGE as usize);
    let next_cursor = match rooms.last() {
        Some(last) if more => Some(encode_cursor(last.sort_ts, &last.room_id)),
        _ => None,
    };
    let shown: Vec<serde_json::Value> = rooms.iter().map(shown).collect();
    Ok(http::json(
        200,
        &serde_json::json!({ "rooms": shown, "next_cursor": next_cursor }),
    ))
}

/// `DELETE /me/rooms/{room_id}`: leaves a public room the caller joined. Private rooms are
/// left by their owner removing you, and a DM cannot be left (403).
pub async fn leave(req: Request, env: &Env, raw_room: &str) -> ApiResult<Response> {
    let badge = guard::bearer(&req, env).await?;
    let room = rooms::parse_room(raw_room)?;
    let user = badge.username.as_str();
    if room.is_dm() {
        return Err(ApiError::new(403, "a direct message room cannot be left"));
    }
    let access = Store::from_env(env)?
        .room_access(room.as_str(), user)
        .await?;
    if access != RoomAccess::Public {
        return Err(ApiError::new(
            403,
            "only public rooms can be left: a private room's owner manages its members",
        ));
    }
    if !Directory::from_env(env)?.leave_public(user, &room).await? {
        return Err(ApiError::new(404, "not one of your rooms"));
    }
    RoomStub::new(env, &room).left(user).await?;
    Ok(http::json(
        200,
        &serde_json::json!({ "room_id": room, "left": true }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_nothing_else_is_one() {
        let cursor = encode_cursor(1_795_000_000_123, "lobby");
        assert_eq!(
            decode_cursor(&cursor),
            Some((1_795_000_000_123, "lobby".into()))
        );
        let dm = format!("dm.{}", "ab".repeat(16));
        assert_eq!(decode_cursor(&encode_cursor(5, &dm)), Some((5, dm)));
        for bad in [
            "",
            "zz",
            "abc",
            &encode_cursor(5, "not a room"),
            &"61".repeat(150),
            "313a", // "1:" without a room
            "é1",
        ] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }
}
