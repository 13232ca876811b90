#!/usr/bin/env python3
"""A fresh `kbqa ask` process, with the chat model repacked from its GGUF
(`KBQA_KEEP_PACKED=false`, as before) and mapped from its packed copy
(`models.keep_packed`, the default), in turn, RUNS times each (default 5);
medians. Each run is a new process on a warm page cache, after the first
run (index built, models fetched, the packed copy written).

Reported per setting: the wall time of the process, its start (everything
before the answer begins: index open, both models loaded), the model's
load time (kbqa's own "loaded in" line), the time from the process's start to the
answer's first token and to its checked text, and the answer's stages
(retrieve, prefill, decode) from its JSON.

Usage: benches/cli_start.py ["question" ...]
"""

import json
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "kbqa")
RUNS = int(os.environ.get("RUNS", "5"))
QUESTIONS = sys.argv[1:] or ["什么是RLHF？", "What does EFLOPS mean?"]


def run(question, keep_packed):
    env = dict(os.environ, KBQA_KEEP_PACKED="true" if keep_packed else "false")
    t0 = time.monotonic()
    out = subprocess.run([BIN, "ask", "--json", question], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True)
    wall = time.monotonic() - t0
    answer = json.loads(out.stdout)
    loaded = float(re.search(r"loaded in ([0-9.]+) s", out.stderr).group(1))
    t = answer["timings"] if "timings" in answer else answer
    # Before the answer starts: opening the index and loading the models.
    before = wall - t["total_ms"] / 1000
    return {
        "wall s": wall,
        "start s": before,
        "model load s": loaded,
        "first token s": before + (t.get("first_token_ms") or t["total_ms"]) / 1000,
        "checked text s": before + t["total_ms"] / 1000,
        "retrieve ms": t["retrieve_ms"],
        "prefill ms": t["prefill_ms"],
        "decode ms": t["decode_ms"],
    }


def main():
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    # The first run: index, models and the packed copy in place.
    run(QUESTIONS[0], True)
    results = {False: [], True: []}
    for i in range(RUNS):
        for q in QUESTIONS:
            for keep in (False, True):
                results[keep].append(run(q, keep))
    keys = list(results[True][0].keys())
    print("| setting | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for keep, label in ((False, "repacked from the GGUF"), (True, "packed copy mapped (default)")):
        med = {k: statistics.median(r[k] for r in results[keep]) for k in keys}
        print(f"| {label} | " + " | ".join(
            f"{med[k]:.2f}" if k.endswith(" s") else f"{med[k]:.0f}" for k in keys) + " |")
    a, b = (statistics.median(r["wall s"] for r in results[k]) for k in (False, True))
    print(f"\nwall time, packed / repacked: {b / a:.2f}x "
          f"({RUNS} runs x {len(QUESTIONS)} questions each)")


if __name__ == "__main__":
    sys.exit(main())
