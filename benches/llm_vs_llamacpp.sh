#!/usr/bin/env bash
# LLM speed: kbqa's in-process generator vs llama.cpp (llama-bench) on the
# same GGUF, same machine, 2 threads each, 600 prompt tokens and 128 new
# tokens. The engines run alternately, RUNS rounds, and the medians are
# printed as a Markdown table with the ratios kbqa/llama.cpp (for speed
# higher is better for kbqa, for RSS lower). Raw per-run numbers:
# target/bench/llm_vs_llamacpp.json.
#
# A benchmark, not a test: it fails only if something cannot run, never on
# the numbers. The first run builds llama.cpp (~10-15 min, cached outside
# the repo, see benches/build_llama_cpp.sh) and kbqa-llm-bench.
#
# Usage: benches/llm_vs_llamacpp.sh [MODEL] [RUNS]
#   MODEL  default $KBQA_BENCH_GGUF or
#          ~/.cache/kbqa/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
#   RUNS   default $RUNS or 3 (at least 3, so the median means something)
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL="${1:-${KBQA_BENCH_GGUF:-$HOME/.cache/kbqa/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf}}"
RUNS="${2:-${RUNS:-3}}"
THREADS=2
PROMPT_TOKENS=600
GEN_TOKENS=128
OUT_JSON=target/bench/llm_vs_llamacpp.json

if ! [[ "$RUNS" =~ ^[0-9]+$ ]] || (( RUNS < 3 )); then
  echo "RUNS must be an integer >= 3 (got '$RUNS')" >&2
  exit 2
fi
if [[ ! -f "$MODEL" ]]; then
  echo "model not found: $MODEL" >&2
  exit 2
fi
# GNU time, not the shell keyword: it reports peak RSS. Both engines are
# measured the same way, whatever kbqa reports about itself.
if [[ ! -x /usr/bin/time ]]; then
  echo "needs GNU time for peak RSS: apt-get install time" >&2
  exit 2
fi

# Neither engine should use more threads than the other through a side door.
export OMP_NUM_THREADS=$THREADS RAYON_NUM_THREADS=$THREADS
# llama.cpp's OpenMP barriers spin by default. With 2 threads on 2 cores,
# any other busy process (a cargo build, an eval) makes each of the hundreds
# of barriers per token wait for a descheduled thread: measured tg128 fell
# from ~29 to 0.4-1 tok/s under such load, while with passive waiting it
# stayed at ~29 and pp600 at ~127. kbqa's rayon workers park when idle too,
# so passive is also the like-for-like setting. Override to compare.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"

LLAMA_BIN="$(benches/build_llama_cpp.sh | tail -n 1)"
cargo build --release --bin kbqa-llm-bench
KBQA_BENCH=target/release/kbqa-llm-bench

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$(dirname "$OUT_JSON")"

# Runs a command with stdout/stderr/time report in $WORK/$1.{out,err,time};
# on failure shows the end of its stderr, since that is where both engines
# explain themselves.
measure() {
  local tag="$1"
  shift
  if ! /usr/bin/time -v -o "$WORK/$tag.time" "$@" > "$WORK/$tag.out" 2> "$WORK/$tag.err"; then
    echo "failed: $*" >&2
    tail -n 30 "$WORK/$tag.err" >&2
    exit 1
  fi
}

run_llama() {
  local r="$1"
  echo "round $r/$RUNS: llama.cpp" >&2
  measure "llama-$r" "$LLAMA_BIN/llama-bench" -m "$MODEL" -t "$THREADS" \
    -p "$PROMPT_TOKENS" -n "$GEN_TOKENS" -r 1 -o json
  # llama-bench's tg128 decodes from an empty context, while kbqa decodes
  # after its 600-token prompt, and decode slows as the KV cache grows. This
  # second run (prompt filled untimed, then 128 tokens timed) is the
  # like-for-like decode figure.
  measure "llama-depth-$r" "$LLAMA_BIN/llama-bench" -m "$MODEL" -t "$THREADS" \
    -p 0 -n "$GEN_TOKENS" -d "$PROMPT_TOKENS" -r 1 -o json
}

run_kbqa() {
  local r="$1"
  echo "round $r/$RUNS: kbqa" >&2
  measure "kbqa-$r" "$KBQA_BENCH" --model "$MODEL" --threads "$THREADS" \
    --prompt-tokens "$PROMPT_TOKENS" --gen-tokens "$GEN_TOKENS"
}

# The numbers are only meaningful on an otherwise idle machine: warn rather
# than refuse, since a rough comparison is still useful. (Sampled from
# /proc/stat over one second after the builds; the load average would still
# remember our own compiling.)
CPU_BUSY_BEFORE="$(python3 - <<'PY'
import time
def snap():
    v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return sum(v), v[3] + v[4]  # total, idle + iowait
