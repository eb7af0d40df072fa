//! The front end's half of a request's output (vLLM's split): the engine emits token ids,
//! and each choice's text (incremental detokenization, stop strings) is made here, on the task
//! that serves the request, not on the thread that feeds the accelerator. A stop string ends
//! the choice here; the caller then ends it in the engine (`EngineHandle::finish`).

use crate::detokenizer::{Detokenizer, Step};
use crate::request::{Event, Failure, FinishReason, PromptLogprob, SampledToken, Usage};
use mlahost_engine::Tokenizer;
use std::sync::Arc;

/// How a choice's tokens become text.
#[derive(Debug, Clone)]
pub struct TextOptions {
    /// Strings that end generation; emitted only with `include_stop_str_in_output`.
    pub stop: Arc<[String]>,
    /// Emit the stop string or stop token's text that ended generation.
    pub include_stop_str_in_output: bool,
    /// Leave special tokens out of the text (vLLM's default: true).
    pub skip_special_tokens: bool,
}

impl Default for TextOptions {
    fn default() -> Self {
        Self { stop: Arc::from(Vec::new()), include_stop_str_in_output: false, skip_special_tokens: true }
    }
}

/// A generated token with the text it completes (may be empty while a character or a possible
/// stop string is incomplete).
#[derive(Debug, Clone)]
pub struct TokenEvent {
    pub id: u32,
    pub text: String,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

/// What a client is told about one choice.
#[derive(Debug, Clone)]
pub enum ChoiceEvent {
    /// Logprobs of prompt tokens 1.., before any token.
    PromptLogprobs(Vec<PromptLogprob>),
    Token(TokenEvent),
    /// Text held back for stop-string matching, released at the end.
    TrailingText(String),
    Finished { reason: FinishReason, usage: Usage },
    Failed(Failure),
}

/// One choice's text state.
pub struct ChoiceText {
    detok: Detokenizer,
    include_stop: bool,
    min_tokens: usize,
    generated: usize,
    /// A stop string ended the choice after this many tokens; later engine tokens are dropped.
    stopped_at: Option<usize>,
    finished: bool,
}

/// What one engine event meant for its choice.
#[derive(Debug, Default)]
pub struct Outcome {
    /// A stop string ended the choice with this event: end it in the engine.
    pub stopped: bool,
    /// The choice is over (finished or failed): nothing more will come for it.
    pub finished: bool,
    /// A generated token was taken (not one the engine made after a stop string).
    pub token: bool,
}

impl ChoiceText {
    /// Stop strings are looked for from the `min_tokens`-th token on (vLLM's rule, which the
    /// engine applies to stop tokens).
    pub fn new(opts: &TextOptions, min_tokens: usize) -> Self {
        Self {
            detok: Detokenizer::with_options(opts.stop.clone(), opts.include_stop_str_in_output, opts.skip_special_tokens),
            include_stop: opts.include_stop_str_in_output,
            min_tokens,
            generated: 0,
            stopped_at: None,
            finished: false,
        }
    }

    /// Tokens taken so far (up to a stop string).
    pub fn generated(&self) -> usize {
        self.generated
    }

    /// Turns one engine event into what the client sees (pushed to `out`).
    pub fn on_event(&mut self, tok: &Tokenizer, event: Event, out: &mut Vec<ChoiceEvent>) -> Outcome {
        if self.finished {
            return Outcome { finished: true, ..Outcome::default() };
        }
        match event {
            Event::Accepted | Event::Rejected(_) | Event::Scheduled(_) => Outcome::default(),
            Event::PromptLogprobs(p) => {
                out.push(ChoiceEvent::PromptLogprobs(p));
                Outcome::default()
            }
            Event::Token(t) if self.stopped_at.is_none() => self.on_token(tok, t, out),
            Event::Token(_) => Outcome::default(),
            Event::Finished { reason, mut usage } => {
                self.finished = true;
                let reason = match self.stopped_at {
                    // The engine may have run on while the stop reached it: count to the stop.
                    Some(n) => {
                        usage.completion_tokens = n;
                        FinishReason::Stop
                    }
                    None => {
                        let rest = self.detok.flush();
                        if !rest.is_empty() {
                            out.push(ChoiceEvent::TrailingText(rest));
                        }
                        reason
                    }
                };
                out.push(ChoiceEvent::Finished { reason, usage });
                Outcome { finished: true, ..Outcome::default() }
            }
            Event::Failed(f) => {
                self.finished = true;
                out.push(ChoiceEvent::Failed(f));
                Outcome { finished: true, ..Outcome::default() }
            }
        }
    }

