-- Direct messages, blocks, and the data behind GET /me/rooms.
--
-- A DM is a private room (a `rooms` row with no owner, '') whose id is `dm.` + 32 hex digits
-- derived from the two names; its two members are `room_members` rows, as for any private room.
-- `room_members` stays the one record of who belongs to a private room or DM; public rooms a
-- user joined (first successful connect) are `joined_rooms` rows.

-- Listing a user's rooms reads memberships by username.
CREATE INDEX IF NOT EXISTS room_members_by_user ON room_members (username);

-- Public rooms a user joined by connecting, until they leave them (DELETE /me/rooms/{id}).
CREATE TABLE IF NOT EXISTS joined_rooms (
    username  TEXT    NOT NULL COLLATE NOCASE,
    room_id   TEXT    NOT NULL,
    joined_at INTEGER NOT NULL,
    PRIMARY KEY (username, room_id)
);

-- Each user's read marker per room: the newest message id they have read. Written by the room
-- (read frames and the user's own messages), only ever forward.
CREATE TABLE IF NOT EXISTS read_markers (
    username     TEXT    NOT NULL COLLATE NOCASE,
    room_id      TEXT    NOT NULL,
    last_read_id INTEGER NOT NULL,
    PRIMARY KEY (username, room_id)
);

-- Each room's newest message, written behind by the room after its messages are stored
-- (at most one write per room per quarter second), so listing rooms never wakes them.
CREATE TABLE IF NOT EXISTS room_activity (
    room_id       TEXT    PRIMARY KEY,
    last_id       INTEGER NOT NULL,
    last_username TEXT    NOT NULL,
    snippet       TEXT    NOT NULL,
    last_ts       INTEGER NOT NULL
);

-- Who blocked whom. A blocked user cannot open a DM with, connect to, or post in a DM with
-- the blocker.
CREATE TABLE IF NOT EXISTS blocks (
    blocker    TEXT    NOT NULL COLLATE NOCASE,
    blocked    TEXT    NOT NULL COLLATE NOCASE,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (blocker, blocked)
);
