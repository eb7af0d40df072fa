//! Routing HTTP requests to the endpoints, and the response bodies (JSON, text, SSE).

use crate::api::chat::chat_completions;
use crate::api::completions::completions;
use crate::api::error::ApiError;
use crate::api::{AppState, Reply};
use crate::respond::{authenticate, error_response, health, json, text, Gate, HttpBody};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::Value;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc::UnboundedReceiver;

/// Bodies at least this large are parsed on the blocking pool.
const INLINE_JSON_BYTES: usize = 64 << 10;

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

pub async fn route(state: Arc<AppState>, gate: Arc<Gate>, req: Request<Incoming>) -> Result<Response<HttpBody>, Infallible> {
    // Latency clocks start here, not when the engine loop picks the request up.
    let arrived = std::time::Instant::now();
    let origin = crate::cors::allowed(req.headers(), &state.guard.allowed_origins);
    if req.method() == Method::OPTIONS {
        return Ok(crate::cors::preflight(origin));
    }
    let mut resp = crate::arrival::scope(arrived, dispatch(state, gate, req)).await?;
    crate::cors::decorate(&mut resp, origin);
    Ok(resp)
}

async fn dispatch(state: Arc<AppState>, gate: Arc<Gate>, req: Request<Incoming>) -> Result<Response<HttpBody>, Infallible> {
    if gate.draining.load(SeqCst) {
        let mut resp = error_response(&ApiError::overloaded("the server is shutting down"));
        resp.headers_mut().insert("connection", hyper::header::HeaderValue::from_static("close"));
        return Ok(resp);
    }
    let guard = InFlight::enter(&gate.in_flight);
    let path = req.uri().path().trim_end_matches('/').to_string();
    // HEAD is GET without the body (hyper sends the headers only).
    let method = if req.method() == Method::HEAD { Method::GET } else { req.method().clone() };
    if let Some(resp) = crate::http_extra::route(&state, &gate, &method, &path, req.uri().query(), &req) {
        return Ok(resp);
    }
    let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
    let admin = || admin_only(&state, auth.as_deref());
    let result = match (method.clone(), path.as_str()) {
        (Method::GET, "/health") => Ok(health(&state)),
        (Method::GET, "/metrics") => {
            let mut body = crate::metrics::render(&state.replicas.metrics());
            crate::metrics_vllm::render(&mut body, &state.replicas.metrics(), &crate::http_extra::vllm_info(&state));
            crate::metrics::render_plugins(&mut body, &state.plugins.plugins);
            crate::metrics::render_weights(&mut body, &state.info.device, state.info.weights.as_ref());
            if state.guard.metrics_tenant_labels || state.is_admin(auth.as_deref()) {
                state.tenant_stats.render(&mut body);
            }
            Ok(text(StatusCode::OK, body, "text/plain; version=0.0.4"))
        }
        (Method::POST, "/admin/plugins/reload") => admin().map(|_| reload_plugins(&state)),
        (Method::POST, "/admin/tenants/reload") => admin().map(|_| reload_tenants(&state)),
        (Method::POST, "/reset_prefix_cache") => match admin() {
            Ok(()) => Ok(reset_prefix_cache(&state).await),
            Err(e) => Err(e),
        },
        (Method::GET, "/v1/models") => authenticate(&state, &req).map(|_| json(StatusCode::OK, &state.models())),
        (Method::POST, "/v1/completions") => match authenticate(&state, &req) {
            Ok(tenant) => match read_json(req, &state, &gate).await {
                Ok(body) => completions(state.clone(), tenant, body).await.map(|r| reply(r, guard)),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
        (Method::POST, "/tokenize") => match authenticate(&state, &req) {
            Ok(_) => match read_json(req, &state, &gate).await {
                Ok(body) => crate::api::utility::tokenize(&state, body).await.map(|v| json(StatusCode::OK, &v)),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
        (Method::POST, "/detokenize") => match authenticate(&state, &req) {
            Ok(_) => match read_json(req, &state, &gate).await {
                Ok(body) => crate::api::utility::detokenize(&state, body).map(|v| json(StatusCode::OK, &v)),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
        (Method::POST, "/v1/chat/completions") => match authenticate(&state, &req) {
            Ok(tenant) => match read_json(req, &state, &gate).await {
                Ok(body) => chat_completions(state.clone(), tenant, body).await.map(|r| reply(r, guard)),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
        (_, "/health" | "/metrics" | "/v1/models" | "/v1/completions" | "/v1/chat/completions" | "/admin/plugins/reload" | "/admin/tenants/reload" | "/reset_prefix_cache")
        | (_, "/tokenize" | "/detokenize") => {
            Err(ApiError { status: 405, ..ApiError::not_found(format!("method {method} is not allowed on {path}")) })
        }
        _ => Err(ApiError::not_found(format!("no route for {method} {path}"))),
    };
    Ok(result.unwrap_or_else(|e| error_response(&e)))
}

/// Admin endpoints need the operator key (`--admin-key`); without one they are off.
fn admin_only(state: &AppState, authorization: Option<&str>) -> Result<(), ApiError> {
    let denied = |status: u16, m: &str| ApiError { status, message: m.into(), kind: "authentication_error", param: None, retry_after: None };
    if state.guard.admin_key.is_none() {
        return Err(denied(403, "admin endpoints are off: start the server with --admin-key sha256:<hex> (see `mlahost hash-key`)"));
    }
    if !state.is_admin(authorization) {
        return Err(denied(401, "this endpoint needs the admin key: send `Authorization: Bearer <admin key>`"));
    }
    Ok(())
}

/// Empties every replica's prefix cache of pages no request uses.
async fn reset_prefix_cache(state: &AppState) -> Response<HttpBody> {
    let mut freed = 0;
    for r in &state.replicas.list {
        freed += r.engine.reset_prefix_cache().await.unwrap_or(0);
    }
    tracing::info!(pages = freed, "prefix cache reset");
    json(StatusCode::OK, &serde_json::json!({"freed_pages": freed}))
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
            Err(e) => {
                tracing::error!(plugin = %name, error = %e, "plugin reload failed; keeping the running version");
                serde_json::json!({"plugin": name, "reloaded": false, "error": e.public_message()})
            }
        })
        .collect();
    let ok = results.iter().all(|r| r["reloaded"] == true);
    json(if ok { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY }, &serde_json::json!({"plugins": results}))
}

/// Re-reads the tenants file; the old table stays if the new one does not parse. The reason
/// goes to the log only: it may quote the file.
fn reload_tenants(state: &AppState) -> Response<HttpBody> {
    match crate::api::admin::reload_tenants(state) {
        Ok(n) => json(StatusCode::OK, &serde_json::json!({"tenants": n})),
        Err(e) => {
            tracing::error!(error = %e, "tenants reload failed; keeping the current tenants");
            let message = "the tenants file is invalid; the current tenants stay (the reason is in the server log)";
            json(StatusCode::UNPROCESSABLE_ENTITY, &serde_json::json!({"error": message}))
        }
    }
}

/// Reads a JSON body within the size limit and the body timeout; large bodies are parsed on
/// the blocking pool.
async fn read_json(req: Request<Incoming>, state: &AppState, gate: &Gate) -> Result<Value, ApiError> {
    let max = state.limits.max_body_bytes;
    let too_big = || crate::limits::over("body", "the request body", max, "--max-request-body-bytes");
    let declared = req.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_big());
    }
    let collect = Limited::new(req.into_body(), max).collect();
    let bytes = match tokio::time::timeout(gate.body_timeout, collect).await {
        Err(_) => return Err(ApiError { status: 408, ..ApiError::bad_request("the request body did not arrive in time (--body-timeout)") }),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => return Err(too_big()),
        Ok(Err(e)) => return Err(ApiError::bad_request(format!("could not read the request body: {e}"))),
        Ok(Ok(b)) => b.to_bytes(),
    };
    let len = bytes.len();
    let parse = move || serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")));
    if len < INLINE_JSON_BYTES {
        return parse();
    }
    tokio::task::spawn_blocking(parse).await.map_err(|_| ApiError::internal("parsing the request body failed"))?
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
