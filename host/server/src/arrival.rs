//! When the HTTP layer received a request. Latency clocks (TTFT, end to end, queue time)
//! start here rather than when the engine loop picks the request up, so they match what a
//! client measures. A task-local, so the handlers between the router and the engine request
//! need not thread one more argument through.

use std::future::Future;
use std::time::Instant;

tokio::task_local! {
    static ARRIVAL: Instant;
}

/// Runs a request's handler with its arrival time recorded.
pub async fn scope<F: Future>(arrived: Instant, handler: F) -> F::Output {
    ARRIVAL.scope(arrived, handler).await
}

/// The current request's arrival, or now outside a request (tests, internal callers).
pub fn arrived() -> Instant {
    ARRIVAL.try_with(|t| *t).unwrap_or_else(|_| Instant::now())
}
