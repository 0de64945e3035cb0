//! One error type for the HTTP side. Every failure becomes a JSON `{"detail": "..."}` response
//! with the right status; a client's mistake is always a 4xx, never a 5xx.

use std::borrow::Cow;

use worker::Response;

use crate::http;

#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub detail: Cow<'static, str>,
    pub headers: Vec<(&'static str, String)>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: u16, detail: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            detail: detail.into(),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn bad_request(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(400, detail)
    }

    /// 401 with the `WWW-Authenticate: Bearer` challenge OAuth2 clients expect.
    pub fn unauthorized(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(401, detail).with_header("WWW-Authenticate", "Bearer")
    }

    pub fn not_found() -> Self {
        Self::new(404, "Not Found")
    }

    pub fn method_not_allowed(allow: &'static str) -> Self {
        Self::new(405, "Method Not Allowed").with_header("Allow", allow)
    }

    pub fn unprocessable(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(422, detail)
    }

    /// A server-side failure. The detail the client sees is generic; the cause goes to the log.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        crate::log::event("error", "error", &[("cause", &cause.to_string())]);
        Self::new(500, "Internal Server Error")
    }

    pub fn into_response(self) -> Response {
        let mut response = http::json(self.status, &serde_json::json!({ "detail": self.detail }));
        let headers = response.headers_mut();
        for (name, value) in &self.headers {
            let _ = headers.set(name, value);
        }
        response
    }
}

impl From<worker::Error> for ApiError {
    fn from(err: worker::Error) -> Self {
        Self::internal(err)
    }
}
