-- Which rooms a badge has sockets in now lives in the user's session ledger (a Durable
-- Object, src/sessions.rs), recorded in the same call that checks revocation on connect.
DROP INDEX IF EXISTS ws_sessions_by_user;
DROP INDEX IF EXISTS ws_sessions_by_exp;
DROP TABLE IF EXISTS ws_sessions;
