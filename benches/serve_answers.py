#!/usr/bin/env python3
"""A warm `kbqa serve` answering the whole eval set, one question at a time,
with the answer pipeline as shipped (the default config).

For each question (POST /v1/ask with "stream": true, over loopback):
the time to the `answer` event (the first answer text a client sees: text
is released only once checked) and to `done`. Where the time goes comes
from the server's own spans (`KBQA_LOG=kbqa=debug` prints each span's time
when it closes): embed (the question's vector), retrieve (BM25 + vector
search and fusion), focus (choosing the sentences shown; embeds the
passages' sentences), prompt, prefill, decode, check (the checks, the
citations and the language check).

The server is started once and asked one warm-up question first (not
counted), so models and index are loaded. Reported: p50/p95 of each, over
all questions and per language; written to target/bench/serve_answers.json
(the server's log beside it).

Usage: benches/serve_answers.py [SET]   (default tests/eval/qa.jsonl)
"""

import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "kbqa")
SET = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests", "eval", "qa.jsonl")
OUT = os.path.join(ROOT, "target", "bench", "serve_answers.json")
STAGES = ["embed", "retrieve", "focus", "prompt", "prefill", "decode", "check"]
# Spans counted as part of a stage.
STAGE_OF = {"embed": "embed", "retrieve": "retrieve", "focus": "focus", "prompt": "prompt",
            "prefill": "prefill", "decode": "decode", "check": "check", "cite": "check",
            "language": "check"}
# `<level> <span>{fields}:<span>…: <target>: close time.busy=…` (fields may hold spaces).
CLOSE = re.compile(r"(?:TRACE|DEBUG|INFO|WARN|ERROR)\s+(.+?): kbqa[\w:]*: close time\.busy=([0-9.]+)(ns|µs|ms|s) ")
FIELDS = re.compile(r"\{[^{}]*\}")
UNIT = {"ns": 1e-6, "µs": 1e-3, "ms": 1.0, "s": 1e3}


def ask(addr, question):
    """(ms to the answer event, ms to done, the answer JSON)."""
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=600)
    body = json.dumps({"question": question, "stream": True})
    t0 = time.monotonic()
    conn.request("POST", "/v1/ask", body, {"content-type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"{resp.status}: {resp.read()[:300]!r}")
    event, first, done = None, None, None
    for raw in resp:
        line = raw.decode().rstrip("\n")
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:") and event == "answer" and first is None:
            first = (time.monotonic() - t0) * 1e3
        elif line.startswith("data:") and event == "done":
            done = json.loads(line[5:])
            break
        elif line.startswith("data:") and event == "error":
            raise RuntimeError(line)
    total = (time.monotonic() - t0) * 1e3
    conn.close()
    return first, total, done


def stages_by_answer(log_path):
    """Per answer (in order), the milliseconds of each stage."""
    out, current = [], {s: 0.0 for s in STAGES}
    with open(log_path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = CLOSE.search(line)
            if not m:
                continue
            path = FIELDS.sub("", m.group(1)).split(":")
            name = path[-1]
            ms = float(m.group(2)) * UNIT[m.group(3)]
            if name == "ask":
                out.append(current)
                current = {s: 0.0 for s in STAGES}
            elif name in STAGE_OF and not any(p in STAGE_OF for p in path[:-1]):
                # Only the outermost stage counts: a translation's prefill
                # inside the language check is the check's time.
                current[STAGE_OF[name]] += ms
    return out


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    items = [json.loads(l) for l in open(SET, encoding="utf-8") if l.strip()]
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    log = OUT.replace(".json", ".log")
    env = dict(os.environ, KBQA_LOG="warn,kbqa=debug")
    server = subprocess.Popen([BIN, "serve", "--addr", "127.0.0.1:0"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    try:
        addr = None
        for _ in range(1200):
            text = open(log, encoding="utf-8", errors="replace").read()
            m = re.search(r"listening on http://(\S+)", text)
            if m:
                addr = m.group(1)
                break
            if server.poll() is not None:
                sys.exit(f"kbqa serve exited:\n{text[-2000:]}")
            time.sleep(0.5)
        if not addr:
            sys.exit("kbqa serve did not start")
        host, port = addr.rsplit(":", 1)
        for _ in range(1200):
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            conn.request("GET", "/readyz")
            ready = conn.getresponse().status == 200
            conn.close()
            if ready:
                break
            time.sleep(0.5)
        ask(addr, "What is this knowledge base about?")  # warm-up, not counted
        rows = []
        for i, item in enumerate(items):
            first, total, done = ask(addr, item["question"])
            rows.append({"id": item["id"], "lang": item["lang"],
                         "in_scope": item.get("in_scope", True),
                         "first_text_ms": first, "total_ms": total,
                         "status": done.get("status"),
                         "prompt_tokens": done["timings"]["prompt_tokens"],
                         "generated_tokens": done["timings"]["generated_tokens"]})
            print(f"{i + 1}/{len(items)} {item['id']} {first:.0f} ms", file=sys.stderr)
    finally:
        server.terminate()
        server.wait()
    stages = stages_by_answer(log)[1:]  # the warm-up first
    if len(stages) != len(rows):
        sys.exit(f"{len(stages)} answers in the log, {len(rows)} asked")
    for r, s in zip(rows, stages):
        r["stages_ms"] = s
    with open(OUT, "w") as f:
        json.dump(rows, f, indent=1, ensure_ascii=False)

    def line(label, rs):
        cells = [f"{pct([r['first_text_ms'] for r in rs], 50) / 1e3:.2f}",
                 f"{pct([r['first_text_ms'] for r in rs], 95) / 1e3:.2f}",
                 f"{pct([r['total_ms'] for r in rs], 50) / 1e3:.2f}"]
        cells += [f"{statistics.median(r['stages_ms'][s] for r in rs):.0f}" for s in STAGES]
        cells += [f"{statistics.mean(r['stages_ms'][s] for r in rs):.0f}" for s in ("prefill", "decode")]
        print(f"| {label} ({len(rs)}) | " + " | ".join(cells) + " |")

    print("| questions | first checked text p50 s | p95 s | total p50 s | "
          + " | ".join(f"{s} p50 ms" for s in STAGES) + " | prefill mean ms | decode mean ms |")
    print("|---|" + "---|" * (3 + len(STAGES) + 2))
    line("all", rows)
    for lang in sorted({r["lang"] for r in rows}):
        line(lang, [r for r in rows if r["lang"] == lang])
    print(f"\nprompt tokens p50 {statistics.median(r['prompt_tokens'] for r in rows):.0f}, "
          f"generated p50 {statistics.median(r['generated_tokens'] for r in rows):.0f}; "
          f"per-question rows in {os.path.relpath(OUT, ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
