//! The quota arithmetic, in plain Rust (tested natively). Time is the host's `now_ms`.

use std::collections::{BTreeMap, VecDeque};

use mlahost_sdk::{RequestInfo, Usage, Verdict};

use crate::config::Config;

/// The length of the sliding window.
const WINDOW_MS: u64 = 60_000;

/// One tenant's windows and in-flight count.
#[derive(Debug, Default)]
struct Tenant {
    /// Admission times within the window, oldest first (kept only with a request limit).
    requests: VecDeque<u64>,
    /// `(time, request id, tokens)` charged within the window, in time order (kept only with a
    /// token limit). The request id finds a reservation to replace at completion.
    tokens: VecDeque<(u64, u64, u64)>,
    /// Requests admitted and not completed.
    in_flight: u32,
}

impl Tenant {
    /// Drops what left the window `(now - 60 s, now]`.
    fn prune(&mut self, now: u64) {
        let live = |t: u64| t.saturating_add(WINDOW_MS) > now;
        while self.requests.front().is_some_and(|&t| !live(t)) {
            self.requests.pop_front();
        }
        while self.tokens.front().is_some_and(|&(t, _, _)| !live(t)) {
            self.tokens.pop_front();
        }
    }

    fn tokens_used(&self) -> u64 {
        self.tokens.iter().map(|&(_, _, n)| n).sum()
    }
}

/// Per-tenant state and the config. `admit` and `completed` are the plugin's two hooks.
/// (`BTreeMap`s, not `HashMap`s: no random seed to ask the host for.)
#[derive(Debug)]
pub struct Quotas {
    config: Config,
    tenants: BTreeMap<String, Tenant>,
    /// Admitted requests not yet completed: id -> tenant.
    in_flight: BTreeMap<u64, String>,
}

/// Whole seconds (at least 1) until time `at_ms`, seen at `now`.
fn secs_until(at_ms: u64, now: u64) -> u32 {
    let ms = at_ms.saturating_sub(now);
    (ms.div_ceil(1000)).clamp(1, u64::from(u32::MAX)) as u32
}

impl Quotas {
    /// Quotas with no history.
    pub fn new(config: Config) -> Quotas {
        Quotas {
            config,
            tenants: BTreeMap::new(),
            in_flight: BTreeMap::new(),
        }
    }

    /// Admits `r` at its tenant's priority class, charging a request, `prompt + max_tokens`
    /// tokens and one concurrent slot; or rejects it (429) naming the first limit it exceeds.
    pub fn admit(&mut self, r: &RequestInfo) -> Verdict {
        let limits = self.config.limits(&r.tenant).clone();
        let now = r.now_ms;
        let tenant = self.tenants.entry(r.tenant.clone()).or_default();
        tenant.prune(now);
        let name = &r.tenant;

        if let Some(max) = limits.max_concurrent {
            if tenant.in_flight >= max {
                return Verdict::too_many_requests(
                    format!("tenant `{name}` is over its max_concurrent limit ({max} requests in flight)"),
                    1,
                );
            }
        }
        if let Some(max) = limits.requests_per_min {
            let count = tenant.requests.len();
            if count >= max as usize {
                // The oldest `count - max + 1` admissions must leave the window.
                let frees_at = match max {
                    0 => now + WINDOW_MS,
                    _ => tenant.requests[count - max as usize] + WINDOW_MS,
                };
                let retry = secs_until(frees_at, now);
                return Verdict::too_many_requests(
                    format!("tenant `{name}` is over its requests_per_min limit ({max} requests per minute); retry in {retry} s"),
                    retry,
                );
            }
        }
        let need = u64::from(r.prompt_tokens) + u64::from(r.max_tokens);
        if let Some(max) = limits.tokens_per_min {
            if need > max {
                return Verdict::Reject(mlahost_sdk::Rejection {
                    status: 429,
                    message: format!(
                        "tenant `{name}`: this request needs {need} tokens (prompt + max_tokens), more than its whole tokens_per_min limit ({max} tokens per minute); lower max_tokens"
                    ),
                    retry_after_secs: None,
                });
            }
            let used = tenant.tokens_used();
            if used + need > max {
                // Drop the oldest charges until the request fits.
                let mut freed = 0;
                let mut frees_at = now + WINDOW_MS;
                for &(t, _, n) in &tenant.tokens {
                    freed += n;
                    if used - freed + need <= max {
                        frees_at = t + WINDOW_MS;
                        break;
                    }
                }
                let retry = secs_until(frees_at, now);
                return Verdict::too_many_requests(
                    format!("tenant `{name}` is over its tokens_per_min limit ({max} tokens per minute: {used} used, {need} requested); retry in {retry} s"),
                    retry,
                );
            }
        }

        if limits.requests_per_min.is_some() {
            tenant.requests.push_back(now);
        }
        if limits.tokens_per_min.is_some() {
            tenant.tokens.push_back((now, r.request_id, need));
        }
        tenant.in_flight += 1;
        self.in_flight.insert(r.request_id, r.tenant.clone());
        Verdict::Admit(limits.priority.unwrap_or(r.priority))
    }

