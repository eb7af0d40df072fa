//! Bounds on the work one request or one connection may cause, each checked before the work
//! it bounds, each a `serve` flag. A request over a limit gets a 4xx naming the flag.

use crate::api::error::ApiError;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestLimits {
    /// `--max-request-body-bytes`: larger bodies get 413 before they are read.
    pub max_body_bytes: usize,
    /// `--max-prompts-per-request`: prompts in one completions request.
    pub max_prompts: usize,
    /// `--max-n`: choices per prompt.
    pub max_n: usize,
    /// `--max-choices-per-request`: prompts x n, the engine requests one HTTP request makes.
    pub max_choices: usize,
    /// `--max-stop-strings` and `--max-stop-string-bytes`.
    pub max_stop_strings: usize,
    pub max_stop_bytes: usize,
    /// `--max-tenant-requests`: engine requests one tenant may have in flight (a tenants
    /// file's `max_concurrent_requests` may lower it per tenant).
    pub max_tenant_requests: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 << 20,
            max_prompts: 256,
            max_n: 16,
            max_choices: 256,
            max_stop_strings: 16,
            max_stop_bytes: 256,
            max_tenant_requests: 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HttpLimits {
    /// `--max-connections`: open connections; more get 503 and are closed.
    pub max_connections: usize,
    /// `--keep-alive-timeout`: how long a connection may wait for the next request's headers
    /// (idle between requests, or sending them slowly) before it is closed.
    pub header_timeout: Duration,
    /// `--body-timeout`: how long a request body may take to arrive (408 after).
    pub body_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self { max_connections: 512, header_timeout: Duration::from_secs(15), body_timeout: Duration::from_secs(30) }
    }
}

/// A 413 or 400 that names the limit a request broke and the flag that sets it.
pub fn over(param: &str, what: &str, limit: usize, flag: &str) -> ApiError {
    let mut e = ApiError::invalid(param, format!("{what} is over the server's limit of {limit} ({flag})"));
    if flag == "--max-request-body-bytes" {
        e.status = 413;
        e.param = None;
    }
    e
}

impl RequestLimits {
    pub fn check_n(&self, n: usize) -> Result<(), ApiError> {
        if n > self.max_n {
            return Err(over("n", "`n`", self.max_n, "--max-n"));
        }
        Ok(())
    }

    pub fn check_prompts(&self, prompts: usize, n: usize) -> Result<(), ApiError> {
        if prompts > self.max_prompts {
            return Err(over("prompt", "the number of prompts", self.max_prompts, "--max-prompts-per-request"));
        }
        if prompts.saturating_mul(n) > self.max_choices {
            return Err(over("n", "prompts x n", self.max_choices, "--max-choices-per-request"));
        }
        Ok(())
    }

    pub fn check_stops(&self, stop: &[String]) -> Result<(), ApiError> {
        if stop.len() > self.max_stop_strings {
            return Err(over("stop", "the number of stop strings", self.max_stop_strings, "--max-stop-strings"));
        }
        if stop.iter().any(|s| s.len() > self.max_stop_bytes) {
            return Err(over("stop", "a stop string's length in bytes", self.max_stop_bytes, "--max-stop-string-bytes"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_limit_names_its_flag() {
        let l = RequestLimits::default();
        assert!(l.check_n(16).is_ok());
        assert!(l.check_n(17).unwrap_err().message.contains("--max-n"));
        assert!(l.check_prompts(256, 1).is_ok());
        assert!(l.check_prompts(257, 1).unwrap_err().message.contains("--max-prompts-per-request"));
        assert!(l.check_prompts(100, 3).unwrap_err().message.contains("--max-choices-per-request"));
        assert!(l.check_stops(&vec!["x".to_string(); 17]).unwrap_err().message.contains("--max-stop-strings"));
        assert!(l.check_stops(&["y".repeat(257)]).unwrap_err().message.contains("--max-stop-string-bytes"));
        let e = over("x", "the body", 5, "--max-request-body-bytes");
        assert_eq!((e.status, e.param), (413, None));
    }
}
