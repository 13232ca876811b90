//! Generation by a model server over the OpenAI chat-completions protocol
//! (llama.cpp's `llama-server`, vLLM, Ollama, TGI, …): for a bigger model
//! or more throughput than one CPU gives, on engines people already run.
//!
//! The prompt, citation and refusal rules stay in `crate::answer`; this
//! module only turns a [`ChatPrompt`] into a request and the streamed reply
//! back into text. Two things differ from the in-process model:
//! - tokens are counted with the model's tokenizer when one is configured
//!   (`generator.tokenizer`: then the prompt is exactly the in-process
//!   one), else by an estimate on the high side so the budget still holds;
//! - the refusal gate uses the first token's `top_logprobs`: when the reply
//!   starts with the marker but the model gave it less than the threshold,
//!   the request is made again with the marker's tokens banned by
//!   `logit_bias` (token ids come from the server's log-probabilities; a
//!   server that sends none cannot be vetoed, and its refusal stands).

use std::time::Instant;

use serde_json::{json, Value};

use super::endpoint::{describe, error_message, Endpoint, SseLines};
use crate::config::OpenAiConfig;
use crate::engine::{
    ChatPrompt, Finish, Generation, Generator, RefusalGate, SamplingParams, HEARTBEAT,
};
use crate::error::Result;
use crate::models::gguf_tokenizer::GgufTokenizer;

/// Candidates asked for at each position when the refusal gate is on.
const TOP_LOGPROBS: u32 = 10;

/// A generator behind an OpenAI-compatible `/v1/chat/completions`.
pub struct OpenAiGenerator {
    endpoint: Endpoint,
    tokenizer: Option<GgufTokenizer>,
}

impl OpenAiGenerator {
    /// A generator for the endpoint in `config` (nothing is contacted yet:
    /// a server that is down is reported by the first answer).
    /// With `tokenizer` (the server model's), prompts are counted exactly.
    pub fn new(config: &OpenAiConfig, tokenizer: Option<GgufTokenizer>) -> Result<OpenAiGenerator> {
        Ok(OpenAiGenerator {
            endpoint: Endpoint::new(config)?,
            tokenizer,
        })
    }

    fn body(
        &self,
        prompt: &ChatPrompt,
        params: &SamplingParams,
        logprobs: bool,
        banned: &[u64],
    ) -> Value {
        let mut messages = vec![json!({"role": "system", "content": prompt.system})];
        for (user, assistant) in prompt.examples {
            messages.push(json!({"role": "user", "content": user}));
            messages.push(json!({"role": "assistant", "content": assistant}));
        }
        messages.push(json!({"role": "user", "content": prompt.user}));
        let mut body = json!({
            "messages": messages,
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
        });
        if !self.endpoint.model().is_empty() {
            body["model"] = json!(self.endpoint.model());
        }
        if !params.stop.is_empty() {
            body["stop"] = json!(params.stop);
        }
        // Every token's log-probability is a confidence signal; the gate
        // needs the first token's alternatives too.
        body["logprobs"] = json!(true);
        if logprobs {
            body["top_logprobs"] = json!(TOP_LOGPROBS);
        }
        if !banned.is_empty() {
            let bias: serde_json::Map<String, Value> = banned
                .iter()
                .map(|id| (id.to_string(), json!(-100)))
                .collect();
            body["logit_bias"] = Value::Object(bias);
        }
        body
    }

