//! The four plugin kinds: the export that identifies each, its hook budget and how many
//! instances serve it at once.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PluginKind {
    Sampler,
    Router,
    PrefixPolicy,
    Admission,
}

impl PluginKind {
    pub const ALL: [PluginKind; 4] = [Self::Sampler, Self::Router, Self::PrefixPolicy, Self::Admission];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sampler => "sampler",
            Self::Router => "router",
            Self::PrefixPolicy => "prefix-policy",
            Self::Admission => "admission",
        }
    }

    /// Each hook's default deadline: what it may cost per call.
    pub fn default_deadline(self) -> Duration {
        match self {
            Self::Sampler => Duration::from_millis(50),
            Self::Router | Self::PrefixPolicy | Self::Admission => Duration::from_millis(20),
        }
    }

    /// Instances serving calls at once. Admission and prefix policies keep state across calls
    /// (quota windows, hit counts) that several instances would split, so they get one; the
    /// others get a few, so one slow call never queues the rest.
    pub fn default_instances(self) -> usize {
        match self {
            Self::Sampler => 2,
            Self::Router => 4,
            Self::PrefixPolicy | Self::Admission => 1,
        }
    }

    /// The exported interface that identifies the kind.
    pub fn export_name(self) -> &'static str {
        match self {
            Self::Sampler => "mlahost:plugin/sampler@0.1.0",
            Self::Router => "mlahost:plugin/router@0.1.0",
            Self::PrefixPolicy => "mlahost:plugin/prefix-policy@0.1.0",
            Self::Admission => "mlahost:plugin/admission@0.1.0",
        }
    }
}
