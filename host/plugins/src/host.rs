//! Every plugin of a server: loaded at start-up (refused with a clear message if any cannot
//! start), found by kind or name, and reloaded when its file changes or on request.

use crate::kind::PluginKind;
use crate::plugin::Plugin;
use crate::runtime::Runtime;
use crate::spec::PluginSpec;
use crate::vocab::Vocabulary;
use crate::PluginError;
use std::sync::Arc;
use std::time::Duration;

pub struct PluginHost {
    pub plugins: Vec<Arc<Plugin>>,
}

impl PluginHost {
    /// Loads every plugin; sampler plugins receive `vocab` (the model's) at `init`.
    pub fn load(specs: Vec<PluginSpec>, vocab: Vocabulary) -> Result<Self, PluginError> {
        if specs.is_empty() {
            return Ok(Self { plugins: Vec::new() });
        }
        let runtime = Runtime::new(vocab).map_err(|m| PluginError::Spec { spec: "runtime".into(), message: m })?;
        let mut plugins: Vec<Arc<Plugin>> = Vec::new();
        for spec in specs {
            if plugins.iter().any(|p| p.spec.name == spec.name) {
                return Err(PluginError::Spec { spec: spec.path.display().to_string(), message: format!("two plugins are named `{}`", spec.name) });
            }
            let p = Plugin::load(runtime.clone(), spec)?;
            if p.kind != PluginKind::Sampler {
                if let Some(other) = plugins.iter().find(|o| o.kind == p.kind) {
                    return Err(PluginError::Spec {
                        spec: p.spec.path.display().to_string(),
                        message: format!("only one {} plugin at a time (`{}` is already loaded)", p.kind.as_str(), other.spec.name),
                    });
                }
            }
            tracing::info!(plugin = %p.spec.name, kind = p.kind.as_str(), "plugin loaded");
            plugins.push(Arc::new(p));
        }
        Ok(Self { plugins })
    }

    /// The plugin of a kind that allows only one (router, prefix-policy, admission).
    pub fn single(&self, kind: PluginKind) -> Option<Arc<Plugin>> {
        self.plugins.iter().find(|p| p.kind == kind).cloned()
    }

    /// Every sampler plugin (an engine core resolves requests' choices among them).
    pub fn samplers(&self) -> Vec<Arc<Plugin>> {
        self.plugins.iter().filter(|p| p.kind == PluginKind::Sampler).cloned().collect()
    }

    pub fn sampler(&self, name: &str) -> Option<Arc<Plugin>> {
        self.plugins.iter().find(|p| p.kind == PluginKind::Sampler && p.spec.name == name).cloned()
    }

    /// Reloads every plugin whose file changed (or all, with `force`): per plugin, whether it
    /// was swapped or why it was kept.
    pub fn reload(&self, force: bool) -> Vec<(String, Result<bool, PluginError>)> {
        self.plugins.iter().map(|p| (p.spec.name.clone(), p.reload(force))).collect()
    }

    /// Polls the plugin files and hot-reloads changed ones in the background.
    pub fn watch(self: &Arc<Self>, every: Duration) {
        if self.plugins.is_empty() {
            return;
        }
        let weak = Arc::downgrade(self);
        let _ = std::thread::Builder::new().name("plugin-watch".into()).spawn(move || loop {
            std::thread::sleep(every);
            let Some(host) = weak.upgrade() else { return };
            for (name, result) in host.reload(false) {
                if let Err(e) = result {
                    tracing::error!(plugin = %name, error = %e, "hot reload failed; keeping the running version");
                }
            }
        });
    }
}
