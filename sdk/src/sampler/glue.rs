//! Between the generated `sampler-plugin` bindings and [`Sampler`]: not public API.
//!
//! `init` goes through the real bindings. `sample` goes through the ABI twin of `build.rs`
//! (its `sequence.logits` lifted as the raw `u32` handle), because wit-bindgen cannot generate a
//! compiling lift for a list of records holding a borrowed imported resource
//! (bytecodealliance/wit-bindgen#811). A `borrow<logits>` and a `u32` share the canonical ABI, so
//! the twin's glue is exactly what the real one would be; here the handle is wrapped in the real
//! `Logits` type, lent to the views, and dropped before returning: dropping a borrowed handle
//! ends the borrow, which the component model requires before the call returns.

use super::{Decision, Params, Sampler, SequenceView};
use crate::bindings::sampler::exports::mlahost::plugin::sampler as real;
use crate::bindings::sampler::mlahost::plugin::logits_access::Logits;
use crate::bindings::sampler_abi::exports::mlahost_sdk::sampler_abi::sampler as twin;
use crate::state::{self, StateKey, NOT_INITIALISED};

/// Implemented by the type that [`export_sampler!`](crate::export_sampler) declares: names the
/// plugin type and where its value lives.
pub trait SamplerExport: 'static {
    /// The plugin's type.
    type Plugin: Sampler;
    /// The thread-local cell holding the plugin's value.
    fn state() -> StateKey<Self::Plugin>;
}

impl<E: SamplerExport> real::Guest for E {
    fn init(config: String) -> Result<(), String> {
        state::init(E::state(), || E::Plugin::init(&config))
    }
}

impl<E: SamplerExport> twin::Guest for E {
    fn sample(step: Vec<twin::Sequence>) -> Result<Vec<twin::Decision>, String> {
        // SAFETY: each `logits` is a handle the canonical ABI just lifted from a
        // `borrow<logits>` argument of this call (the twin spells it `u32`): a live borrow
        // handle in this instance's table, distinct per sequence, wrapped exactly once here and
        // dropped (ending the borrow) before this function returns.
        let handles: Vec<Logits> = step
            .iter()
            .map(|s| unsafe { Logits::from_handle(s.logits) })
            .collect();
        let n = step.len();
        let views: Vec<SequenceView<'_>> = step
            .into_iter()
            .zip(&handles)
            .map(|(s, h)| {
                let p = s.params;
                let params = Params {
                    temperature: p.temperature,
                    top_p: p.top_p,
                    top_k: p.top_k,
                    seed: p.seed,
                    max_tokens: p.max_tokens,
                    config: p.config,
                };
                SequenceView::from_host(s.request_id, params, s.prompt_len, s.generated, h)
            })
            .collect();
        let result = state::with(E::state(), |plugin| plugin.sample(&views))
            .unwrap_or_else(|| Err(NOT_INITIALISED.to_string()));
        drop(views);
        drop(handles);
        let decisions = result?;
        if decisions.len() != n {
            return Err(format!(
                "sampler returned {} decisions for {n} sequences (one per sequence, in order)",
                decisions.len()
            ));
        }
        Ok(decisions.into_iter().map(lower).collect())
    }
}

fn lower(d: Decision) -> twin::Decision {
    match d {
        Decision::Token(id) => twin::Decision::Token(id),
        Decision::Bias(b) => twin::Decision::Bias(
            b.into_iter()
                .map(|t| twin::TokenBias {
                    id: t.id,
                    bias: t.bias,
                })
                .collect(),
        ),
        Decision::Allow(words) => twin::Decision::Allow(words),
        Decision::Pass => twin::Decision::Pass,
    }
}

/// Exports a [`Sampler`] implementation as this component's `sampler-plugin` world. Use it once,
/// in the plugin crate (a `cdylib` built for `wasm32-wasip2`).
///
/// ```
/// use mlahost_sdk::{Decision, Sampler, SequenceView};
///
/// struct Passthrough;
///
/// impl Sampler for Passthrough {
///     fn init(_config: &str) -> Result<Self, String> {
///         Ok(Passthrough)
///     }
///     fn sample(&mut self, step: &[SequenceView<'_>]) -> Result<Vec<Decision>, String> {
///         Ok(vec![Decision::Pass; step.len()])
///     }
/// }
///
/// mlahost_sdk::export_sampler!(Passthrough);
/// ```
///
/// The plugin's value lives in the component instance from a successful `init` on; a `sample`
/// before that answers `Err` (the host's failure policy applies).
#[macro_export]
macro_rules! export_sampler {
    ($plugin:ty) => {
        const _: () = {
            ::std::thread_local! {
                static MLAHOST_PLUGIN_STATE: $crate::__private::State<$plugin> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            struct MlahostSamplerExport;

            impl $crate::__private::SamplerExport for MlahostSamplerExport {
                type Plugin = $plugin;
                fn state() -> $crate::__private::StateKey<$plugin> {
                    &MLAHOST_PLUGIN_STATE
                }
            }

            // `init`, and the component type of the whole world (with `sample`).
            $crate::__private::sampler_bindings::__mlahost_export_sampler_world!(
                MlahostSamplerExport with_types_in $crate::__private::sampler_bindings
            );

            // `sample`, lifted by the ABI twin (see the SDK's sampler glue).
            #[unsafe(export_name = "mlahost:plugin/sampler@0.1.0#sample")]
            unsafe extern "C" fn mlahost_export_sample(arg0: *mut u8, arg1: usize) -> *mut u8 {
                // SAFETY: called by the component's canonical ABI adapter with the flattened
                // `list<sequence>` argument, as the twin's generated glue expects.
                unsafe {
                    $crate::__private::sampler_twin::_export_sample_cabi::<MlahostSamplerExport>(
                        arg0, arg1,
                    )
                }
            }

            #[unsafe(export_name = "cabi_post_mlahost:plugin/sampler@0.1.0#sample")]
            unsafe extern "C" fn mlahost_post_return_sample(arg0: *mut u8) {
                // SAFETY: called once after `sample` returned `arg0`, to free what it lowered.
                unsafe {
                    $crate::__private::sampler_twin::__post_return_sample::<MlahostSamplerExport>(
                        arg0,
                    )
                }
            }
        };
    };
}
