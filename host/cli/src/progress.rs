//! A progress bar on stderr while a checkpoint loads (hidden when stderr is not a terminal).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mlahost_engine::model::LoadProgress;

/// The bar and the tensors landed so far (each `advance` is one tensor).
pub struct LoadBar(ProgressBar, std::sync::atomic::AtomicU64);

impl LoadBar {
    pub fn new() -> Self {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("loading weights {bar:40} {bytes}/{total_bytes}, {msg} ({eta})")
                .expect("static template")
                .progress_chars("=> "),
        );
        Self(bar, Default::default())
    }
}

impl LoadProgress for LoadBar {
    fn start(&self, total_bytes: u64) {
        self.0.set_length(total_bytes);
    }
    fn advance(&self, bytes: u64) {
        let tensors = self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        self.0.set_message(format!("{tensors} tensors"));
        self.0.inc(bytes);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}
