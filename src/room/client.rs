//! How the Worker calls a room's Durable Object: the binding, the internal routes and the
//! header that carries the access the Worker checked. Only the Worker reaches a room, so the
//! room trusts what arrives here; everything the Worker sends is built from scratch, never
//! copied from the client's request.

use worker::wasm_bindgen::JsCast;
use worker::{wasm_bindgen_futures::JsFuture, worker_sys, Env, Headers, Method, Request};
use worker::{RequestInit, Response, Stub};
use worker_sys::web_sys;

use super::handover::{self, Handover};
use crate::http::{ApiError, ApiResult};
use crate::protocol::RoomId;

/// The Durable Object binding in wrangler.toml.
pub const BINDING: &str = "ROOMS";
/// `member` when the Worker checked membership of a private room, `public` otherwise, on the
/// requests it builds for the room's HTTP routes (a socket's access travels in the handover).
pub const ACCESS_HEADER: &str = "x-clubhouse-access";
/// On the room's 403 to a request checked only as public: the room is private, and the caller
/// should look up the user's membership (D1) and ask again as `member`.
pub const PRIVATE_HEADER: &str = "x-clubhouse-private";
/// The username from the caller's verified badge, on the requests whose answer depends on who
/// asks (history and the audit log refuse banned users and non-moderators).
pub const USER_HEADER: &str = "x-clubhouse-user";

/// One room, as the Worker calls it.
pub struct RoomStub<'a> {
    env: &'a Env,
    room: &'a RoomId,
}

/// What a room says about itself.
#[derive(Debug, serde::Deserialize)]
pub struct RoomInfo {
    pub private: bool,
    pub owner: Option<String>,
    pub moderators: Vec<String>,
    pub slow_mode_secs: i64,
    /// `owner`, `moderator` or `member`; `None` in a room without an owner.
    pub your_role: Option<String>,
    /// `false`, `true` (until lifted) or `{"until": ms}`.
    pub banned: serde_json::Value,
    pub muted: serde_json::Value,
}

/// What a room answered to a claim.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    Created,
    /// Used or claimed before.
    Taken,
}

impl<'a> RoomStub<'a> {
    pub fn new(env: &'a Env, room: &'a RoomId) -> Self {
        Self { env, room }
    }

    fn stub(&self) -> worker::Result<Stub> {
        self.env
            .durable_object(BINDING)?
            .id_from_name(self.room.as_str())?
            .get_stub()
    }