    async fn run(
        &self,
        prompt: &ChatPrompt<'_>,
        params: &SamplingParams,
        gate: Option<&RefusalGate>,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation> {
        let start = Instant::now();
        let mut banned: Vec<u64> = Vec::new();
        let mut gate_probability = None;
        loop {
            let gating = gate.filter(|_| banned.is_empty());
            let body = self.body(prompt, params, gating.is_some(), &banned);
            let post = self.endpoint.post("/chat/completions", &body);
            let Some(response) = until_cancelled(post, &mut *on_text).await? else {
                return Ok(cancelled(start, gate_probability));
            };
            let mut reply = Reply::new(gating, &mut *on_text);
            let streamed = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/event-stream"));
            let outcome = if streamed {
                self.read_stream(response, &mut reply).await?
            } else {
                // A server that ignores `stream` answers in one piece.
                let text = response
                    .text()
                    .await
                    .map_err(|e| self.endpoint.error(describe(self.endpoint.base(), &e)))?;
                let v: Value = serde_json::from_str(&text).map_err(|_| {
                    self.endpoint
                        .error(format!("not a chat completion: {}", error_message(&text)))
                })?;
                reply.event(&v, "message", &self.endpoint)?
            };
            gate_probability = gate_probability.or(reply.gate_probability);
            if let Outcome::Vetoed(ids) = outcome {
                tracing::debug!(
                    probability = ?reply.gate_probability,
                    "the refusal marker is below the threshold: asking again without it"
                );
                banned = ids;
                continue;
            }
            let first = reply.first_text.unwrap_or_else(Instant::now);
            let (prompt_tokens, cached, generated) = reply.counts();
            let prompt_tokens = prompt_tokens.unwrap_or_else(|| self.estimate_prompt(prompt));
            return Ok(Generation {
                text: reply.text,
                finish: match outcome {
                    Outcome::Cancelled => Finish::Cancelled,
                    _ => reply.finish.unwrap_or(Finish::Stop),
                },
                prompt_tokens,
                cached_prompt_tokens: cached,
                generated_tokens: generated,
                prefill_ms: first.duration_since(start).as_secs_f64() * 1e3,
                decode_ms: first.elapsed().as_secs_f64() * 1e3,
                gate_probability,
                token_logprobs: reply.token_logprobs,
            });
        }
    }

    async fn read_stream(
        &self,
        mut response: reqwest::Response,
        reply: &mut Reply<'_, '_>,
    ) -> Result<Outcome> {
        let mut lines = SseLines::default();
        let mut done = false;
        loop {
            let chunk =
                match until_cancelled(async { Ok(response.chunk().await) }, &mut *reply.on_text)
                    .await?
                {
                    Some(chunk) => chunk,
                    None => return Ok(Outcome::Cancelled),
                };
            let bytes = match chunk {
                Ok(Some(bytes)) => bytes,
                Ok(None) => break,
                Err(e) => {
                    return Err(self.endpoint.error(format!(
                        "the answer broke off after {} characters: {}",
                        reply.text.chars().count(),
                        describe(self.endpoint.base(), &e)
                    )))
                }
            };
            for data in lines.push(&bytes) {
                if data == "[DONE]" {
                    done = true;
                    continue;
                }
                let v: Value = serde_json::from_str(&data).map_err(|_| {
                    self.endpoint.error(format!(
                        "not a chat completion chunk: {}",
                        error_message(&data)
                    ))
                })?;
                match reply.event(&v, "delta", &self.endpoint)? {
                    Outcome::Continue => {}
                    // Dropping the response closes the connection, which
                    // stops the server generating.
                    stop => return Ok(stop),
                }
            }
        }
        if !done && reply.finish.is_none() {
            return Err(self.endpoint.error(format!(
                "the server closed the stream before the answer was finished (after {} characters)",
                reply.text.chars().count()
            )));
        }
        Ok(Outcome::Continue)
    }

    fn estimate_prompt(&self, prompt: &ChatPrompt) -> usize {
        let count = |t: &str| self.count_tokens(t).unwrap_or_else(|_| estimate_tokens(t));
        count(prompt.system)
            + prompt
                .examples
                .iter()
                .map(|(u, a)| count(u) + count(a))
                .sum::<usize>()
            + count(prompt.user)
            + PER_MESSAGE * (2 + 2 * prompt.examples.len())
    }
}

/// Runs `work`, calling `on_text("")` every [`HEARTBEAT`] meanwhile;
/// `None` when that returns `false` (the caller cancelled: the request is
/// dropped, which closes its connection).
async fn until_cancelled<T>(
    work: impl std::future::Future<Output = Result<T>>,
    on_text: &mut dyn FnMut(&str) -> bool,
) -> Result<Option<T>> {
    tokio::pin!(work);
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            done = &mut work => return done.map(Some),
            _ = tick.tick() => {
                if !on_text("") {
                    return Ok(None);
                }
            }
        }
    }
}

/// A generation the caller cancelled before any text.
fn cancelled(start: Instant, gate_probability: Option<f32>) -> Generation {
    Generation {
        text: String::new(),
        finish: Finish::Cancelled,
        prompt_tokens: 0,
        cached_prompt_tokens: 0,
        generated_tokens: 0,
        prefill_ms: start.elapsed().as_secs_f64() * 1e3,
        decode_ms: 0.0,
        gate_probability,
        token_logprobs: Vec::new(),
    }
}

