-- Accounts. Usernames are unique without regard to case so "Bob" cannot pose as "bob";
-- the UNIQUE constraint (not a read-then-write check) decides signup races.
CREATE TABLE IF NOT EXISTS users (
    id            INTEGER PRIMARY KEY,
    username      TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT    NOT NULL,
    created_at    INTEGER NOT NULL
);
