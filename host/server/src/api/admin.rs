//! The tenants file at run time: reloaded on request (admin) or when it changes on disk.

use super::AppState;
use crate::tenants::Tenants;
use std::sync::Arc;
use std::time::Duration;

/// Re-reads the tenants file; the current table stays when the new one is invalid.
pub fn reload_tenants(state: &AppState) -> Result<usize, String> {
    let path = match state.tenants.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
        Some(t) => t.path.clone(),
        None => return Err("the server runs without --tenants".into()),
    };
    let fresh = Tenants::load(&path)?;
    let n = fresh.ids().len();
    *state.tenants.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(fresh));
    tracing::info!(tenants = n, "tenants reloaded");
    Ok(n)
}

/// Reloads the tenants file when it changes (checked every second).
pub fn watch_tenants_file(state: &Arc<AppState>) {
    let weak = Arc::downgrade(state);
    let stamp = |s: &AppState| {
        let path = s.tenants.read().unwrap_or_else(|p| p.into_inner()).as_ref().map(|t| t.path.clone());
        path.and_then(|p| std::fs::metadata(p).ok()).map(|m| (m.modified().ok(), m.len()))
    };
    let mut last = stamp(state);
    let _ = std::thread::Builder::new().name("tenants-watch".into()).spawn(move || loop {
        std::thread::sleep(Duration::from_secs(1));
        let Some(state) = weak.upgrade() else { return };
        let now = stamp(&state);
        if now != last {
            last = now;
            if let Err(e) = reload_tenants(&state) {
                tracing::error!(error = %e, "tenants file reload failed; keeping the current tenants");
            }
        }
    });
}
