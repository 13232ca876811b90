//! How to answer: the one way to turn the configuration and a request's
//! overrides into [`AskOptions`], shared by the CLI, the JSON API, the
//! OpenAI endpoint and Slack, so a setting means the same in each and is
//! checked in one place.

use crate::config::{ConfidenceConfig, Config, PromptStyle, ReadingStyle};
use crate::engine::SamplingParams;
use crate::error::{Error, Result};
use crate::retrieve::{SearchMode, MAX_K};

/// How to answer.
#[derive(Debug, Clone)]
pub struct AskOptions {
    /// Passages given to the model.
    pub k: usize,
    /// Retriever.
    pub mode: SearchMode,
    /// Sampling.
    pub sampling: SamplingParams,
    /// Most prompt tokens (passages are trimmed to fit, the question never).
    pub max_prompt_tokens: usize,
    /// The prompt variant.
    pub prompt: PromptStyle,
    /// The probability the model must give to starting its reply with
    /// `NOT_IN_KB` for that start to be allowed (calibrated on the eval
    /// set). Below it the marker is excluded from the first token and the
    /// model answers; the answer is then checked like any other. Above 1
    /// the model never refuses by the marker (it may still say so in words).
    pub refusal_threshold: f32,
    /// Cosine an uncited answer needs with one passage sentence
    /// (`answer.support_cosine`, calibrated for e5; another embedding model
    /// has another scale).
    pub support_cosine: f32,
    /// Cosine a cited answer needs with a sentence of its cited passages
    /// when its words fall short (`answer.cited_support_cosine`).
    pub cited_support_cosine: f32,
    /// Sentences shown to the model: the ones of the retrieved passages
    /// closest to the question; 0 shows whole passages.
    pub focus: usize,
    /// Search with the question's translation too when it is not in the
    /// knowledge base's main language ([`super::translate`]).
    pub translate: bool,
    /// Readings of the question the model writes (passage orders),
    /// decoded as one batch; the most confident checked one answers.
    pub readings: usize,
    /// What makes the readings differ.
    pub reading_style: ReadingStyle,
    /// The temperature of sampled readings.
    pub reading_temperature: f32,
    /// How an answer's confidence is computed, and the threshold below
    /// which it is `not_sure`.
    pub confidence: ConfidenceConfig,
}

/// Most readings per question in the `orders` style: the passage orders
/// there are (given, reversed, rotated).
pub const MAX_ORDERS: usize = 3;

/// Most readings per question: the rows of one batched decode step.
pub const MAX_READINGS: usize = 8;

/// What a request may change of the configured options (`None`: as
/// configured). Front ends fill it from their flags or request bodies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AskOverrides {
    /// Passages given to the model.
    pub k: Option<usize>,
    /// Retriever.
    pub mode: Option<SearchMode>,
    /// Most answer tokens.
    pub max_new_tokens: Option<usize>,
    /// Sampling temperature (0 = greedy).
    pub temperature: Option<f32>,
    /// Nucleus sampling mass.
    pub top_p: Option<f32>,
    /// Sampling seed.
    pub seed: Option<u64>,
    /// The prompt variant.
    pub prompt: Option<PromptStyle>,
    /// Most prompt tokens.
    pub max_prompt_tokens: Option<usize>,
    /// See [`AskOptions::refusal_threshold`].
    pub refusal_threshold: Option<f32>,
    /// See [`AskOptions::focus`].
    pub focus: Option<usize>,
    /// See [`AskOptions::translate`].
    pub translate: Option<bool>,
    /// The confidence below which an answer is `not_sure`.
    pub confidence_threshold: Option<f32>,
    /// Readings per question (see [`AskOptions::readings`]).
    pub readings: Option<usize>,
    /// What makes them differ.
    pub reading_style: Option<ReadingStyle>,
}

