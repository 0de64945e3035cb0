-- Private rooms and their members. Public rooms need no row: any valid badge may join them.
-- The room's Durable Object is the authority on whether a name is taken; this table is the
-- Worker's record of who owns a private room and who may enter it.
CREATE TABLE IF NOT EXISTS rooms (
    room_id    TEXT    PRIMARY KEY,
    owner      TEXT    NOT NULL,
    private    INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS room_members (
    room_id  TEXT    NOT NULL REFERENCES rooms(room_id),
    username TEXT    NOT NULL COLLATE NOCASE,
    added_at INTEGER NOT NULL,
    PRIMARY KEY (room_id, username)
);

-- Which rooms a badge (jti) has sockets in, so logout can close them. Rows expire with the badge.
CREATE TABLE IF NOT EXISTS ws_sessions (
    jti      TEXT    NOT NULL,
    room_id  TEXT    NOT NULL,
    username TEXT    NOT NULL COLLATE NOCASE,
    exp      INTEGER NOT NULL,
    PRIMARY KEY (jti, room_id)
);
CREATE INDEX IF NOT EXISTS ws_sessions_by_user ON ws_sessions (username);
CREATE INDEX IF NOT EXISTS ws_sessions_by_exp ON ws_sessions (exp);
