//! The web console at `GET /`: a chat playground, a live dashboard (read from /metrics), the
//! `plan` figures of the loaded model and the loaded plugins. Plain HTML/JS/CSS compiled into
//! the binary, so it works offline and needs no CDN.

pub mod plan;

use crate::api::AppState;
use serde_json::{json, Value};

pub const INDEX_HTML: &str = include_str!("index.html");
pub const APP_JS: &str = include_str!("app.js");
pub const DASHBOARD_JS: &str = include_str!("dashboard.js");
pub const STYLE_CSS: &str = include_str!("style.css");


/// The static asset for a console path, with its content type.
pub fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "" | "/" | "/console" => Some((INDEX_HTML, "text/html; charset=utf-8")),
        "/console/app.js" => Some((APP_JS, "text/javascript; charset=utf-8")),
        "/console/dashboard.js" => Some((DASHBOARD_JS, "text/javascript; charset=utf-8")),
        "/console/style.css" => Some((STYLE_CSS, "text/css; charset=utf-8")),
        _ => None,
    }
}

/// `GET /console/plugins`: each loaded plugin's name, kind, file and counters.
pub fn plugins(state: &AppState) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let list: Vec<Value> = state
        .plugins
        .plugins
        .iter()
        .map(|p| {
            let s = &p.stats;
            json!({
                "name": p.spec.name, "kind": p.kind.as_str(),
                "calls": s.calls.load(Relaxed), "traps": s.traps.load(Relaxed), "timeouts": s.timeouts.load(Relaxed),
                "fallbacks": s.fallbacks.load(Relaxed), "reloads": s.reloads.load(Relaxed),
            })
        })
        .collect();
    json!({"plugins": list, "admin_enabled": state.guard.admin_key.is_some()})
}
