//! Between the generated `sampler-plugin` bindings and [`Sampler`]: not public API.

use super::{Decision, Params, Sampler, SequenceView, Vocabulary};
use crate::bindings::sampler::exports::mlahost::plugin::sampler as wit;
use crate::bindings::sampler::mlahost::plugin::logits_access::Logits;
use crate::bindings::sampler::mlahost::plugin::vocabulary::Vocab;
use crate::state::{self, StateKey, NOT_INITIALISED};

/// Implemented by the type that [`export_sampler!`](crate::export_sampler) declares: names the
/// plugin type and where its value lives.
pub trait SamplerExport: 'static {
    /// The plugin's type.
    type Plugin: Sampler;
    /// The thread-local cell holding the plugin's value.
    fn state() -> StateKey<Self::Plugin>;
}

impl<E: SamplerExport> wit::Guest for E {
    fn init(config: String, vocab: Vocab) -> Result<(), String> {
        let vocab = Vocabulary::from_parts(vocab.bytes, vocab.offsets, vocab.special, vocab.eos)?;
        state::init(E::state(), || E::Plugin::init(&config, vocab))
    }

    fn sample(step: Vec<wit::Sequence>, logits: &Logits) -> Result<Vec<wit::Decision>, String> {
        let n = step.len();
        let views: Vec<SequenceView<'_>> = step
            .into_iter()
            .enumerate()
            .map(|(row, s)| {
                let p = s.params;
                let params = Params {
                    temperature: p.temperature,
                    top_p: p.top_p,
                    top_k: p.top_k,
                    seed: p.seed,
                    max_tokens: p.max_tokens,
                    config: p.config,
                };
                SequenceView::from_host(s.request_id, params, s.prompt_len, s.generated, logits, row as u32)
            })
            .collect();
        let decisions = state::with(E::state(), |plugin| plugin.sample(&views))
            .unwrap_or_else(|| Err(NOT_INITIALISED.to_string()))?;
        if decisions.len() != n {
            return Err(format!(
                "sampler returned {} decisions for {n} sequences (one per sequence, in order)",
                decisions.len()
            ));
        }
        Ok(decisions.into_iter().map(lower).collect())
    }

    fn check_config(config: String) -> Result<(), String> {
        state::with(E::state(), |plugin| plugin.check_config(&config))
            .unwrap_or_else(|| Err(NOT_INITIALISED.to_string()))
    }
}

fn lower(d: Decision) -> wit::Decision {
    match d {
        Decision::Token(id) => wit::Decision::Token(id),
        Decision::Bias(b) => wit::Decision::Bias(
            b.into_iter()
                .map(|t| wit::TokenBias {
                    id: t.id,
                    bias: t.bias,
                })
                .collect(),
        ),
        Decision::Allow(words) => wit::Decision::Allow(words),
        Decision::Pass => wit::Decision::Pass,
        Decision::Fail(message) => wit::Decision::Fail(message),
    }
}

/// Exports a [`Sampler`] implementation as this component's `sampler-plugin` world. Use it once,
/// in the plugin crate (a `cdylib` built for `wasm32-wasip2`).
///
/// ```
/// use mlahost_sdk::{Decision, Sampler, SequenceView, Vocabulary};
///
/// struct Passthrough;
///
/// impl Sampler for Passthrough {
///     fn init(_config: &str, _vocab: Vocabulary) -> Result<Self, String> {
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

            $crate::__private::sampler_bindings::__mlahost_export_sampler_world!(
                MlahostSamplerExport with_types_in $crate::__private::sampler_bindings
            );
        };
    };
}
