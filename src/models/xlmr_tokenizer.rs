//! The XLM-R SentencePiece tokenizer of the E5 model, built with the
//! `tokenizers` crate from the vocabulary stored inside the model file.
//!
//! Pipeline: the file's codepoint map (NFKC-like; some controls deleted,
//! space-like chars to a space) and white-space cleanup, then Metaspace
//! (`▁`, prepended), then a Unigram model over the file's pieces and scores.
//! `tokenizers` fuses a run of unknown chars into one `<unk>`; the reference
//! engine emits one per char, so runs are expanded again to match its ids.

use std::collections::HashMap;

use tokenizers::models::unigram::Unigram;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::tokenizer::{NormalizedString, Normalizer};

use crate::error::{Error, Result};

/// The normaliser stored in the model file: a map from a codepoint to zero
/// or more codepoints, then runs of spaces collapsed to one.
#[derive(Debug, Clone, Default)]
pub struct CodepointMap {
    map: HashMap<char, Vec<char>>,
}

impl CodepointMap {
    /// Builds the map from `(codepoint, replacement)` records.
    pub fn new(records: impl IntoIterator<Item = (char, Vec<char>)>) -> Self {
        CodepointMap {
            map: records.into_iter().collect(),
        }
    }

    /// The normalised chars of `text`, each with the `tokenizers` alignment
    /// change it carries, plus how many chars were dropped at the start.
    /// As in the reference engine: each char mapped, then runs of spaces
    /// collapsed to one (leading and trailing spaces are kept: Metaspace
    /// turns them into `▁`).
    fn changes(&self, text: &str) -> (Vec<(char, isize)>, usize) {
        let mut out: Vec<(char, isize)> = Vec::with_capacity(text.len());
        let mut dropped_at_start = 0;
        let mut drop = |out: &mut Vec<(char, isize)>| match out.last_mut() {
            Some(last) => last.1 -= 1,
            None => dropped_at_start += 1,
        };
        for c in text.chars() {
            let mapped: &[char] = match self.map.get(&c) {
                Some(v) => v,
                None => std::slice::from_ref(&c),
            };
            if mapped.is_empty() {
                drop(&mut out);
                continue;
            }
            let mut kept = 0;
            for &m in mapped {
                if m == ' ' && out.last().is_some_and(|(p, _)| *p == ' ') {
                    continue;
                }
                out.push((m, if kept == 0 { 0 } else { 1 }));
                kept += 1;
            }
            if kept == 0 {
                drop(&mut out);
            }
        }
        (out, dropped_at_start)
    }
}

impl Normalizer for CodepointMap {
    fn normalize(&self, normalized: &mut NormalizedString) -> tokenizers::Result<()> {
        let (changes, initial) = self.changes(normalized.get());
        normalized.transform(changes, initial);
        Ok(())
    }
}

/// The tokenizer: `encode` gives content ids (no `<s>`/`</s>`).
pub struct XlmrTokenizer {
    inner: tokenizers::TokenizerImpl<
        Unigram,
        CodepointMap,
        Metaspace,
        tokenizers::processors::PostProcessorWrapper,
        tokenizers::decoders::DecoderWrapper,
    >,
    unk_id: u32,
}

impl XlmrTokenizer {
    /// Builds the tokenizer from the model file's pieces, scores and map.
    pub fn new(mut pieces: Vec<(String, f64)>, unk_id: u32, map: CodepointMap) -> Result<Self> {
        // The reference never matches the literal text "<unk>" as the unknown
        // piece (it spells it with other pieces); make that piece unmatchable.
        if let Some(p) = pieces.get_mut(unk_id as usize) {
            p.0 = "\u{0}<unk>\u{0}".to_string();
        }
        let model = Unigram::from(pieces, Some(unk_id as usize), false)
            .map_err(|e| Error::Model(format!("cannot build the Unigram model: {e}")))?;
        let mut inner = tokenizers::TokenizerImpl::new(model);
        let tok_err =
            |e: tokenizers::Error| Error::Model(format!("cannot build the tokenizer: {e}"));
        inner.with_normalizer(Some(map)).map_err(tok_err)?;
        inner.with_pre_tokenizer(Some(Metaspace::new('▁', PrependScheme::Always, true)));
        Ok(XlmrTokenizer { inner, unk_id })
    }

    /// Content token ids of `text`, one `<unk>` per unknown char.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Model(format!("tokenizer: {e}")))?;
        let mut ids = Vec::with_capacity(enc.get_ids().len());
        for (&id, token) in enc.get_ids().iter().zip(enc.get_tokens()) {
            if id == self.unk_id {
                let n = token.trim_start_matches('▁').chars().count().max(1);
                ids.extend(std::iter::repeat_n(id, n));
            } else {
                ids.push(id);
            }
        }
        Ok(ids)
    }
}
