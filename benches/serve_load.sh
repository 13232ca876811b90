#!/usr/bin/env bash
# HTTP service under load, side by side with its references, in one run:
#
# 1. Searches (wrk, POST /v1/search, 4 connections) on an idle server vs
#    the same while answers are being generated back to back: do searches
#    wait behind generation? Reported: requests/s, p50 and p99 latency,
#    ratio busy/idle.
# 2. One answer over HTTP (curl POST /v1/ask, model already loaded) vs the
#    one-shot CLI (`kbqa ask --json`, which loads the model each time),
#    timed by hyperfine: wall time, median and ratio.
#
# Rounds alternate idle/busy RUNS times; medians are reported. A benchmark,
# not a test: it fails only if something cannot run, never on the numbers.
# Needs wrk, hyperfine and curl (Debian packages).
#
# Usage: benches/serve_load.sh [RUNS]   (default 3; writes target/bench/serve_load.json)
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS="${1:-${RUNS:-3}}"
DURATION=15s
OUT_JSON=target/bench/serve_load.json
for tool in wrk hyperfine curl; do
  command -v "$tool" >/dev/null || { echo "needs $tool: apt-get install $tool" >&2; exit 2; }
done
if ! [[ "$RUNS" =~ ^[0-9]+$ ]] || (( RUNS < 3 )); then
  echo "RUNS must be an integer >= 3 (got '$RUNS')" >&2
  exit 2
fi

cargo build --release --quiet
KBQA=target/release/kbqa
mkdir -p target/bench
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

"$KBQA" index >/dev/null 2>&1 || true
"$KBQA" serve --addr 127.0.0.1:0 2>"$WORK/serve.log" &
for _ in $(seq 1 600); do
  ADDR=$(sed -n 's/.*listening on http:\/\/\(.*\)$/\1/p' "$WORK/serve.log" | head -1)
  [[ -n "$ADDR" ]] && curl -sf "http://$ADDR/readyz" >/dev/null && break
  sleep 0.2
done
curl -sf "http://$ADDR/readyz" >/dev/null || { cat "$WORK/serve.log"; exit 1; }
URL="http://$ADDR"

cat > "$WORK/search.lua" <<'EOF'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local queries = {"什么是RLHF", "What does EFLOPS mean?", "昇腾910B的算力", "数据并行", "transformer attention"}
local i = 0
request = function()
  i = i % #queries + 1
  return wrk.format(nil, nil, nil, '{"query":"' .. queries[i] .. '","k":5}')
end
EOF

# Answers back to back, for the "busy" rounds.
answer_loop() {
  local qs=("什么是RLHF？" "What does EFLOPS mean?" "什么是数据并行？" "What is SFT?")
  local i=0
  while :; do
    curl -s -o /dev/null -X POST "$URL/v1/ask" -H 'Content-Type: application/json' \
      -d "{\"question\":\"${qs[$((i % 4))]}\"}" || true
    i=$((i + 1))
  done
}

# wrk --latency output → "rps p50_ms p99_ms"
wrk_run() {
  wrk -t1 -c4 -d"$DURATION" --latency -s "$WORK/search.lua" "$URL/v1/search" > "$WORK/wrk.txt"
  python3 - "$WORK/wrk.txt" <<'EOF'
import re, sys
t = open(sys.argv[1]).read()
def ms(label):
    m = re.search(r"^\s*" + label + r"\s+([\d.]+)(us|ms|s)\s*$", t, re.M)
    v, u = float(m.group(1)), m.group(2)
    return v / 1000 if u == "us" else v * 1000 if u == "s" else v
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print(rps, ms("50%"), ms("99%"), int(errors.group(1)) if errors else 0)
EOF
}

echo "rounds: $RUNS × (idle, busy) search load of $DURATION each" >&2
: > "$WORK/search.tsv"
for r in $(seq 1 "$RUNS"); do
  echo "idle $r $(wrk_run)" >> "$WORK/search.tsv"
  answer_loop & LOOP=$!
  sleep 3 # let an answer start
  echo "busy $r $(wrk_run)" >> "$WORK/search.tsv"
  kill "$LOOP"; wait "$LOOP" 2>/dev/null || true
  sleep 8 # the running answer finishes
done

echo "one answer: HTTP (model loaded) vs one-shot CLI" >&2
hyperfine --runs "$RUNS" --warmup 1 --export-json "$WORK/ask.json" \
  -n http "curl -sf -X POST $URL/v1/ask -H 'Content-Type: application/json' -d '{\"question\":\"什么是RLHF？\"}' -o /dev/null" \
  -n cli "$KBQA ask --json '什么是RLHF？' > /dev/null 2>&1" >&2

python3 - "$WORK/search.tsv" "$WORK/ask.json" "$OUT_JSON" <<'EOF'
import json, statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
def med(kind, i):
    return statistics.median(float(r[i]) for r in rows if r[0] == kind)
search = {k: {"rps": med(k, 2), "p50_ms": med(k, 3), "p99_ms": med(k, 4),
              "non_2xx": sum(int(r[5]) for r in rows if r[0] == k)} for k in ("idle", "busy")}
ask = {r["command"]: statistics.median(r["times"]) for r in json.load(open(sys.argv[2]))["results"]}
json.dump({"search": search, "search_runs": rows, "ask_s": ask}, open(sys.argv[3], "w"), indent=2)
i, b = search["idle"], search["busy"]
print("| /v1/search, 4 connections | idle server | while answering | busy/idle |")
print("|---|---|---|---|")
print(f"| requests/s | {i['rps']:.0f} | {b['rps']:.0f} | {b['rps']/i['rps']:.2f}× |")
print(f"| p50 latency | {i['p50_ms']:.1f} ms | {b['p50_ms']:.1f} ms | {b['p50_ms']/i['p50_ms']:.2f}× |")
print(f"| p99 latency | {i['p99_ms']:.1f} ms | {b['p99_ms']:.1f} ms | {b['p99_ms']/i['p99_ms']:.2f}× |")
print(f"| non-2xx responses | {i['non_2xx']} | {b['non_2xx']} | |")
print()
print("| one answer (什么是RLHF？) | median wall time |")
print("|---|---|")
print(f"| HTTP `/v1/ask` (model loaded once) | {ask['http']:.2f} s |")
print(f"| CLI `kbqa ask --json` (loads the model) | {ask['cli']:.2f} s |")
print(f"| ratio HTTP/CLI | {ask['http']/ask['cli']:.2f}× |")
EOF
