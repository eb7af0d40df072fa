//! Cross-origin requests (`--allowed-origins`, off by default): a browser page served from
//! another origin may call the API only when its origin is listed (or the list is `*`).

use crate::respond::HttpBody;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};

const METHODS: &str = "GET, HEAD, POST, OPTIONS";
const HEADERS: &str = "authorization, content-type, x-requested-with";

/// The `Access-Control-Allow-Origin` value for this request, if its origin may call us.
pub fn allowed(headers: &HeaderMap, allowed_origins: &[String]) -> Option<HeaderValue> {
    let origin = headers.get("origin")?.to_str().ok()?;
    if allowed_origins.iter().any(|o| o == "*") {
        return Some(HeaderValue::from_static("*"));
    }
    allowed_origins.iter().any(|o| o.trim_end_matches('/') == origin).then(|| HeaderValue::from_str(origin).ok()).flatten()
}

/// Adds the CORS headers to a response for an allowed origin.
pub fn decorate(resp: &mut Response<HttpBody>, origin: Option<HeaderValue>) {
    let Some(origin) = origin else { return };
    let specific = origin != "*";
    let h = resp.headers_mut();
    h.insert("access-control-allow-origin", origin);
    if specific {
        // The answer depends on the Origin header: caches must key on it.
        h.append("vary", HeaderValue::from_static("origin"));
    }
}

/// The answer to an `OPTIONS` request: 204 with `Allow`, plus the preflight headers when the
/// origin is allowed (without them the browser refuses the cross-origin call).
pub fn preflight(origin: Option<HeaderValue>) -> Response<HttpBody> {
    let mut resp = Response::builder()
        .status(StatusCode::NO_CONTENT)
        .header("allow", METHODS)
        .body(Full::new(Bytes::new()).boxed())
        .expect("static headers");
    if origin.is_some() {
        let h = resp.headers_mut();
        h.insert("access-control-allow-methods", HeaderValue::from_static(METHODS));
        h.insert("access-control-allow-headers", HeaderValue::from_static(HEADERS));
        h.insert("access-control-max-age", HeaderValue::from_static("600"));
    }
    decorate(&mut resp, origin);
    resp
}
