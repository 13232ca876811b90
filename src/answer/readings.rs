//! Several readings of one question. A small model's answer depends on
//! where the fact sits in its prompt and on which of its likely words it
//! picks; other readings hold right answers that one misses (BENCHMARKS.md,
//! "Several readings"). Two styles:
//! - `orders`: the same passages in other orders (reversed, rotated), each
//!   reading its own prompt and prefill;
//! - `samples`: one prompt, prefilled once; the first reading greedy, the
//!   others sampled.
//!
//! The readings are decoded as one batch
//! (`crate::engine::Generator::generate_many`), each checked on its own,
//! and the most confident one that passes answers.

use super::options::AskOptions;
use super::prompt::{build_prompt, Shown};
use super::question::Question;
use super::types::Order;
use crate::config::ReadingStyle;
use crate::engine::{Generator, SamplingParams};
use crate::error::Result;
use crate::retrieve::SearchHit;

/// One reading's prompt: its user message and the passages as numbered
/// in it.
pub(super) struct ReadingPrompt<'h> {
    /// The order it shows the passages in.
    pub order: Order,
    /// The user message.
    pub user: String,
    /// The passages as the model saw them, numbered from 1.
    pub given: Vec<Shown<'h>>,
    /// How its reply is sampled.
    pub sampling: SamplingParams,
    /// Each passage's place in the first reading (1 = retrieval's best).
    ranks: Vec<usize>,
}

impl ReadingPrompt<'_> {
    /// The retrieval rank of passage `n` of this reading (0 stays 0: no
    /// passage).
    pub fn rank(&self, n: usize) -> usize {
        n.checked_sub(1)
            .and_then(|i| self.ranks.get(i))
            .copied()
            .unwrap_or(n)
    }
}

/// The orders, in the order readings are added.
const ORDERS: [Order; 3] = [Order::Given, Order::Reversed, Order::Rotated];

/// The prompts of `opts.readings` readings. The first fits the passages
/// into the prompt budget; the others show exactly what it kept, in
/// their own order.
pub(super) fn prompts<'h>(
    generator: &dyn Generator,
    question: &Question,
    shown: &[(&'h SearchHit, String)],
    opts: &AskOptions,
) -> Result<Vec<ReadingPrompt<'h>>> {
    let (q, lang) = (question.text(), question.lang());
    let (user, given) = build_prompt(generator, q, lang, shown, opts)?;
    let kept: Vec<(&'h SearchHit, String)> =
        given.iter().map(|s| (s.hit, s.text.clone())).collect();
    let mut out = vec![ReadingPrompt {
        order: Order::Given,
        user,
        ranks: (1..=given.len()).collect(),
        given,
        sampling: opts.sampling.clone(),
    }];
    if opts.reading_style == ReadingStyle::Samples {
        for i in 1..opts.readings {
            let first = &out[0];
            let sampled = ReadingPrompt {
                order: Order::Sampled,
                user: first.user.clone(),
                given: first.given.clone(),
                ranks: first.ranks.clone(),
                sampling: SamplingParams {
                    temperature: opts.reading_temperature,
                    seed: opts.sampling.seed.wrapping_add(i as u64),
                    ..opts.sampling.clone()
                },
            };
            out.push(sampled);
        }
        return Ok(out);
    }
    for &order in ORDERS.iter().take(opts.readings).skip(1) {
        let ranks = arrange(order, kept.len());
        let passages: Vec<(&'h SearchHit, String)> =
            ranks.iter().map(|&r| kept[r - 1].clone()).collect();
        let (user, given) = build_prompt(generator, q, lang, &passages, opts)?;
        out.push(ReadingPrompt {
            order,
            user,
            ranks,
            given,
            sampling: opts.sampling.clone(),
        });
    }
    Ok(out)
}

/// The first reading's places (1-based) in `order`, for `n` passages.
fn arrange(order: Order, n: usize) -> Vec<usize> {
    let mut places: Vec<usize> = (1..=n).collect();
    match order {
        Order::Given => {}
        Order::Reversed => places.reverse(),
        Order::Rotated => places.rotate_left(1.min(n)),
        Order::Sampled => {}
    }
    places
}

/// The reading that answers: the most confident of those that passed the
/// checks (one without a confidence counts as least confident), else the
/// first, whose refusal then stands.
pub(super) fn choose(passed: &[Option<Option<f32>>]) -> usize {
    passed
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.map(|c| (i, c.unwrap_or(f32::NEG_INFINITY))))
        .fold(None, |best: Option<(usize, f32)>, (i, c)| match best {
            Some((_, b)) if b >= c => best,
            _ => Some((i, c)),
        })
        .map_or(0, |(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_permutations_of_the_first_reading() {
        assert_eq!(arrange(Order::Given, 4), [1, 2, 3, 4]);
        assert_eq!(arrange(Order::Reversed, 4), [4, 3, 2, 1]);
        assert_eq!(arrange(Order::Rotated, 4), [2, 3, 4, 1]);
        assert_eq!(arrange(Order::Rotated, 0), Vec::<usize>::new());
    }

    #[test]
    fn the_most_confident_passing_reading_answers() {
        // Refused, passed at 0.4, passed at 0.7: the third.
        assert_eq!(choose(&[None, Some(Some(0.4)), Some(Some(0.7))]), 2);
        // Ties keep the earlier reading.
        assert_eq!(choose(&[Some(Some(0.5)), Some(Some(0.5))]), 0);
        // Passing without a confidence beats a refusal.
        assert_eq!(choose(&[None, Some(None)]), 1);
        // All refused: the first reading's refusal stands.
        assert_eq!(choose(&[None, None]), 0);
    }
}
