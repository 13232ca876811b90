//! The confidence stage: how likely a checked answer is to be right, from
//! signals that can be measured (the model's token log-probabilities, its
//! refusal score, how much of the answer its cited passages hold, whether
//! the checks had to choose the citation, where the cited passage ranked),
//! combined by a logistic model whose weights are fitted on one half of
//! the eval set (`tests/eval/calibrate.py`) and reported on the other.
//!
//! A small model that is unsure of its words is more often wrong; a
//! confidence lets kbqa say "not sure" and quote its evidence instead of
//! asserting a wrong answer with a citation.

use super::check::Checked;
use super::support::overlap;
use super::types::Signals;
use crate::config::ConfidenceConfig;
use crate::engine::Generation;

/// Where the least likely token's log-probability is floored: one token
/// the model "could not" write otherwise outweighs everything else.
const MIN_LOGPROB_FLOOR: f32 = -20.0;

/// The signals of a checked answer.
pub(super) fn signals(
    generation: &Generation,
    checked: &Checked,
    question: &str,
    shown: &[&str],
) -> Signals {
    let cited: Vec<&str> = checked.cited.iter().map(|&n| shown[n - 1]).collect();
    Signals {
        mean_logprob: generation.mean_logprob(),
        min_logprob: generation
            .token_logprobs
            .iter()
            .copied()
            .reduce(f32::min)
            .map(|m| m.max(MIN_LOGPROB_FLOOR)),
        refusal_score: generation.gate_probability,
        overlap: overlap(&checked.text, question, &cited.join("\n")),
        inferred: checked.inferred,
        first_cited: checked.cited.first().copied().unwrap_or(0),
    }
}

/// The calibrated confidence, or `None` when the engine reported no
/// token log-probabilities (then nothing is known of the model's
/// certainty, and the answer is judged by the checks alone).
pub fn confidence(s: &Signals, w: &ConfidenceConfig) -> Option<f32> {
    let mean = s.mean_logprob?;
    let min = s.min_logprob.unwrap_or(mean);
    let z = w.bias
        + w.mean_logprob * mean
        + w.min_logprob * min
        + w.refusal_score * s.refusal_score.unwrap_or(0.0)
        + w.overlap * s.overlap.unwrap_or(0.0)
        + w.inferred * f32::from(u8::from(s.inferred))
        + w.first_cited * s.first_cited as f32;
    Some(1.0 / (1.0 + (-z).exp()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confidence_is_a_logistic_of_the_signals() {
        let s = Signals {
            mean_logprob: Some(-0.2),
            min_logprob: Some(-3.0),
            refusal_score: Some(0.1),
            overlap: Some(0.8),
            inferred: false,
            first_cited: 1,
        };
        let flat = ConfidenceConfig {
            threshold: 0.5,
            bias: 0.0,
            mean_logprob: 0.0,
            min_logprob: 0.0,
            refusal_score: 0.0,
            overlap: 0.0,
            inferred: 0.0,
            first_cited: 0.0,
        };
        assert_eq!(confidence(&s, &flat), Some(0.5));
        let w = ConfidenceConfig {
            mean_logprob: 2.0,
            overlap: 1.0,
            ..flat.clone()
        };
        let sure = confidence(&s, &w).unwrap();
        let unsure = confidence(
            &Signals {
                mean_logprob: Some(-1.5),
                overlap: Some(0.3),
                ..s
            },
            &w,
        )
        .unwrap();
        assert!(sure > 0.5 && unsure < sure, "{sure} {unsure}");
        assert_eq!(
            confidence(
                &Signals {
                    mean_logprob: None,
                    ..s
                },
                &w
            ),
            None,
            "no log-probabilities, no confidence"
        );
    }
}