t0, i0 = snap(); time.sleep(1); t1, i1 = snap()
print(round(100 * (1 - (i1 - i0) / max(t1 - t0, 1))))
PY
)"
if (( CPU_BUSY_BEFORE > 20 )); then
  echo "warning: CPU ${CPU_BUSY_BEFORE}% busy before the benchmark; other processes skew the numbers" >&2
fi

# Swap who goes first every round so neither engine always inherits the
# other's warm page cache or a throttled CPU.
for r in $(seq "$RUNS"); do
  if (( r % 2 )); then
    run_llama "$r"; run_kbqa "$r"
  else
    run_kbqa "$r"; run_llama "$r"
  fi
done

python3 - "$WORK" "$RUNS" "$MODEL" "$LLAMA_BIN" "$OUT_JSON" "$PROMPT_TOKENS" "$GEN_TOKENS" "$THREADS" "$CPU_BUSY_BEFORE" <<'PY'
import json, os, re, statistics, subprocess, sys, time

work, runs, model, llama_bin, out_json = sys.argv[1], int(sys.argv[2]), *sys.argv[3:6]
prompt, gen, threads = (int(x) for x in sys.argv[6:9])
cpu_busy_before = int(sys.argv[9])

def peak_rss_mb(tag):
    text = open(f"{work}/{tag}.time").read()
    return int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1)) / 1024

def llama_bench(tag):
    """avg_ts of each llama-bench test, keyed by (n_prompt, n_gen, n_depth)."""
    return {(t["n_prompt"], t["n_gen"], t.get("n_depth", 0)): t["avg_ts"]
            for t in json.load(open(f"{work}/{tag}.out"))}

llama, kbqa = [], []
for r in range(1, runs + 1):
    main, depth = llama_bench(f"llama-{r}"), llama_bench(f"llama-depth-{r}")
    llama.append({
        "prefill_tok_s": main[(prompt, 0, 0)],
        "decode_tok_s": main[(0, gen, 0)],
        "decode_after_prompt_tok_s": depth[(0, gen, prompt)],
        "peak_rss_mb": peak_rss_mb(f"llama-{r}"),
    })
    # The contract is one JSON line on stdout; take the last non-empty line
    # so a stray print before it does not break the parse.
    lines = [l for l in open(f"{work}/kbqa-{r}.out").read().splitlines() if l.strip()]
    k = json.loads(lines[-1])
    kbqa.append({
        "load_s": k["load_s"],
        "prefill_tok_s": k["prefill_tok_s"],
        "decode_tok_s": k["decode_tok_s"],
        "peak_rss_mb": peak_rss_mb(f"kbqa-{r}"),
        "peak_rss_mb_self_reported": k["peak_rss_mb"],
    })

med = lambda rows, key: statistics.median(x[key] for x in rows)
L = {k: med(llama, k) for k in llama[0]}
K = {k: med(kbqa, k) for k in kbqa[0]}

def git_rev():
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
        return (rev + ("-dirty" if dirty else "")) if rev else None
    except OSError:
        return None

def cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()

json.dump({
    "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    "git": git_rev(),
    "cpu": cpu_model(),
    "model": model,
    "threads": threads,
    "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    "cpu_busy_percent_before": cpu_busy_before,
    "prompt_tokens": prompt,
    "gen_tokens": gen,
    "llama_cpp": {"bin": llama_bin, "runs": llama, "median": L},
    "kbqa": {"runs": kbqa, "median": K},
}, open(out_json, "w"), indent=2)

print(f"\nLLM, {model.rsplit('/', 1)[-1]}, {threads} threads, {prompt}-token prompt, "
      f"{gen} new tokens; medians of {runs} alternating runs\n")
# Decode is compared after the prompt (like for like); llama-bench's usual
# empty-context tg figure is shown in brackets.
print("| engine | prefill tok/s | decode tok/s | peak RSS MB | load s |")
print("|---|---|---|---|---|")
print(f"| llama.cpp (llama-bench) | {L['prefill_tok_s']:.1f} "
      f"| {L['decode_after_prompt_tok_s']:.1f} ({L['decode_tok_s']:.1f} from empty context) "
      f"| {L['peak_rss_mb']:.0f} | – |")
print(f"| kbqa | {K['prefill_tok_s']:.1f} | {K['decode_tok_s']:.1f} "
      f"| {K['peak_rss_mb']:.0f} | {K['load_s']:.2f} |")
print(f"| kbqa / llama.cpp | {K['prefill_tok_s'] / L['prefill_tok_s']:.2f}x "
      f"| {K['decode_tok_s'] / L['decode_after_prompt_tok_s']:.2f}x "
      f"({K['decode_tok_s'] / L['decode_tok_s']:.2f}x vs empty context) "
      f"| {K['peak_rss_mb'] / L['peak_rss_mb']:.2f}x (lower is better) | – |")
print(f"\nllama.cpp prefill = pp{prompt}; decode = tg{gen} after a {prompt}-token context "
      f"(-d {prompt}), as kbqa decodes after its prompt. Peak RSS from /usr/bin/time for both "
      f"(llama.cpp: the pp/tg run). Raw runs: {out_json}")
PY
