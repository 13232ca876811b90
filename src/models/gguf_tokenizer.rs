//! A chat model's tokenizer, built with the `tokenizers` crate from the
//! metadata inside its GGUF file (`tokenizer.ggml.*`), so a model file is
//! all kbqa needs — no `tokenizer.json` from a hub.
//!
//! The GGUF stores a byte-level BPE: tokens already in byte-level form
//! (`Ġ`…), merges as `"a b"` strings, a type per token (3 = control,
//! 4 = user-defined: added tokens; 3 is special) and a pre-tokenizer name.
//! Supported pre-tokenizers: `qwen2` (NFC, then the Qwen2 split regex, then
//! byte-level) and `smollm` (single digits, then GPT-2 byte-level).

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::error::{Error, Result};

/// Qwen2's pre-tokenisation regex (needs look-ahead: fancy-regex).
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A tokenizer and the facts about it a chat loop needs.
pub struct GgufTokenizer {
    /// The `tokenizers` tokenizer.
    pub tokenizer: Tokenizer,
    /// Ids that end generation (the model's EOS, plus `<|endoftext|>`/`<|im_end|>` if present).
    pub stop_ids: Vec<u32>,
    /// The pre-tokenizer name (`qwen2`, `smollm`).
    pub pre: String,
}

fn format_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::ModelFormat {
        path: path.to_path_buf(),
        format: "GGUF",
        reason: reason.into(),
    }
}

impl GgufTokenizer {
    /// Reads the tokenizer from a GGUF file's metadata (the tensors are not read).
    pub fn from_gguf(path: &Path) -> Result<GgufTokenizer> {
        let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // Buffered: the metadata is hundreds of thousands of small reads.
        let mut f = std::io::BufReader::new(f);
        let content = Content::read(&mut f).map_err(|e| format_err(path, e.to_string()))?;
        Self::from_metadata(&content.metadata).map_err(|reason| format_err(path, reason))
    }

    /// Builds the tokenizer from GGUF metadata.
    pub fn from_metadata(
        md: &HashMap<String, Value>,
    ) -> std::result::Result<GgufTokenizer, String> {
        let model = get(md, "tokenizer.ggml.model")?
            .to_string()
            .map_err(|e| e.to_string())?;
        if model != "gpt2" {
            return Err(format!(
                "tokenizer model {model:?} is not supported (only byte-level BPE, \"gpt2\")"
            ));
        }
        let pre = get(md, "tokenizer.ggml.pre")?
            .to_string()
            .map_err(|e| e.to_string())?
            .clone();
        let (tokens, merges, types) = vocabulary(md)?;
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| format!("cannot build the BPE model: {e}"))?;
        let mut tokenizer = Tokenizer::new(bpe);
        set_pre_tokenizer(&mut tokenizer, &pre)?;
        tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
        // Control (3) and user-defined (4) tokens are added tokens; control ones are special.
        let added: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, &t)| t == 3 || t == 4)
            .map(|(tok, &t)| AddedToken::from(tok.clone(), t == 3))
            .collect();
        tokenizer
            .add_special_tokens(added)
            .map_err(|e| e.to_string())?;
        let stop_ids = stop_ids(md, &tokens)?;
        // Text is only ever text: a document or question that contains
        // `<|im_end|>` must not be able to close a turn (prompt injection).
        // Special tokens enter prompts by id (`token_id`).
        tokenizer.set_encode_special_tokens(true);
        Ok(GgufTokenizer {
            tokenizer,
            stop_ids,
            pre,
        })
    }

    /// Token ids of `text`. Special-token text (`<|im_start|>`…) is encoded
    /// as ordinary text, never as the special token.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .tokenizer
            .encode(text, false)
            .map_err(|e| Error::Model(format!("tokenizer: {e}")))?
            .get_ids()
            .to_vec())
    }

    /// Text of `ids`, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, false)
            .map_err(|e| Error::Model(format!("tokenizer: {e}")))
    }

    /// The id of a token, if it exists.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }
}

/// The metadata value `k`, or an error naming the missing key.
fn get<'a>(md: &'a HashMap<String, Value>, k: &str) -> std::result::Result<&'a Value, String> {
    md.get(k).ok_or_else(|| format!("metadata has no {k}"))
}

/// The metadata array `k`, as strings.
fn strings(md: &HashMap<String, Value>, k: &str) -> std::result::Result<Vec<String>, String> {
    get(md, k)?
        .to_vec()
        .map_err(|e| e.to_string())?
        .iter()
        .map(|v| v.to_string().cloned().map_err(|e| e.to_string()))
        .collect()
}

/// BPE merges, as token pairs.
type Merges = Vec<(String, String)>;

/// The BPE tables: tokens, merges as pairs, and one type per token (an
/// error if the counts disagree, since types decide the added tokens).
fn vocabulary(
    md: &HashMap<String, Value>,
) -> std::result::Result<(Vec<String>, Merges, Vec<i32>), String> {
    let tokens = strings(md, "tokenizer.ggml.tokens")?;
    let merges = strings(md, "tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| format!("merge {m:?} is not two tokens"))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let types: Vec<i32> = get(md, "tokenizer.ggml.token_type")?
        .to_vec()
        .map_err(|e| e.to_string())?
        .iter()
        .map(|v| v.to_i32().map_err(|e| e.to_string()))
        .collect::<std::result::Result<_, _>>()?;
    if types.len() != tokens.len() {
        return Err(format!(
            "{} token types for {} tokens",
            types.len(),
            tokens.len()
        ));
    }
    Ok((tokens, merges, types))
}

/// Installs the normaliser and pre-tokenizer that the GGUF's `pre` name
/// stands for (see the module doc); other names are an error, since a
/// wrong split would silently give the model tokens it was not trained on.
fn set_pre_tokenizer(tokenizer: &mut Tokenizer, pre: &str) -> std::result::Result<(), String> {
    let byte_level = ByteLevel::new(false, false, false);
    match pre {
        "qwen2" => {
            tokenizer
                .with_normalizer(Some(NFC))
                .map_err(|e| e.to_string())?;
            let split = Split::new(
                SplitPattern::Regex(QWEN2_SPLIT.into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| format!("bad split regex: {e}"))?;
            tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
                PreTokenizerWrapper::Split(split),
                PreTokenizerWrapper::ByteLevel(byte_level),
            ])));
        }
        "smollm" => {
            tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
                PreTokenizerWrapper::Digits(Digits::new(true)),
                PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, true)),
            ])));
        }
        other => {
            return Err(format!(
                "pre-tokenizer {other:?} is not supported (qwen2, smollm)"
            ))
        }
    }
    Ok(())
}

/// The ids that end generation: the file's EOS, then `<|im_end|>` and
/// `<|endoftext|>` where the vocabulary has them (chat models end turns
/// with one while naming the other as EOS).
fn stop_ids(
    md: &HashMap<String, Value>,
    tokens: &[String],
) -> std::result::Result<Vec<u32>, String> {
    let mut stop_ids = Vec::new();
    if let Some(eos) = md.get("tokenizer.ggml.eos_token_id") {
        stop_ids.push(eos.to_u32().map_err(|e| e.to_string())?);
    }
    for name in ["<|im_end|>", "<|endoftext|>"] {
        if let Some(&id) = tokens
            .iter()
            .position(|t| t == name)
            .map(|i| i as u32)
            .as_ref()
        {
            if !stop_ids.contains(&id) {
                stop_ids.push(id);
            }
        }
    }
    Ok(stop_ids)
}
