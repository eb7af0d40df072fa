//! The plugin kinds and the worlds that implement them, from one table: a kind's name, hook
//! deadline and instance count; per world (kind and package version) its export name, its
//! prepared and bound binding types, and how its `init` is called. Adding a kind or a version
//! is one entry here plus its hooks (`hooks*.rs`) and bindings (`bindings.rs`).

use crate::bindings::{v1, v2};
use crate::sandbox::Sandbox;
use crate::vocab::Vocabulary;
use std::time::Duration;
use wasmtime::component::InstancePre;
use wasmtime::Store;

macro_rules! plugin_kinds {
    ($(
        $kind:ident = $name:literal, deadline_ms $deadline:literal, instances $instances:literal {
            $( $world:ident = $export:literal, $pre:ty, $bound:ty,
               init |$b:ident, $store:ident, $config:ident, $vocab:ident| $init:expr; )+
        }
    )+) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum PluginKind { $($kind,)+ }

        impl PluginKind {
            pub const ALL: &'static [PluginKind] = &[$(Self::$kind,)+];

            pub fn as_str(self) -> &'static str {
                match self { $(Self::$kind => $name,)+ }
            }

            /// Each hook's default deadline: what it may cost per call.
            pub fn default_deadline(self) -> Duration {
                match self { $(Self::$kind => Duration::from_millis($deadline),)+ }
            }

            /// Instances serving calls at once. Admission and prefix policies keep state across
            /// calls (quota windows, hit counts) that several instances would split, so they
            /// get one; the others get a few, so one slow call never queues the rest.
            pub fn default_instances(self) -> usize {
                match self { $(Self::$kind => $instances,)+ }
            }
        }

        /// A world a component may export: one kind at one package version.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum World { $($($world,)+)+ }

        impl World {
            pub const ALL: &'static [World] = &[$($(Self::$world,)+)+];

            pub fn kind(self) -> PluginKind {
                match self { $($(Self::$world => PluginKind::$kind,)+)+ }
            }

            /// The exported interface that identifies the world.
            pub fn export_name(self) -> &'static str {
                match self { $($(Self::$world => $export,)+)+ }
            }
        }

        /// A compiled component, prepared for instantiation as its world.
        pub enum Pre { $($($world($pre),)+)+ }

        /// A live instance's typed exports.
        pub enum Bound { $($($world($bound),)+)+ }

        impl Pre {
            pub fn new(world: World, pre: InstancePre<Sandbox>) -> wasmtime::Result<Pre> {
                Ok(match world { $($(World::$world => Pre::$world(<$pre>::new(pre)?),)+)+ })
            }

            pub fn instantiate(&self, store: &mut Store<Sandbox>) -> wasmtime::Result<Bound> {
                Ok(match self { $($(Pre::$world(p) => Bound::$world(p.instantiate(&mut *store)?),)+)+ })
            }
        }

        impl Bound {
            /// Calls the instance's `init`.
            pub fn init(&self, store: &mut Store<Sandbox>, config: &str, vocab: &Vocabulary) -> wasmtime::Result<Result<(), String>> {
                match self {
                    $($(Bound::$world($b) => {
                        let ($store, $config, $vocab) = (store, config, vocab);
                        $init
                    })+)+
                }
            }
        }
    };
}

plugin_kinds! {
    Sampler = "sampler", deadline_ms 50, instances 2 {
        SamplerV2 = "mlahost:plugin/sampler@0.2.0", v2::sampler::SamplerPluginPre<Sandbox>, v2::sampler::SamplerPlugin,
            init |b, store, config, vocab| b.mlahost_plugin_sampler().call_init(store, config, &vocab.0);
        SamplerV1 = "mlahost:plugin/sampler@0.1.0", v1::sampler::SamplerPluginPre<Sandbox>, v1::sampler::SamplerPlugin,
            init |b, store, config, _vocab| b.mlahost_plugin_sampler().call_init(store, config);
    }
    Router = "router", deadline_ms 20, instances 4 {
        RouterV2 = "mlahost:plugin/router@0.2.0", v2::router::RouterPluginPre<Sandbox>, v2::router::RouterPlugin,
            init |b, store, config, _vocab| b.mlahost_plugin_router().call_init(store, config);
        RouterV1 = "mlahost:plugin/router@0.1.0", v1::router::RouterPluginPre<Sandbox>, v1::router::RouterPlugin,
            init |b, store, config, _vocab| b.mlahost_plugin_router().call_init(store, config);
    }
    PrefixPolicy = "prefix-policy", deadline_ms 20, instances 1 {
        PrefixPolicyV2 = "mlahost:plugin/prefix-policy@0.2.0", v2::prefix_policy::PrefixPolicyPluginPre<Sandbox>, v2::prefix_policy::PrefixPolicyPlugin,
            init |b, store, config, _vocab| b.mlahost_plugin_prefix_policy().call_init(store, config);
        PrefixPolicyV1 = "mlahost:plugin/prefix-policy@0.1.0", v1::prefix_policy::PrefixPolicyPluginPre<Sandbox>, v1::prefix_policy::PrefixPolicyPlugin,
            init |b, store, config, _vocab| b.mlahost_plugin_prefix_policy().call_init(store, config);
    }
    Admission = "admission", deadline_ms 20, instances 1 {
        AdmissionV2 = "mlahost:plugin/admission@0.2.0", v2::admission::AdmissionPluginPre<Sandbox>, v2::admission::AdmissionPlugin,
            init |b, store, config, _vocab| b.mlahost_plugin_admission().call_init(store, config);
        AdmissionV1 = "mlahost:plugin/admission@0.1.0", v1::admission::AdmissionPluginPre<Sandbox>, v1::admission::AdmissionPlugin,
            init |b, store, config, _vocab| b.mlahost_plugin_admission().call_init(store, config);
    }
}
