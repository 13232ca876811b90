//! `kbqa-llm-bench`: loads a GGUF chat model, runs one prompt of N tokens
//! (real text: the shipped article) and generates M tokens greedily
//! (ignoring end-of-turn, as llama-bench does), then prints one JSON line:
//! `{"load_s", "prefill_tok_s", "decode_tok_s", "peak_rss_mb"}`.
//! `benches/llm_vs_llamacpp.sh` runs it alternately with llama-bench.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use kbqa::models::decoder::Model;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let model_path = PathBuf::from(arg(&args, "--model").context("--model FILE is required")?);
    let threads: usize = arg(&args, "--threads").map_or(Ok(2), |v| v.parse())?;
    let prompt_tokens: usize = arg(&args, "--prompt-tokens").map_or(Ok(600), |v| v.parse())?;
    let gen_tokens: usize = arg(&args, "--gen-tokens").map_or(Ok(128), |v| v.parse())?;
    let text_path = arg(&args, "--text").unwrap_or_else(|| "corpus/article.md".into());
    kbqa::models::init_threads(threads);
    if let Some(message) = arg(&args, "--chat") {
        // Smoke mode: one user message through the chat template, greedy.
        let llm = kbqa::models::llm::Llm::load(&model_path, 2048)?;
        let (prefix, rest) = llm.chat_prompt("You are a helpful assistant.", &[], &message)?;
        let params = kbqa::engine::SamplingParams {
            max_new_tokens: 60,
            ..Default::default()
        };
        let g = llm.generate_tokens(&prefix, &rest, &params, &mut |_| true)?;
        println!("{}", g.text);
        return Ok(());
    }

    let start = Instant::now();
    let tokenizer = kbqa::models::gguf_tokenizer::GgufTokenizer::from_gguf(&model_path)?;
    let model = Model::load(&model_path)?;
    let load_s = start.elapsed().as_secs_f64();

    let text = std::fs::read_to_string(&text_path).with_context(|| text_path.clone())?;
    let mut ids = tokenizer.encode(&text)?;
    if ids.len() < prompt_tokens {
        bail!("{text_path} has only {} tokens", ids.len());
    }
    ids.truncate(prompt_tokens);
    let mut cache = model.new_cache(prompt_tokens + gen_tokens + 1);

    let t0 = Instant::now();
    let mut logits = model.forward(&ids, &mut cache, true)?.unwrap();
    let prefill = t0.elapsed().as_secs_f64();
    if let Some(ks) = arg(&args, "--batch") {
        return batched(&model, &cache, &ks, gen_tokens);
    }

    let t1 = Instant::now();
    for _ in 0..gen_tokens {
        let next = logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i as u32);
        logits = model.forward(&[next], &mut cache, true)?.unwrap();
    }
    let decode = t1.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "load_s": load_s,
            "prefill_tok_s": prompt_tokens as f64 / prefill,
            "decode_tok_s": gen_tokens as f64 / decode,
            "peak_rss_mb": peak_rss_mb(),
            "weight_mb": model.weight_bytes() as f64 / 1048576.0,
        })
    );
    Ok(())
}

/// `--batch 1,2,3,…`: batched decode after the same prompt. For each k,
/// k copies of the prompt's cache decode `steps` tokens together (each
/// its own greedy continuation), three times; prints one JSON line per k
/// with the median step time and its ratio to k = 1.
fn batched(
    model: &Model,
    prompt: &kbqa::models::decoder::KvCache,
    ks: &str,
    steps: usize,
) -> Result<()> {
    let ks: Vec<usize> = ks
        .split(',')
        .map(|k| k.trim().parse())
        .collect::<Result<_, _>>()
        .context("--batch takes numbers, e.g. 1,2,3")?;
    let mut one = None;
    for k in ks {
        let mut times = Vec::new();
        for _ in 0..3 {
            let mut caches: Vec<_> = (0..k)
                .map(|_| {
                    let mut c = model.new_cache(prompt.len() + steps + 1);
                    c.copy_prefix_from(prompt);
                    c
                })
                .collect();
            // Different first tokens, so the rows are different sequences.
            let mut next: Vec<u32> = (0..k as u32).map(|i| 100 + 37 * i).collect();
            let t = Instant::now();
            for _ in 0..steps {
                let mut refs: Vec<&mut _> = caches.iter_mut().collect();
                let logits = model.forward_batch(&next, &mut refs)?;
                next = logits
                    .iter()
                    .map(|l| {
                        l.iter()
                            .enumerate()
                            .max_by(|a, b| a.1.total_cmp(b.1))
                            .map_or(0, |(i, _)| i as u32)
                    })
                    .collect();
            }
            times.push(t.elapsed().as_secs_f64() * 1e3 / steps as f64);
        }
        times.sort_by(f64::total_cmp);
        let step_ms = times[1];
        let base = *one.get_or_insert(step_ms);
        println!(
            "{}",
            serde_json::json!({
                "k": k,
                "step_ms": step_ms,
                "vs_k1": step_ms / base,
                "tok_s": k as f64 * 1e3 / step_ms,
            })
        );
    }
    Ok(())
}
