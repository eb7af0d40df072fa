//! Routes beside the OpenAI API that need no request body: the utility endpoints, the OpenAPI
//! document and the web console. Kept apart from `http.rs` so the core routing stays short.

use crate::api::error::ApiError;
use crate::api::{utility, AppState};
use crate::respond::{authenticate, error_response, health, json, text, Gate, HttpBody};
use crate::metrics_vllm::VllmInfo;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use std::sync::atomic::Ordering::SeqCst;

pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// The response for a route handled here, or None to fall through to `http.rs`.
pub fn route(state: &AppState, gate: &Gate, method: &Method, path: &str, query: Option<&str>, req: &Request<Incoming>) -> Option<Response<HttpBody>> {
    let ok = |v: serde_json::Value| json(StatusCode::OK, &v);
    let authed = |f: &dyn Fn() -> Result<serde_json::Value, ApiError>| {
        let r = authenticate(state, req).and_then(|_| f());
        r.map(ok).unwrap_or_else(|e| error_response(&e))
    };
    let resp = match (method, path) {
        (&Method::GET, p) if crate::console::asset(p).is_some() => {
            let (body, kind) = crate::console::asset(p)?;
            let mut r = text(StatusCode::OK, body.to_string(), kind);
            r.headers_mut().insert("cache-control", hyper::header::HeaderValue::from_static("no-cache"));
            r
        }
        (&Method::GET, "/openapi.json") => text(StatusCode::OK, OPENAPI_JSON.to_string(), "application/json"),
        (&Method::GET, "/version") => ok(utility::version()),
        (&Method::GET | &Method::POST, "/ping") => health(state),
        (&Method::GET, "/load") => ok(utility::load(gate.in_flight.load(SeqCst))),
        (&Method::GET, "/tokenizer_info") => authed(&|| Ok(utility::tokenizer_info(state))),
        (&Method::GET, p) if p.starts_with("/v1/models/") => {
            let id = percent_decode(&p["/v1/models/".len()..]);
            authed(&|| utility::model(state, &id))
        }
        (&Method::GET, "/console/plan") => authed(&|| crate::console::plan::plan(state, query)),
        (&Method::GET, "/console/plugins") => authed(&|| Ok(crate::console::plugins(state))),
        (_, "/openapi.json" | "/version" | "/load" | "/tokenizer_info" | "/console/plan" | "/console/plugins" | "/ping") => {
            error_response(&ApiError { status: 405, ..ApiError::not_found(format!("method {method} is not allowed on {path}")) })
        }
        _ => return None,
    };
    Some(resp)
}

/// The pod facts the vLLM info gauges carry.
pub fn vllm_info(state: &AppState) -> VllmInfo {
    VllmInfo {
        block_size: state.info.page_size,
        cache_dtype: state.info.kv_cache_dtype.map_or("auto", |d| d.as_str()).to_string(),
        prefix_caching: state.info.prefix_caching,
        started_unix: state.created as f64,
    }
}

/// `%XX` sequences to bytes (model ids such as `org%2Fname`); invalid ones stay as they are.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn percent_decode() {
        assert_eq!(super::percent_decode("a%2Fb"), "a/b");
        assert_eq!(super::percent_decode("a%2"), "a%2");
        assert_eq!(super::percent_decode("%zz%41"), "%zzA");
        assert_eq!(super::percent_decode("%"), "%");
    }
}
