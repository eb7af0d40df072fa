//! Router plugins: choose the engine replica for each request.
//!
//! The host calls [`Router::route`] once per request with a [`RequestSummary`] and the state of
//! every replica ([`ReplicaState`], read without a round trip to the engines), and sends the
//! request where the answer says ([`Route`]). Export the implementation with
//! [`export_router!`](crate::export_router).

use crate::state::{self, StateKey, NOT_INITIALISED};

/// A router plugin. One value lives in each plugin instance, made by [`init`](Self::init) and
/// used by every later call.
///
/// ```
/// use mlahost_sdk::{ReplicaState, RequestSummary, Route, Router};
///
/// /// Sends every request to the replica with the fewest waiting requests.
/// struct FewestWaiting;
///
/// impl Router for FewestWaiting {
///     fn init(_config: &str) -> Result<Self, String> {
///         Ok(FewestWaiting)
///     }
///
///     fn route(&mut self, _request: &RequestSummary, replicas: &[ReplicaState]) -> Route {
///         match (0..replicas.len()).min_by_key(|&i| replicas[i].waiting) {
///             Some(i) => Route::Replica(i as u32),
///             None => Route::Reject("no replica".into()),
///         }
///     }
/// }
///
/// mlahost_sdk::export_router!(FewestWaiting);
/// ```
pub trait Router: Sized + 'static {
    /// Makes the plugin from the text given after the plugin path on the command line
    /// (`--plugin path.wasm:CONFIG`, `""` when none). Called once per instance, before any
    /// [`route`](Self::route). An `Err` refuses the plugin at start-up (or keeps the previous
    /// version on hot reload) with that message.
    fn init(config: &str) -> Result<Self, String>;

    /// Chooses the replica for `request`: an index into `replicas`, or a rejection (HTTP 503
    /// with its message).
    fn route(&mut self, request: &RequestSummary, replicas: &[ReplicaState]) -> Route;
}

/// The request, as far as routing needs it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestSummary {
    /// The tenant, once tenants are configured (`None` until then).
    pub tenant: Option<String>,
    /// Prompt length in tokens.
    pub prompt_tokens: u32,
    /// The request's priority.
    pub priority: i32,
    /// The requested model.
    pub model: String,
}

/// One replica's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplicaState {
    /// Requests queued (including ones routed but not yet admitted).
    pub waiting: u32,
    /// Requests running.
    pub running: u32,
    /// Free KV-cache pages.
    pub free_pages: u32,
    /// Leading tokens of this prompt the replica already holds in its prefix cache.
    pub cached_prefix_tokens: u32,
}

impl ReplicaState {
    /// `waiting + running`.
    pub fn load(&self) -> u32 {
        self.waiting.saturating_add(self.running)
    }
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Index into the replica list.
    Replica(u32),
    /// Refuse the request (HTTP 503 with this message).
    Reject(String),
}

pub(crate) mod glue {
    use super::*;
    use crate::bindings::router::exports::mlahost::plugin::router as wit;

    /// Implemented by the type that [`export_router!`](crate::export_router) declares.
    pub trait RouterExport: 'static {
        /// The plugin's type.
        type Plugin: Router;
        /// The thread-local cell holding the plugin's value.
        fn state() -> StateKey<Self::Plugin>;
    }

    impl<E: RouterExport> wit::Guest for E {
        fn init(config: String) -> Result<(), String> {
            state::init(E::state(), || E::Plugin::init(&config))
        }

        fn route(
            request: wit::RequestSummary,
            replicas: Vec<wit::ReplicaState>,
        ) -> wit::RouteDecision {
            let request = RequestSummary {
                tenant: request.tenant,
                prompt_tokens: request.prompt_tokens,
                priority: request.priority,
                model: request.model,
            };
            let replicas: Vec<ReplicaState> = replicas
                .into_iter()
                .map(|r| ReplicaState {
                    waiting: r.waiting,
                    running: r.running,
                    free_pages: r.free_pages,
                    cached_prefix_tokens: r.cached_prefix_tokens,
                })
                .collect();
            let route = state::with(E::state(), |plugin| plugin.route(&request, &replicas))
                .unwrap_or_else(|| not_initialised(&replicas));
            match route {
                Route::Replica(i) => wit::RouteDecision::Replica(i),
                Route::Reject(message) => wit::RouteDecision::Reject(message),
            }
        }
    }

    /// Before a successful `init`: the least-loaded replica (lowest index on ties), as a router
    /// without plugin would do; a rejection when there is none.
    fn not_initialised(replicas: &[ReplicaState]) -> Route {
        match (0..replicas.len()).min_by_key(|&i| (replicas[i].load(), i)) {
            Some(i) => Route::Replica(i as u32),
            None => Route::Reject(NOT_INITIALISED.to_string()),
        }
    }
}

/// Exports a [`Router`] implementation as this component's `router-plugin` world. Use it once,
/// in the plugin crate (a `cdylib` built for `wasm32-wasip2`); see [`Router`] for an example.
///
/// The plugin's value lives in the component instance from a successful `init` on; a `route`
/// before that picks the least-loaded replica.
#[macro_export]
macro_rules! export_router {
    ($plugin:ty) => {
        const _: () = {
            ::std::thread_local! {
                static MLAHOST_PLUGIN_STATE: $crate::__private::State<$plugin> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            struct MlahostRouterExport;

            impl $crate::__private::RouterExport for MlahostRouterExport {
                type Plugin = $plugin;
                fn state() -> $crate::__private::StateKey<$plugin> {
                    &MLAHOST_PLUGIN_STATE
                }
            }

            $crate::__private::router_bindings::__mlahost_export_router_world!(
                MlahostRouterExport with_types_in $crate::__private::router_bindings
            );
        };
    };
}
