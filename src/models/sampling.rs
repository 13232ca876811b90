//! Choosing the next token and what of the text may be shown: log-softmax
//! of a token, greedy or temperature/top-p sampling, the first-token gate,
//! and how much of a partial text is safe to pass on.

use crate::engine::{FirstTokenGate, SamplingParams};
use crate::rng::Rng;

/// The natural log of the probability `logits` give `token` (a
/// log-softmax at one index; excluded tokens are at minus infinity).
pub(super) fn logprob(logits: &[f32], token: u32) -> f32 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let total: f32 = logits.iter().map(|&v| (v - max).exp()).sum();
    logits
        .get(token as usize)
        .map_or(f32::NEG_INFINITY, |&v| v - max - total.ln())
}

/// How much of `text` may be shown: all but an incomplete character at
/// its end (`None`) and the last `hold` bytes, which may be the start of a
/// stop string.
pub(super) fn emittable(text: &str, hold: usize) -> Option<usize> {
    if text.ends_with('\u{FFFD}') {
        return None;
    }
    let mut safe = text.len().saturating_sub(hold);
    while !text.is_char_boundary(safe) {
        safe -= 1;
    }
    Some(safe)
}

/// The gated tokens' probability at the first step; below the gate's
/// threshold they are excluded from it.
pub(super) fn apply_gate(gate: &FirstTokenGate, logits: &mut [f32]) -> f32 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let total: f32 = logits.iter().map(|&v| (v - max).exp()).sum();
    let p: f32 = gate
        .tokens
        .iter()
        .filter_map(|&t| logits.get(t as usize))
        .map(|&v| (v - max).exp() / total)
        .sum();
    if p < gate.threshold {
        for &t in &gate.tokens {
            if let Some(v) = logits.get_mut(t as usize) {
                *v = f32::NEG_INFINITY;
            }
        }
    }
    p
}

/// The next token: argmax when greedy, else temperature + top-p sampling.
pub(super) fn sample(logits: &[f32], params: &SamplingParams, rng: &mut Rng) -> u32 {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .fold((0usize, f32::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 {
                    (i, v)
                } else {
                    best
                }
            })
            .0 as u32
    };
    if params.temperature <= 0.0 {
        return argmax();
    }
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut probs: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as u32, ((v - max) / params.temperature).exp()))
        .collect();
    let total: f32 = probs.iter().map(|p| p.1).sum();
    probs.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
    let mut kept = 0;
    let mut mass = 0f32;
    for p in &probs {
        kept += 1;
        mass += p.1 / total;
        if mass >= params.top_p.clamp(0.0, 1.0) {
            break;
        }
    }
    let probs = &probs[..kept];
    let kept_total: f32 = probs.iter().map(|p| p.1).sum();
    let mut r = rng.next_f32() * kept_total;
    for &(id, p) in probs {
        if r < p {
            return id;
        }
        r -= p;
    }
    probs.last().map_or_else(argmax, |p| p.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_logprob_is_its_log_softmax() {
        let logits = [0.0f32, 1.0, 2.0];
        let z: f32 = logits.iter().map(|v| v.exp()).sum();
        for t in 0..3 {
            let want = (logits[t].exp() / z).ln();
            assert!((logprob(&logits, t as u32) - want).abs() < 1e-6);
        }
        assert_eq!(logprob(&logits, 9), f32::NEG_INFINITY);
    }

    #[test]
    fn greedy_is_argmax_and_sampling_is_seeded() {
        let logits = vec![0.1, 3.0, 2.9, -1.0];
        let greedy = SamplingParams::default();
        assert_eq!(sample(&logits, &greedy, &mut Rng(1)), 1);
        let hot = SamplingParams {
            temperature: 1.0,
            seed: 7,
            ..Default::default()
        };
        let draw = |seed| {
            let mut rng = Rng(seed);
            (0..50)
                .map(|_| sample(&logits, &hot, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        let d = draw(7);
        assert!(d.contains(&1) && d.contains(&2), "{d:?}");
        // top_p small enough keeps only the best token.
        let narrow = SamplingParams {
            temperature: 1.0,
            top_p: 0.1,
            ..Default::default()
        };
        let mut rng = Rng(3);
        assert!((0..20).all(|_| sample(&logits, &narrow, &mut rng) == 1));
    }
}
