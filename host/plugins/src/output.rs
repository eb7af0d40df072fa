//! What plugins print, on its way to the log: escaped (a plugin cannot forge log lines or
//! terminal codes), labelled as plugin output, and rate-limited per plugin.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Instant;

/// Bytes of one call's output that reach the log; the rest is counted and dropped.
const MAX_BYTES_PER_CALL: usize = 2048;
/// Lines per second a plugin may log over time (a token bucket of this depth).
const LINES_PER_SEC: f64 = 20.0;

pub struct OutputLog {
    bucket: Mutex<(f64, Instant)>,
    pub dropped_bytes: AtomicU64,
}

impl Default for OutputLog {
    fn default() -> Self {
        Self { bucket: Mutex::new((LINES_PER_SEC, Instant::now())), dropped_bytes: AtomicU64::new(0) }
    }
}

impl OutputLog {
    /// Logs one call's stdout and stderr within the limits.
    pub fn log(&self, plugin: &str, stdout: &str, stderr: &str) {
        let mut budget = MAX_BYTES_PER_CALL;
        for (stream, text) in [("stdout", stdout), ("stderr", stderr)] {
            for line in text.lines().filter(|l| !l.is_empty()) {
                if line.len() > budget || !self.take_line() {
                    self.dropped_bytes.fetch_add(line.len() as u64 + 1, Relaxed);
                    budget = 0;
                    continue;
                }
                budget -= line.len();
                // Debug formatting quotes the text and escapes newlines and control codes.
                tracing::info!(plugin, stream, text = ?line, "plugin output");
            }
        }
    }

    fn take_line(&self) -> bool {
        let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * LINES_PER_SEC).min(LINES_PER_SEC);
        b.1 = now;
        if b.0 >= 1.0 {
            b.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floods_are_cut_to_the_per_call_budget_and_the_rate() {
        let log = OutputLog::default();
        let flood = "x".repeat(100) + "\n";
        log.log("p", &flood.repeat(1000), "");
        let dropped = log.dropped_bytes.load(Relaxed);
        // At most 2 KiB (20 lines of 100 bytes) passed.
        assert!(dropped >= 101 * 1000 - MAX_BYTES_PER_CALL as u64 - 101, "{dropped}");
        // The bucket is now empty: the next call's lines are dropped too.
        log.log("p", "one line\n", "");
        assert!(log.dropped_bytes.load(Relaxed) > dropped);
    }
}
