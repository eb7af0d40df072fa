//! The pieces every route shares: what a connection shares with the server (the gate), the
//! response body type and the JSON/text/error responses, authentication and health.

use crate::api::error::ApiError;
use crate::api::AppState;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::Value;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;
use std::time::Duration;

/// What every request on every connection shares with the server.
pub struct Gate {
    pub in_flight: Arc<AtomicUsize>,
    /// Set at SIGTERM: new requests get 503 and their connection closes.
    pub draining: AtomicBool,
    pub body_timeout: Duration,
}


pub type HttpBody = BoxBody<Bytes, Infallible>;


pub fn authenticate(state: &AppState, req: &Request<Incoming>) -> Result<crate::tenants::Tenant, ApiError> {
    state.tenant(req.headers().get("authorization").and_then(|v| v.to_str().ok()))
}

pub fn health(state: &AppState) -> Response<HttpBody> {
    if state.replicas.healthy() {
        text(StatusCode::OK, String::new(), "text/plain")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "engine not running\n".into(), "text/plain")
    }
}

pub fn error_response(e: &ApiError) -> Response<HttpBody> {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = json(status, &e.body());
    if let Some(s) = e.retry_after {
        resp.headers_mut().insert("retry-after", s.into());
    }
    resp
}

pub fn json(status: StatusCode, v: &Value) -> Response<HttpBody> {
    text(status, v.to_string(), "application/json")
}

pub fn text(status: StatusCode, body: String, content_type: &'static str) -> Response<HttpBody> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)).boxed())
        .expect("static headers")
}