/// Template tokens a chat template adds around each message (ChatML: 5).
const PER_MESSAGE: usize = 6;

/// A high estimate of the tokens `text` takes in the tokenizers of the
/// models such servers run: one per Chinese character (they average
/// 1.3–1.5 characters a token), one per digit (Qwen and Llama 3 split
/// numbers into digits or short groups), one per other non-ASCII character
/// (full-width punctuation) and one per three bytes of other ASCII (about
/// four for English). Checked against Qwen2.5's tokenizer on every chunk of
/// the shipped corpus (tests/it/remote.rs).
pub fn estimate_tokens(text: &str) -> usize {
    let mut tokens = 0;
    let mut ascii = 0usize;
    for c in text.chars() {
        if c.is_ascii_digit() || !c.is_ascii() {
            tokens += 1;
        } else {
            ascii += 1;
        }
    }
    tokens + ascii.div_ceil(3)
}

impl Generator for OpenAiGenerator {
    fn name(&self) -> String {
        match self.endpoint.model() {
            "" => format!("openai:{}", self.endpoint.base()),
            model => model.to_string(),
        }
    }

    fn count_tokens(&self, text: &str) -> Result<usize> {
        match &self.tokenizer {
            Some(t) => Ok(t.encode(text)?.len()),
            None => Ok(estimate_tokens(text)),
        }
    }

    fn fixed_tokens(&self, system: &str, examples: &[(&str, &str)]) -> Result<usize> {
        let Some(t) = &self.tokenizer else {
            return Ok(self.estimate_prompt(&ChatPrompt {
                system,
                examples,
                user: "",
            }));
        };
        // ChatML, as the in-process model renders it: <|im_start|>role\ntext<|im_end|>\n.
        let newline = t.encode("\n")?.len();
        let mut n = 1 + t.encode("user\n")?.len();
        let turns = std::iter::once(("system", system)).chain(
            examples
                .iter()
                .flat_map(|(u, a)| [("user", *u), ("assistant", *a)]),
        );
        for (role, text) in turns {
            n += 2 + newline + t.encode(&format!("{role}\n{text}"))?.len();
        }
        Ok(n)
    }

    fn generate(
        &self,
        prompt: &ChatPrompt,
        params: &SamplingParams,
        gate: Option<&RefusalGate>,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation> {
        self.endpoint
            .block_on(self.run(prompt, params, gate, on_text))
    }
}

/// What one response event means for the request.
enum Outcome {
    /// Keep reading.
    Continue,
    /// The caller cancelled.
    Cancelled,
    /// The reply starts with the gated marker below its threshold: ask
    /// again with these token ids banned.
    Vetoed(Vec<u64>),
}

/// The reply being read.
struct Reply<'g, 'f> {
    gate: Option<&'g RefusalGate>,
    on_text: &'f mut dyn FnMut(&str) -> bool,
    text: String,
    pieces: usize,
    first_text: Option<Instant>,
    finish: Option<Finish>,
    usage: Option<Value>,
    gate_probability: Option<f32>,
    gate_checked: bool,
    /// The log-probability of each token of the reply, as the server sent them.
    token_logprobs: Vec<f32>,
}

impl<'g, 'f> Reply<'g, 'f> {
    fn new(gate: Option<&'g RefusalGate>, on_text: &'f mut dyn FnMut(&str) -> bool) -> Self {
        Reply {
            gate,
            on_text,
            text: String::new(),
            pieces: 0,
            first_text: None,
            finish: None,
            usage: None,
            gate_probability: None,
            gate_checked: false,
            token_logprobs: Vec::new(),
        }
    }

    /// Prompt tokens (if the server said), of those cached, and generated
    /// tokens (counted as pieces if the server did not say), from `usage`.
    fn counts(&self) -> (Option<usize>, usize, usize) {
        let get = |pointer: &str| {
            self.usage
                .as_ref()
                .and_then(|u| u.pointer(pointer))
                .and_then(Value::as_u64)
                .map(|n| n as usize)
        };
        (
            get("/prompt_tokens"),
            get("/prompt_tokens_details/cached_tokens").unwrap_or(0),
            get("/completion_tokens").unwrap_or(self.pieces),
        )
    }

