#!/usr/bin/env python3
"""Several knowledge bases in one `kbqa serve` (issue 22), measured.

Three knowledge bases of the same size (the shipped corpus, and two
copies of it under other names), indexed once. Then, per run, a fresh
`kbqa serve` with all three configured:
  1. one answer from the default knowledge base; resident memory (VmRSS);
  2. the same question to `copy1`, not yet open: its time (the open
     included), then again (open): the difference is the cost of opening;
  3. a BM25 search of `copy2`, not yet open, then again: the open alone;
  4. one answer from `copy2`; resident memory with all three open.
Medians over RUNS runs (default 3). Usage: benches/kbs_memory.py
"""

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "kbqa")
WORK = os.path.join(ROOT, "target", "kbs_bench")
RUNS = int(os.environ.get("RUNS", "3"))
QUESTION = "What does EFLOPS mean?"


def setup():
    os.makedirs(WORK, exist_ok=True)
    for name in ("copy1", "copy2"):
        dst = os.path.join(WORK, name)
        if not os.path.isdir(dst):
            shutil.copytree(os.path.join(ROOT, "corpus"), dst)
    config = os.path.join(WORK, "kbqa.toml")
    with open(config, "w") as f:
        f.write(f'corpus = "{ROOT}/corpus"\nindex_dir = "{WORK}/indexes"\n')
        for name in ("copy1", "copy2"):
            f.write(f'\n[kbs.{name}]\ncorpus = "{WORK}/{name}"\n')
    subprocess.run([BIN, "--config", config, "index", "--all"], check=True,
                   stderr=subprocess.DEVNULL)
    return config


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def ask(addr, kb):
    body = json.dumps({"question": QUESTION, "kb": kb}).encode()
    req = urllib.request.Request(f"http://{addr}/v1/ask", body,
                                 {"Content-Type": "application/json"})
    start = time.monotonic()
    with urllib.request.urlopen(req, timeout=300) as r:
        answer = json.load(r)
    return time.monotonic() - start, answer


def search(addr, kb):
    body = json.dumps({"query": "EFLOPS", "kb": kb, "mode": "bm25"}).encode()
    req = urllib.request.Request(f"http://{addr}/v1/search", body,
                                 {"Content-Type": "application/json"})
    start = time.monotonic()
    with urllib.request.urlopen(req, timeout=300) as r:
        json.load(r)
    return time.monotonic() - start


def one_run(config):
    server = subprocess.Popen(
        [BIN, "--config", config, "serve", "--addr", "127.0.0.1:0"],
        stderr=subprocess.PIPE, text=True,
        env={**os.environ, "KBQA_LOG": "warn"})
    try:
        addr = None
        for line in server.stderr:
            m = re.search(r"listening on http://(\S+)", line)
            if m:
                addr = m.group(1)
            if "kbqa: ready" in line:
                break
        assert addr, "kbqa serve did not start"
        ask(addr, "default")
        one = rss_mb(server.pid)
        first, a = ask(addr, "copy1")
        again, b = ask(addr, "copy1")
        assert a["answer"] == b["answer"]
        open_search = search(addr, "copy2")
        open_again = search(addr, "copy2")
        ask(addr, "copy2")
        three = rss_mb(server.pid)
        return one, three, first, again, open_search, open_again
    finally:
        server.terminate()
        server.wait()


def main():
    config = setup()
    runs = [one_run(config) for _ in range(RUNS)]
    one, three, first, again, s1, s2 = (statistics.median(x) for x in zip(*runs))
    print(f"runs: {RUNS}")
    for r in runs:
        print("  rss 1 kb %.0f MB, 3 kbs %.0f MB; copy1 answer first %.2f s, again %.2f s; "
              "copy2 search first %.3f s, again %.3f s" % r)
    print(f"median resident memory: 1 knowledge base {one:.0f} MB, 3 open {three:.0f} MB "
          f"(+{(three - one) / 2:.0f} MB per extra knowledge base)")
    print(f"median answer from a knowledge base not yet open {first:.2f} s, "
          f"once open {again:.2f} s (opening: {first - again:+.2f} s)")
    print(f"median BM25 search of a knowledge base not yet open {s1 * 1000:.0f} ms, "
          f"once open {s2 * 1000:.0f} ms")


if __name__ == "__main__":
    sys.exit(main())