impl AskOptions {
    /// The options `config` describes (`[answer]`, and `search.mode`),
    /// with `overrides` applied, checked: `k` must be in 1..=[`MAX_K`]
    /// ([`Error::InvalidQuery`]), the sampling settings in range
    /// ([`Error::InvalidOption`]).
    pub fn resolve(config: &Config, overrides: &AskOverrides) -> Result<AskOptions> {
        let a = &config.answer;
        let o = overrides;
        let opts = AskOptions {
            k: o.k.unwrap_or(a.k),
            mode: o.mode.unwrap_or(config.search.mode),
            sampling: SamplingParams {
                max_new_tokens: o.max_new_tokens.unwrap_or(a.max_new_tokens),
                temperature: o.temperature.unwrap_or(a.temperature),
                top_p: o.top_p.unwrap_or(a.top_p),
                seed: o.seed.unwrap_or(a.seed),
                stop: Vec::new(),
                gate: None,
            },
            max_prompt_tokens: o.max_prompt_tokens.unwrap_or(a.max_prompt_tokens),
            prompt: o.prompt.unwrap_or(a.prompt),
            refusal_threshold: o.refusal_threshold.unwrap_or(a.refusal_threshold),
            support_cosine: a.support_cosine,
            cited_support_cosine: a.cited_support_cosine,
            focus: o.focus.unwrap_or(a.focus),
            translate: o.translate.unwrap_or(a.translate),
            readings: o.readings.unwrap_or(a.readings),
            reading_style: o.reading_style.unwrap_or(a.reading_style),
            reading_temperature: a.reading_temperature,
            confidence: ConfidenceConfig {
                threshold: o.confidence_threshold.unwrap_or(a.confidence.threshold),
                ..a.confidence.clone()
            },
        };
        opts.check(a.context)?;
        Ok(opts)
    }

    fn check(&self, context: usize) -> Result<()> {
        if self.k == 0 || self.k > MAX_K {
            return Err(Error::InvalidQuery(format!(
                "k must be between 1 and {MAX_K}, not {}",
                self.k
            )));
        }
        let s = &self.sampling;
        if s.max_new_tokens == 0 || s.max_new_tokens > context {
            return Err(Error::InvalidOption(format!(
                "max_tokens must be between 1 and {context}"
            )));
        }
        if !(0.0..=2.0).contains(&s.temperature) {
            return Err(Error::InvalidOption(
                "temperature must be between 0 and 2".into(),
            ));
        }
        if !(s.top_p > 0.0 && s.top_p <= 1.0) {
            return Err(Error::InvalidOption("top_p must be in (0, 1]".into()));
        }
        let most = match self.reading_style {
            ReadingStyle::Orders => MAX_ORDERS,
            ReadingStyle::Samples => MAX_READINGS,
        };
        if !(1..=most).contains(&self.readings) {
            return Err(Error::InvalidOption(format!(
                "readings must be between 1 and {most} (reading style {:?})",
                self.reading_style
            )));
        }
        if !(0.0..=2.0).contains(&self.reading_temperature) {
            return Err(Error::InvalidOption(
                "the reading temperature must be between 0 and 2".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.confidence.threshold) {
            return Err(Error::InvalidOption(
                "the confidence threshold must be between 0 and 1".into(),
            ));
        }
        Ok(())
    }
}

impl Default for AskOptions {
    /// The options of the default configuration.
    fn default() -> Self {
        AskOptions::resolve(&Config::default(), &AskOverrides::default())
            .expect("the default configuration is valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_win_and_are_checked() {
        let config = Config::default();
        let o = AskOptions::resolve(
            &config,
            &AskOverrides {
                k: Some(3),
                temperature: Some(0.5),
                focus: Some(0),
                ..AskOverrides::default()
            },
        )
        .unwrap();
        assert_eq!((o.k, o.sampling.temperature, o.focus), (3, 0.5, 0));
        assert_eq!(o.sampling.max_new_tokens, config.answer.max_new_tokens);
        for (bad, invalid_query) in [
            (
                AskOverrides {
                    k: Some(0),
                    ..Default::default()
                },
                true,
            ),
            (
                AskOverrides {
                    k: Some(MAX_K + 1),
                    ..Default::default()
                },
                true,
            ),
            (
                AskOverrides {
                    temperature: Some(5.0),
                    ..Default::default()
                },
                false,
            ),
            (
                AskOverrides {
                    top_p: Some(0.0),
                    ..Default::default()
                },
                false,
            ),
            (
                AskOverrides {
                    max_new_tokens: Some(0),
                    ..Default::default()
                },
                false,
            ),
        ] {
            match AskOptions::resolve(&config, &bad) {
                Err(Error::InvalidQuery(_)) => assert!(invalid_query, "{bad:?}"),
                Err(Error::InvalidOption(_)) => assert!(!invalid_query, "{bad:?}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
