-- A deleted account keeps its row, so its name stays reserved (the UNIQUE NOCASE constraint
-- refuses it to new signups) and its messages keep naming it; it can no longer log in.
ALTER TABLE users ADD COLUMN deleted_at INTEGER;