    fn on_token(&mut self, tok: &Tokenizer, t: SampledToken, out: &mut Vec<ChoiceEvent>) -> Outcome {
        self.generated += 1;
        // vLLM checks no stop condition before min_tokens are generated.
        let armed = self.generated >= self.min_tokens;
        let (text, stopped) = if t.ends_sequence && !self.include_stop {
            (String::new(), false)
        } else {
            match self.detok.push(tok, t.id, armed) {
                Step::Text(text) if t.ends_sequence => (text + &self.detok.flush(), false),
                Step::Text(text) => (text, false),
                Step::Stopped(text) => (text, true),
            }
        };
        out.push(ChoiceEvent::Token(TokenEvent { id: t.id, text, logprob: t.logprob, top: t.top }));
        if stopped {
            self.stopped_at = Some(self.generated);
        }
        Outcome { stopped, finished: false, token: true }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn tokenizer() -> Tokenizer {
        Tokenizer::from_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-v2-lite")).unwrap()
    }

    fn token(id: u32) -> Event {
        Event::Token(SampledToken { id, logprob: -0.5, top: Vec::new(), ends_sequence: false })
    }

    fn finished(completion_tokens: usize) -> Event {
        Event::Finished { reason: FinishReason::Length, usage: Usage { prompt_tokens: 3, completion_tokens, cached_tokens: 0 } }
    }

    /// Feeds `ids` then the engine's end; returns the client's text, the outcomes and the end.
    fn run(opts: &TextOptions, min_tokens: usize, ids: &[u32]) -> (String, Vec<Outcome>, Option<(FinishReason, Usage)>) {
        let tok = tokenizer();
        let mut text = ChoiceText::new(opts, min_tokens);
        let (mut shown, mut outcomes, mut end) = (String::new(), Vec::new(), None);
        let events = ids.iter().map(|&id| token(id)).chain([finished(ids.len())]);
        for event in events {
            let mut out = Vec::new();
            outcomes.push(text.on_event(&tok, event, &mut out));
            for e in out {
                match e {
                    ChoiceEvent::Token(t) => shown.push_str(&t.text),
                    ChoiceEvent::TrailingText(t) => shown.push_str(&t),
                    ChoiceEvent::Finished { reason, usage } => end = Some((reason, usage)),
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        (shown, outcomes, end)
    }

    fn stop_options(stop: &str, include: bool) -> TextOptions {
        TextOptions { stop: Arc::from(vec![stop.to_string()]), include_stop_str_in_output: include, ..TextOptions::default() }
    }

    #[test]
    fn a_stop_string_ends_the_choice_and_later_engine_tokens_are_not_counted() {
        let tok = tokenizer();
        let ids = tok.encode("alpha beta STOP gamma delta epsilon", false).unwrap();
        let (all, _, _) = run(&TextOptions::default(), 0, &ids);
        assert!(all.contains("STOP") && all.ends_with("epsilon"), "{all:?}");

        let (shown, outcomes, end) = run(&stop_options("STOP", false), 0, &ids);
        assert_eq!(shown, all[..all.find("STOP").unwrap()]);
        let stopped: Vec<usize> = outcomes.iter().enumerate().filter(|(_, o)| o.stopped).map(|(i, _)| i).collect();
        assert_eq!(stopped.len(), 1, "the stop is reported once");
        let kept = stopped[0] + 1;
        assert!(kept < ids.len(), "the engine ran on past the stop in this test");
        // Only tokens up to the stop are taken, counted and billed.
        assert_eq!(outcomes.iter().filter(|o| o.token).count(), kept);
        let (reason, usage) = end.unwrap();
        assert_eq!(reason, FinishReason::Stop);
        assert_eq!(usage.completion_tokens, kept);
        assert!(outcomes.last().unwrap().finished);

        let (with_stop, _, _) = run(&stop_options("STOP", true), 0, &ids);
        assert_eq!(with_stop, all[..all.find("STOP").unwrap() + 4]);
    }

    #[test]
    fn stop_strings_wait_for_min_tokens() {
        let tok = tokenizer();
        let ids = tok.encode("STOP then more words STOP and the rest", false).unwrap();
        let first_stop_tokens = tok.encode("STOP", false).unwrap().len();
        let (shown, _, end) = run(&stop_options("STOP", false), first_stop_tokens + 1, &ids);
        assert!(shown.starts_with("STOP then more words"), "{shown:?}");
        assert!(!shown.contains("rest"), "{shown:?}");
        assert_eq!(end.unwrap().0, FinishReason::Stop);
    }

    #[test]
    fn without_a_stop_the_engine_reason_and_usage_pass_through() {
        let tok = tokenizer();
        let ids = tok.encode("plain text that runs to its length", false).unwrap();
        let (shown, outcomes, end) = run(&stop_options("zzz-never", false), 0, &ids);
        assert_eq!(shown, tok.decode(&ids, true).unwrap());
        assert_eq!(outcomes.iter().filter(|o| o.token).count(), ids.len());
        let (reason, usage) = end.unwrap();
        assert_eq!(reason, FinishReason::Length);
        assert_eq!(usage.completion_tokens, ids.len());
        // Nothing more is taken once the choice is over.
        let mut text = ChoiceText::new(&TextOptions::default(), 0);
        let mut out = Vec::new();
        text.on_event(&tok, finished(0), &mut out);
        out.clear();
        let late = text.on_event(&tok, token(ids[0]), &mut out);
        assert!(late.finished && !late.token && out.is_empty());
    }
}