    /// Takes one completion (`field` = "message") or chunk ("delta").
    fn event(&mut self, v: &Value, field: &str, endpoint: &Endpoint) -> Result<Outcome> {
        if v.get("error").is_some() {
            return Err(endpoint.error(format!(
                "the server reported an error: {}",
                error_message(&v.to_string())
            )));
        }
        if let Some(usage) = v.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(usage.clone());
        }
        let Some(choice) = v.pointer("/choices/0") else {
            return Ok(Outcome::Continue);
        };
        let piece = choice
            .get(field)
            .and_then(|m| m.get("content"))
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty());
        // Only the reply's first token is gated: once text has gone to the
        // caller, nothing may make the request start again.
        if let (Some(gate), false) = (self.gate, self.gate_checked) {
            if let Some(first) = choice.pointer("/logprobs/content/0") {
                let (p, ids, chosen) = marker_probability(first, gate.marker);
                self.gate_probability = Some(p);
                if chosen && p < gate.threshold && !ids.is_empty() {
                    return Ok(Outcome::Vetoed(ids));
                }
            }
            if piece.is_some() {
                self.gate_checked = true;
            }
        }
        if let Some(content) = choice
            .pointer("/logprobs/content")
            .and_then(Value::as_array)
        {
            self.token_logprobs.extend(
                content
                    .iter()
                    .filter_map(|t| t.get("logprob").and_then(Value::as_f64))
                    .map(|lp| lp as f32),
            );
        }
        if let Some(piece) = piece {
            self.first_text.get_or_insert_with(Instant::now);
            self.text.push_str(piece);
            self.pieces += 1;
            if !(self.on_text)(piece) {
                return Ok(Outcome::Cancelled);
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish = Some(match reason {
                "length" => Finish::Length,
                _ => Finish::Stop,
            });
        }
        Ok(Outcome::Continue)
    }
}

/// From a position's log-probabilities: the probability of tokens that
/// start `marker` (at least two characters of it), their ids, and whether
/// the chosen token is one of them.
fn marker_probability(position: &Value, marker: &str) -> (f32, Vec<u64>, bool) {
    let starts_marker = |token: Option<&str>| {
        token
            .map(str::trim)
            .is_some_and(|t| t.len() >= 2 && marker.starts_with(t))
    };
    let chosen = starts_marker(position.get("token").and_then(Value::as_str));
    let mut p = 0f32;
    let mut ids = Vec::new();
    for candidate in position
        .get("top_logprobs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if !starts_marker(candidate.get("token").and_then(Value::as_str)) {
            continue;
        }
        if let Some(lp) = candidate.get("logprob").and_then(Value::as_f64) {
            p += lp.exp() as f32;
        }
        if let Some(id) = candidate.get("id").and_then(Value::as_u64) {
            ids.push(id);
        }
    }
    (p.min(1.0), ids, chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_estimates_count_chinese_characters_and_english_bytes() {
        // (Against a real tokenizer: tests/it/remote.rs.)
        assert_eq!(estimate_tokens("什么是"), 3);
        assert_eq!(estimate_tokens("The answer."), 4);
        assert_eq!(estimate_tokens("H100："), 5);
        assert_eq!(estimate_tokens(""), 0);
    }

    #[test]
    fn the_marker_probability_sums_its_starting_tokens() {
        let position = json!({
            "id": 4183, "token": "NOT", "logprob": -0.4,
            "top_logprobs": [
                {"id": 4183, "token": "NOT", "logprob": -0.4},
                {"id": 1, "token": "R", "logprob": -1.5},
                {"id": 537, "token": " NOT", "logprob": -3.0},
                {"id": 9, "token": "N", "logprob": -4.0},
            ]
        });
        let (p, ids, chosen) = marker_probability(&position, "NOT_IN_KB");
        assert!(chosen);
        assert_eq!(ids, vec![4183, 537]);
        let expected = ((-0.4f64).exp() + (-3.0f64).exp()) as f32;
        assert!((p - expected).abs() < 1e-5, "{p} vs {expected}");
        let other = json!({"token": "RL", "top_logprobs": []});
        assert_eq!(
            marker_probability(&other, "NOT_IN_KB"),
            (0.0, vec![], false)
        );
    }
}
