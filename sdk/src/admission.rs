//! Admission plugins: quotas, rate limits and priority classes.
//!
//! The host calls [`Admission::admit`] once per request on arrival ([`RequestInfo`]) and obeys
//! the [`Verdict`]: admit at a priority, or reject with a status (429 over quota, 403 not
//! allowed), a message and a retry-after. When an admitted request finishes, the host calls
//! [`Admission::completed`] with its [`Usage`], so a quota can be charged. Plugins have no clock:
//! use the `now_ms` the host passes. Export the implementation with
//! [`export_admission!`](crate::export_admission).

use crate::state::{self, StateKey};

/// An admission policy. One value lives in each plugin instance, made by [`init`](Self::init)
/// and used by every later call.
///
/// ```
/// use mlahost_sdk::{Admission, RequestInfo, Verdict};
///
/// /// Refuses prompts over a length given in the config (e.g. `"4096"`).
/// struct MaxPrompt(u32);
///
/// impl Admission for MaxPrompt {
///     fn init(config: &str) -> Result<Self, String> {
///         config.trim().parse().map(MaxPrompt).map_err(|e| format!("max prompt: {e}"))
///     }
///
///     fn admit(&mut self, request: &RequestInfo) -> Verdict {
///         if request.prompt_tokens > self.0 {
///             Verdict::forbidden(format!("prompts are limited to {} tokens", self.0))
///         } else {
///             Verdict::Admit(request.priority)
///         }
///     }
/// }
///
/// mlahost_sdk::export_admission!(MaxPrompt);
/// ```
pub trait Admission: Sized + 'static {
    /// Makes the plugin from the text given after the plugin path on the command line
    /// (`--plugin path.wasm:CONFIG`, `""` when none). Called once per instance, before any
    /// hook. An `Err` refuses the plugin at start-up (or keeps the previous version on hot
    /// reload) with that message.
    fn init(config: &str) -> Result<Self, String>;

    /// Admits `request` (at a priority, which the host clamps to the tenant's maximum class) or
    /// rejects it.
    fn admit(&mut self, request: &RequestInfo) -> Verdict;

    /// An admitted request finished with this usage (the same the client got). Does nothing
    /// unless overridden.
    fn completed(&mut self, usage: &Usage) {
        let _ = usage;
    }
}

/// A request on arrival.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestInfo {
    /// Unique per request; the same id comes back in [`Usage::request_id`].
    pub request_id: u64,
    /// The tenant (`"default"` without a tenants file).
    pub tenant: String,
    /// Which API key (an id, never the key), when keys are configured.
    pub key_id: Option<String>,
    /// The request's priority.
    pub priority: i32,
    /// Prompt length in tokens.
    pub prompt_tokens: u32,
    /// The request's `max_tokens`.
    pub max_tokens: u32,
    /// The requested model.
    pub model: String,
    /// Milliseconds on the host's monotonic clock.
    pub now_ms: u64,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rejection {
    /// 429 (over quota) or 403 (not allowed).
    pub status: u16,
    /// Shown to the client in the error body.
    pub message: String,
    /// Seconds after which a retry may succeed (the `Retry-After` header).
    pub retry_after_secs: Option<u32>,
}

/// The answer to [`Admission::admit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Admit at this priority (clamped by the host to the tenant's maximum class).
    Admit(i32),
    /// Refuse.
    Reject(Rejection),
}

impl Verdict {
    /// A 429 rejection (over quota) with a retry-after.
    pub fn too_many_requests(message: impl Into<String>, retry_after_secs: u32) -> Verdict {
        Verdict::Reject(Rejection {
            status: 429,
            message: message.into(),
            retry_after_secs: Some(retry_after_secs),
        })
    }

    /// A 403 rejection (not allowed), without retry-after.
    pub fn forbidden(message: impl Into<String>) -> Verdict {
        Verdict::Reject(Rejection {
            status: 403,
            message: message.into(),
            retry_after_secs: None,
        })
    }
}

/// What an admitted request finally used.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Usage {
    /// The [`RequestInfo::request_id`] it was admitted with.
    pub request_id: u64,
    /// The tenant.
    pub tenant: String,
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Generated tokens.
    pub completion_tokens: u32,
    /// `"stop"`, `"length"` or `"abort"`.
    pub finish_reason: String,
    /// Milliseconds on the host's monotonic clock.
    pub now_ms: u64,
}

pub(crate) mod glue {
    use super::*;
    use crate::bindings::admission::exports::mlahost::plugin::admission as wit;

    /// Implemented by the type that [`export_admission!`](crate::export_admission) declares.
    pub trait AdmissionExport: 'static {
        /// The plugin's type.
        type Plugin: Admission;
        /// The thread-local cell holding the plugin's value.
        fn state() -> StateKey<Self::Plugin>;
    }

    impl<E: AdmissionExport> wit::Guest for E {
        fn init(config: String) -> Result<(), String> {
            state::init(E::state(), || E::Plugin::init(&config))
        }

        fn admit(r: wit::RequestInfo) -> wit::Verdict {
            let request = RequestInfo {
                request_id: r.request_id,
                tenant: r.tenant,
                key_id: r.key_id,
                priority: r.priority,
                prompt_tokens: r.prompt_tokens,
                max_tokens: r.max_tokens,
                model: r.model,
                now_ms: r.now_ms,
            };
            // Before a successful `init`: admit at the request's own priority.
            let verdict = state::with(E::state(), |plugin| plugin.admit(&request))
                .unwrap_or(Verdict::Admit(request.priority));
            match verdict {
                Verdict::Admit(p) => wit::Verdict::Admit(p),
                Verdict::Reject(j) => wit::Verdict::Reject(wit::Rejection {
                    status: j.status,
                    message: j.message,
                    retry_after_secs: j.retry_after_secs,
                }),
            }
        }

        fn completed(u: wit::Usage) {
            let usage = Usage {
                request_id: u.request_id,
                tenant: u.tenant,
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
                finish_reason: u.finish_reason,
                now_ms: u.now_ms,
            };
            // Before a successful `init`: nothing to charge.
            let _ = state::with(E::state(), |plugin| plugin.completed(&usage));
        }
    }
}

/// Exports an [`Admission`] implementation as this component's `admission-plugin` world. Use it
/// once, in the plugin crate (a `cdylib` built for `wasm32-wasip2`); see [`Admission`] for an
/// example.
///
/// The plugin's value lives in the component instance from a successful `init` on; before
/// that, `admit` admits at the request's own priority and `completed` does nothing.
#[macro_export]
macro_rules! export_admission {
    ($plugin:ty) => {
        const _: () = {
            ::std::thread_local! {
                static MLAHOST_PLUGIN_STATE: $crate::__private::State<$plugin> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            struct MlahostAdmissionExport;

            impl $crate::__private::AdmissionExport for MlahostAdmissionExport {
                type Plugin = $plugin;
                fn state() -> $crate::__private::StateKey<$plugin> {
                    &MLAHOST_PLUGIN_STATE
                }
            }

            $crate::__private::admission_bindings::__mlahost_export_admission_world!(
                MlahostAdmissionExport with_types_in $crate::__private::admission_bindings
            );
        };
    };
}
