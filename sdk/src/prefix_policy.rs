//! Prefix-policy plugins: which cached prefix pages leave the cache when pages run short.
//!
//! When a replica needs `needed` pages and must evict cached prefix pages that no running
//! request uses, the host calls [`PrefixPolicy::decide`] with those [`Candidate`]s. The answer
//! ([`EvictionPlan`]) orders the evictions and pins pages to keep while anything else can go.
//! Export the implementation with [`export_prefix_policy!`](crate::export_prefix_policy).

use crate::state::{self, StateKey};

/// A prefix-cache eviction policy. One value lives in each plugin instance, made by
/// [`init`](Self::init) and used by every later call.
///
/// ```
/// use mlahost_sdk::{Candidate, EvictionPlan, PrefixPolicy};
///
/// /// Evicts the least-hit pages first.
/// struct FewestHits;
///
/// impl PrefixPolicy for FewestHits {
///     fn init(_config: &str) -> Result<Self, String> {
///         Ok(FewestHits)
///     }
///
///     fn decide(&mut self, candidates: &[Candidate], _needed: u32) -> EvictionPlan {
///         let mut order: Vec<&Candidate> = candidates.iter().collect();
///         order.sort_by_key(|c| (c.hits, c.last_use));
///         EvictionPlan { evict_order: order.iter().map(|c| c.page).collect(), pin: vec![] }
///     }
/// }
///
/// mlahost_sdk::export_prefix_policy!(FewestHits);
/// ```
pub trait PrefixPolicy: Sized + 'static {
    /// Makes the plugin from the text given after the plugin path on the command line
    /// (`--plugin path.wasm:CONFIG`, `""` when none). Called once per instance, before any
    /// [`decide`](Self::decide). An `Err` refuses the plugin at start-up (or keeps the previous
    /// version on hot reload) with that message.
    fn init(config: &str) -> Result<Self, String>;

    /// `needed` pages are about to be taken from `candidates`: say in which order, and which to
    /// keep while anything else can go.
    fn decide(&mut self, candidates: &[Candidate], needed: u32) -> EvictionPlan;
}

/// A cached page that no running request uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Candidate {
    /// Opaque page id, used in the [`EvictionPlan`].
    pub page: u32,
    /// The tenant the page was computed for (`None` without tenants).
    pub tenant: Option<String>,
    /// The cache salt (requests with different salts never share pages).
    pub salt: u64,
    /// Logical time of the last use; larger is more recent.
    pub last_use: u64,
    /// Requests that reused the page.
    pub hits: u32,
    /// Position in its prefix chain: 0 is the first page of a prompt.
    pub depth: u32,
    /// Pages this candidate stands for (always 1 today).
    pub pages: u32,
}

/// The policy's answer (the WIT's `prefix-policy.decision`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EvictionPlan {
    /// Pages in the order they should be evicted. Pages left out go after, oldest first.
    pub evict_order: Vec<u32>,
    /// Pages to keep while anything else can go.
    pub pin: Vec<u32>,
}

pub(crate) mod glue {
    use super::*;
    use crate::bindings::prefix_policy::exports::mlahost::plugin::prefix_policy as wit;

    /// Implemented by the type that [`export_prefix_policy!`](crate::export_prefix_policy)
    /// declares.
    pub trait PrefixPolicyExport: 'static {
        /// The plugin's type.
        type Plugin: PrefixPolicy;
        /// The thread-local cell holding the plugin's value.
        fn state() -> StateKey<Self::Plugin>;
    }

    impl<E: PrefixPolicyExport> wit::Guest for E {
        fn init(config: String) -> Result<(), String> {
            state::init(E::state(), || E::Plugin::init(&config))
        }

        fn decide(candidates: Vec<wit::Candidate>, needed: u32) -> wit::Decision {
            let candidates: Vec<Candidate> = candidates
                .into_iter()
                .map(|c| Candidate {
                    page: c.page,
                    tenant: c.tenant,
                    salt: c.salt,
                    last_use: c.last_use,
                    hits: c.hits,
                    depth: c.depth,
                    pages: c.pages,
                })
                .collect();
            // Before a successful `init`: no opinion (the host evicts oldest first).
            let plan = state::with(E::state(), |plugin| plugin.decide(&candidates, needed))
                .unwrap_or_default();
            wit::Decision {
                evict_order: plan.evict_order,
                pin: plan.pin,
            }
        }
    }
}

/// Exports a [`PrefixPolicy`] implementation as this component's `prefix-policy-plugin` world.
/// Use it once, in the plugin crate (a `cdylib` built for `wasm32-wasip2`); see
/// [`PrefixPolicy`] for an example.
///
/// The plugin's value lives in the component instance from a successful `init` on; a `decide`
/// before that answers an empty plan (the host's own order).
#[macro_export]
macro_rules! export_prefix_policy {
    ($plugin:ty) => {
        const _: () = {
            ::std::thread_local! {
                static MLAHOST_PLUGIN_STATE: $crate::__private::State<$plugin> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            struct MlahostPrefixPolicyExport;

            impl $crate::__private::PrefixPolicyExport for MlahostPrefixPolicyExport {
                type Plugin = $plugin;
                fn state() -> $crate::__private::StateKey<$plugin> {
                    &MLAHOST_PLUGIN_STATE
                }
            }

            $crate::__private::prefix_policy_bindings::__mlahost_export_prefix_policy_world!(
                MlahostPrefixPolicyExport with_types_in $crate::__private::prefix_policy_bindings
            );
        };
    };
}