    /// Calls an internal route; `member`: the Worker found the caller a member of the room.
    async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        member: bool,
    ) -> ApiResult<Response> {
        self.call_as(method, path_and_query, member, None, None)
            .await
    }

    /// Calls an internal route on behalf of `user` (from the verified badge), with a JSON body.
    async fn call_as(
        &self,
        method: Method,
        path_and_query: &str,
        member: bool,
        user: Option<&str>,
        body: Option<String>,
    ) -> ApiResult<Response> {
        let headers = Headers::new();
        headers.set(ACCESS_HEADER, if member { "member" } else { "public" })?;
        if let Some(user) = user {
            headers.set(USER_HEADER, user)?;
        }
        let mut init = RequestInit::new();
        init.with_method(method).with_headers(headers);
        if let Some(body) = body {
            init.with_body(Some(body.into()));
        }
        let url = format!("https://room.internal{path_and_query}");
        let req = Request::new_with_init(&url, &init)?;
        Ok(self.stub()?.fetch_with_request(req).await?)
    }

    /// Gives the unused room to `owner` (a validated username), private or public: the room
    /// decides atomically whether the name is free (never used, never claimed).
    pub async fn claim(&self, owner: &str, private: bool) -> ApiResult<Claim> {
        let private = if private { 1 } else { 0 };
        let mut answer = self
            .call(
                Method::Post,
                &format!("/claim?owner={owner}&private={private}"),
                false,
            )
            .await?;
        match answer.status_code() {
            201 => Ok(Claim::Created),
            409 => Ok(Claim::Taken),
            status => Err(ApiError::internal(format!(
                "room claim failed: {status} {}",
                answer.text().await.unwrap_or_default()
            ))),
        }
    }

    /// `GET /messages?…` or `/members`, answered as the room answers it (the query is the
    /// client's, at most 256 bytes, read by the room with its own validation).
    pub async fn read(
        &self,
        what: &str,
        query: &str,
        member: bool,
        user: &str,
    ) -> ApiResult<Response> {
        self.call_as(
            Method::Get,
            &format!("/{what}{query}"),
            member,
            Some(user),
            None,
        )
        .await
    }

    /// The room's owner, moderators and slow mode, and `user`'s role and sanctions there
    /// (`/info`).
    pub async fn info(&self, user: &str) -> ApiResult<RoomInfo> {
        let mut answer = self
            .call_as(Method::Get, "/info", true, Some(user), None)
            .await?;
        Ok(answer.json().await?)
    }

    /// Forwards a moderation action by `actor` (from the verified badge); the room's answer as
    /// it gave it (200, or the refusal).
    pub async fn moderate(&self, request: &serde_json::Value) -> ApiResult<Response> {
        self.call_as(
            Method::Post,
            "/moderate",
            true,
            None,
            Some(request.to_string()),
        )
        .await
    }

    /// The audit log as `user` asks for it (`query`: the client's, at most 256 bytes).
    pub async fn audit(&self, query: &str, user: &str) -> ApiResult<Response> {
        self.call_as(
            Method::Get,
            &format!("/audit{query}"),
            true,
            Some(user),
            None,
        )
        .await
    }

    /// The operators' figures (`/stats`).
    pub async fn stats(&self) -> ApiResult<Response> {
        self.call(Method::Get, "/stats", true).await
    }

    /// Closes the sockets of `user` (a validated username), removed from the room's members.
    pub async fn kick(&self, user: &str) -> ApiResult<()> {
        self.call(Method::Post, &format!("/kick?user={user}"), true)
            .await
            .map(drop)
    }

    /// `user` (a validated username) took this public room off their list: the room records
    /// their next connect as a join again.
    pub async fn left(&self, user: &str) -> ApiResult<()> {
        self.call(Method::Post, &format!("/left?user={user}"), true)
            .await
            .map(drop)
    }

    /// Forgets the room's admission of one badge (`jti`, hex) and closes its sockets.
    pub async fn revoke_badge(&self, jti: &str) -> ApiResult<()> {
        self.call(Method::Post, &format!("/revoke?jti={jti}"), true)
            .await
            .map(drop)
    }

    /// Forgets every admitted badge of `user` (a validated username) and closes their sockets.
    pub async fn revoke_user(&self, user: &str) -> ApiResult<()> {
        self.call(Method::Post, &format!("/revoke?user={user}"), true)
            .await
            .map(drop)
    }

    /// Hands a WebSocket upgrade to the room: its answer (the 101 with the client's socket, or
    /// a refusal) as the room gave it, not converted: the 101 carries the client's WebSocket,
    /// which a `worker::Response` round trip would wrap in a second JS Response per connection.
    pub async fn connect(&self, handover: &Handover) -> ApiResult<web_sys::Response> {
        let stub: worker_sys::DurableObject = self.stub()?.into_rpc();
        Ok(fetch_untouched(&stub, &connect_request(handover)?).await?)
    }
}

/// The room's `/connect` request, built from scratch: nothing the client sent reaches the room
/// but the upgrade itself (the runtime refuses a 101 to a request without it) and the
/// handover, which the Worker verified or parsed. Made with the runtime's classes directly:
/// `worker::RequestInit`'s conversion sets every field it knows (method, body, redirect,
/// `cf`...) across the JS boundary, a large share of a connect's CPU.
fn connect_request(handover: &Handover) -> worker::Result<web_sys::Request> {
    let headers = web_sys::Headers::new()?;
    headers.set("Upgrade", "websocket")?;
    headers.set(handover::HEADER, &handover.encode())?;
    let init = web_sys::RequestInit::new();
    init.set_headers(&headers);
    Ok(web_sys::Request::new_with_str_and_init(
        "https://room.internal/connect",
        &init,
    )?)
}

async fn fetch_untouched(
    stub: &worker_sys::DurableObject,
    req: &web_sys::Request,
) -> worker::Result<web_sys::Response> {
    let answer = JsFuture::from(stub.fetch_with_request(req)?).await?;
    Ok(answer.dyn_into::<web_sys::Response>()?)
}

/// Whether a room refused a socket handed over as public because it is private (the Worker
/// then checks membership and asks again).
pub fn refused_as_private(answer: &web_sys::Response) -> bool {
    answer.status() == 403 && answer.headers().has(PRIVATE_HEADER).unwrap_or(false)
}