    /// `u` finished: frees its concurrent slot and replaces its token reservation by what it
    /// used (`prompt + completion`, charged now). A request this instance never admitted (its
    /// state was lost to a restart) is still charged its tokens.
    pub fn completed(&mut self, u: &Usage) {
        let now = u.now_ms;
        let admitted = self.in_flight.remove(&u.request_id).is_some();
        let charges_tokens = self.config.limits(&u.tenant).tokens_per_min.is_some();
        let tenant = self.tenants.entry(u.tenant.clone()).or_default();
        if admitted {
            tenant.in_flight = tenant.in_flight.saturating_sub(1);
            tenant.tokens.retain(|&(_, id, _)| id != u.request_id);
        }
        tenant.prune(now);
        if charges_tokens {
            let used = u64::from(u.prompt_tokens) + u64::from(u.completion_tokens);
            // Keep time order: `now` is the newest time the plugin has seen for this tenant.
            let at = tenant.tokens.back().map_or(now, |&(t, _, _)| t.max(now));
            tenant.tokens.push_back((at, u.request_id, used));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlahost_sdk::Rejection;

    fn quotas(json: &str) -> Quotas {
        Quotas::new(Config::parse(json).unwrap())
    }

    fn req(id: u64, tenant: &str, prompt: u32, max: u32, now_ms: u64) -> RequestInfo {
        RequestInfo {
            request_id: id,
            tenant: tenant.into(),
            priority: 0,
            prompt_tokens: prompt,
            max_tokens: max,
            now_ms,
            ..Default::default()
        }
    }

    fn done(id: u64, tenant: &str, prompt: u32, completion: u32, now_ms: u64) -> Usage {
        Usage {
            request_id: id,
            tenant: tenant.into(),
            prompt_tokens: prompt,
            completion_tokens: completion,
            finish_reason: "stop".into(),
            now_ms,
        }
    }

    fn rejection(v: Verdict) -> Rejection {
        match v {
            Verdict::Reject(r) => r,
            Verdict::Admit(p) => panic!("admitted at {p}"),
        }
    }

    #[test]
    fn no_config_admits_everything() {
        let mut q = quotas("");
        for i in 0..1000 {
            assert_eq!(q.admit(&req(i, "t", 1000, 1000, 0)), Verdict::Admit(0));
        }
    }

    #[test]
    fn requests_per_min_slides() {
        let mut q = quotas(r#"{"tenants": {"a": {"requests_per_min": 2}}}"#);
        assert!(matches!(q.admit(&req(1, "a", 1, 1, 0)), Verdict::Admit(_)));
        assert!(matches!(
            q.admit(&req(2, "a", 1, 1, 10_000)),
            Verdict::Admit(_)
        ));
        let r = rejection(q.admit(&req(3, "a", 1, 1, 30_000)));
        assert_eq!((r.status, r.retry_after_secs), (429, Some(30)));
        assert!(r.message.contains("requests_per_min"), "{}", r.message);
        // Another tenant (default: unlimited) is unaffected.
        assert!(matches!(
            q.admit(&req(4, "b", 1, 1, 30_000)),
            Verdict::Admit(_)
        ));
        // At 60 s the first admission leaves the window.
        assert!(matches!(
            q.admit(&req(5, "a", 1, 1, 60_000)),
            Verdict::Admit(_)
        ));
        let r = rejection(q.admit(&req(6, "a", 1, 1, 60_500)));
        assert_eq!(r.retry_after_secs, Some(10));
    }

    #[test]
    fn tokens_reserved_then_replaced_by_usage() {
        let mut q = quotas(r#"{"default": {"tokens_per_min": 1000}}"#);
        // Reserves 100 + 800.
        assert!(matches!(
            q.admit(&req(1, "a", 100, 800, 0)),
            Verdict::Admit(_)
        ));
        let r = rejection(q.admit(&req(2, "a", 100, 100, 1_000)));
        assert!(
            r.message.contains("tokens_per_min") && r.message.contains("900 used"),
            "{}",
            r.message
        );
        assert_eq!(r.retry_after_secs, Some(59));
        // It used 100 + 50: the reservation shrinks to 150, charged at completion time.
        q.completed(&done(1, "a", 100, 50, 2_000));
        assert!(matches!(
            q.admit(&req(3, "a", 100, 750, 3_000)),
            Verdict::Admit(_)
        ));
        let r = rejection(q.admit(&req(4, "a", 1, 1, 4_000)));
        // 150 charged at 2 s must leave (62 s) for 2 more tokens to fit: 58 s from 4 s.
        assert_eq!(r.retry_after_secs, Some(58));
    }

    #[test]
    fn a_request_larger_than_the_budget_says_so() {
        let mut q = quotas(r#"{"default": {"tokens_per_min": 100}}"#);
        let r = rejection(q.admit(&req(1, "a", 50, 51, 0)));
        assert_eq!((r.status, r.retry_after_secs), (429, None));
        assert!(r.message.contains("lower max_tokens"), "{}", r.message);
    }

    #[test]
    fn concurrency_frees_at_completion() {
        let mut q = quotas(r#"{"tenants": {"a": {"max_concurrent": 1}}}"#);
        assert!(matches!(q.admit(&req(1, "a", 1, 1, 0)), Verdict::Admit(_)));
        let r = rejection(q.admit(&req(2, "a", 1, 1, 0)));
        assert_eq!((r.status, r.retry_after_secs), (429, Some(1)));
        assert!(r.message.contains("max_concurrent"));
        q.completed(&done(1, "a", 1, 1, 5));
        assert!(matches!(q.admit(&req(3, "a", 1, 1, 6)), Verdict::Admit(_)));
    }

    #[test]
    fn rejected_requests_charge_nothing() {
        let mut q = quotas(r#"{"default": {"requests_per_min": 1, "max_concurrent": 5}}"#);
        assert!(matches!(q.admit(&req(1, "a", 1, 1, 0)), Verdict::Admit(_)));
        for i in 2..10 {
            rejection(q.admit(&req(i, "a", 1, 1, 1_000)));
        }
        assert!(matches!(
            q.admit(&req(10, "a", 1, 1, 60_000)),
            Verdict::Admit(_)
        ));
    }

    #[test]
    fn priority_class_and_default() {
        let mut q =
            quotas(r#"{"tenants": {"gold": {"priority": 10}}, "default": {"priority": -1}}"#);
        assert_eq!(q.admit(&req(1, "gold", 1, 1, 0)), Verdict::Admit(10));
        assert_eq!(q.admit(&req(2, "anyone", 1, 1, 0)), Verdict::Admit(-1));
        let mut q = quotas(r#"{"tenants": {}}"#);
        let mut r = req(3, "x", 1, 1, 0);
        r.priority = 7;
        assert_eq!(q.admit(&r), Verdict::Admit(7));
    }

    #[test]
    fn unknown_completion_is_charged_without_underflow() {
        let mut q = quotas(r#"{"default": {"tokens_per_min": 100, "max_concurrent": 1}}"#);
        q.completed(&done(99, "a", 60, 30, 0));
        let r = rejection(q.admit(&req(1, "a", 5, 6, 1)));
        assert!(r.message.contains("90 used"), "{}", r.message);
        assert!(matches!(q.admit(&req(2, "a", 5, 5, 2)), Verdict::Admit(_)));
    }

    #[test]
    fn bad_config_is_refused() {
        assert!(
            Config::parse(r#"{"tenants": {"a": {"request_per_min": 1}}}"#)
                .unwrap_err()
                .contains("unknown field")
        );
        assert!(Config::parse(r#"{"default": {"max_concurrent": -1}}"#).is_err());
    }
}
