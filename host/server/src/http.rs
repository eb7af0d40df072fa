//! Routing HTTP requests to the endpoints, and the response bodies (JSON, text, SSE).

use crate::api::chat::chat_completions;
use crate::api::completions::completions;
use crate::api::error::ApiError;
use crate::api::AppState;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::Value;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc::UnboundedReceiver;

/// Largest request body accepted.
const MAX_BODY_BYTES: usize = 32 << 20;

pub enum Reply {
    Json(Value),
    Sse(UnboundedReceiver<Bytes>),
}

pub type HttpBody = BoxBody<Bytes, Infallible>;

/// Counts requests in flight so shutdown can wait for them.
pub struct InFlight(pub Arc<AtomicUsize>);

impl InFlight {
    fn enter(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, SeqCst);
        Self(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

pub async fn route(state: Arc<AppState>, in_flight: Arc<AtomicUsize>, req: Request<Incoming>) -> Result<Response<HttpBody>, Infallible> {
    let guard = InFlight::enter(&in_flight);
    let path = req.uri().path().trim_end_matches('/').to_string();
    let method = req.method().clone();
    let result = match (method.clone(), path.as_str()) {
        (Method::GET, "/health") => Ok(health(&state)),
        (Method::GET, "/metrics") => {
            let mut body = crate::metrics::render(&state.replicas.metrics());
            crate::metrics::render_plugins(&mut body, &state.plugins.plugins);
            state.tenant_stats.render(&mut body);
            Ok(text(StatusCode::OK, body, "text/plain; version=0.0.4"))
        }
        (Method::POST, "/admin/plugins/reload") => Ok(reload_plugins(&state)),
        (Method::GET, "/v1/models") => authenticate(&state, &req).map(|_| json(StatusCode::OK, &state.models())),
        (Method::POST, "/v1/completions") => match authenticate(&state, &req) {
            Ok(tenant) => match read_json(req).await {
                Ok(body) => completions(state.clone(), tenant, body).await.map(|r| reply(r, guard)),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
        (Method::POST, "/v1/chat/completions") => match authenticate(&state, &req) {
            Ok(tenant) => match read_json(req).await {
                Ok(body) => chat_completions(state.clone(), tenant, body).await.map(|r| reply(r, guard)),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
        (Method::POST, "/admin/tenants/reload") => Ok(reload_tenants(&state)),
        (_, "/health" | "/metrics" | "/v1/models" | "/v1/completions" | "/v1/chat/completions" | "/admin/plugins/reload" | "/admin/tenants/reload") => {
            Err(ApiError { status: 405, ..ApiError::not_found(format!("method {method} is not allowed on {path}")) })
        }
        _ => Err(ApiError::not_found(format!("no route for {method} {path}"))),
    };
    Ok(result.unwrap_or_else(|e| error_response(&e)))
}

/// Recompiles every plugin from its file and swaps in the versions that start; requests in
/// flight finish on the version they began with.
fn reload_plugins(state: &AppState) -> Response<HttpBody> {
    let results: Vec<Value> = state
        .plugins
        .reload(true)
        .into_iter()
        .map(|(name, r)| match r {
            Ok(_) => serde_json::json!({"plugin": name, "reloaded": true}),
            Err(e) => serde_json::json!({"plugin": name, "reloaded": false, "error": e.to_string()}),
        })
        .collect();
    let ok = results.iter().all(|r| r["reloaded"] == true);
    json(if ok { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY }, &serde_json::json!({"plugins": results}))
}

fn authenticate(state: &AppState, req: &Request<Incoming>) -> Result<crate::tenants::Tenant, ApiError> {
    state.tenant(req.headers().get("authorization").and_then(|v| v.to_str().ok()))
}

/// Re-reads the tenants file; the old table stays if the new one does not parse.
fn reload_tenants(state: &AppState) -> Response<HttpBody> {
    match crate::server::reload_tenants(state) {
        Ok(n) => json(StatusCode::OK, &serde_json::json!({"tenants": n})),
        Err(e) => json(StatusCode::UNPROCESSABLE_ENTITY, &serde_json::json!({"error": e})),
    }
}

fn health(state: &AppState) -> Response<HttpBody> {
    if state.replicas.healthy() {
        text(StatusCode::OK, String::new(), "text/plain")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "engine not running\n".into(), "text/plain")
    }
}

async fn read_json(req: Request<Incoming>) -> Result<Value, ApiError> {
    let bytes = Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(format!("could not read the request body: {e}")))?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

fn reply(r: Reply, guard: InFlight) -> Response<HttpBody> {
    match r {
        Reply::Json(v) => json(StatusCode::OK, &v),
        Reply::Sse(rx) => Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            .body(SseBody { rx, _guard: guard }.boxed())
            .expect("static headers"),
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

fn json(status: StatusCode, v: &Value) -> Response<HttpBody> {
    text(status, v.to_string(), "application/json")
}

fn text(status: StatusCode, body: String, content_type: &'static str) -> Response<HttpBody> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)).boxed())
        .expect("static headers")
}

/// A streamed body fed by the producer task; dropping it (client gone) stops the producer.
struct SseBody {
    rx: UnboundedReceiver<Bytes>,
    _guard: InFlight,
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}
