//! End-to-end tests: the built Worker under `wrangler dev`, driven over HTTP and WebSockets. One
//! test binary, one module per concern; the servers and clients are in [`harness`].
//!
//! Every test that needs no settings of its own runs against one shared server, in parallel with
//! the others: each names its users and rooms with [`harness::unique_name`], and the shared server
//! runs with the per-IP and per-user abuse limits raised out of the way. Tests of settings, of
//! restarts or of a server's log use servers of their own.

mod harness;

mod accounts;
mod api_documents;
mod badges;
mod batching;
mod changes;
mod dms;
mod durability;
mod findings;
mod history;
mod idempotency;
mod limits;
mod moderation;
mod my_rooms;
mod ops;
mod passive;
mod presence;
mod private_rooms;
mod refresh;
mod routes;
mod security;
mod sockets;
