#!/usr/bin/env python3
"""A `kbqa serve` replica on the local backend against one on the shared
database (the shipped corpus, 133 chunks), measured side by side.

Per run, for each backend in turn (local; postgres with BM25 in a tantivy
index built in memory; postgres with BM25 in SQL): a fresh `kbqa serve`,
its time to ready, 200 hybrid searches over HTTP (the eval set's
questions, k = 5, one client) for p50/p99, then one answer, then its
resident memory (VmRSS). Medians over RUNS runs (default 3).

Usage: benches/pg_replicas.py   (starts its own PostgreSQL with
tests/pg/start.sh unless KBQA_DATABASE_URL is set)
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "kbqa")
RUNS = int(os.environ.get("RUNS", "3"))
SEARCHES = 200


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def post(addr, path, body):
    req = urllib.request.Request(f"http://{addr}{path}", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def start(env, index_dir):
    proc = subprocess.Popen(
        [BIN, "--index-dir", index_dir, "serve", "--addr", "127.0.0.1:0"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    addr = None
    for line in proc.stderr:
        if "listening on http://" in line:
            addr = line.split("http://")[1].strip()
            break
    while True:
        try:
            with urllib.request.urlopen(f"http://{addr}/readyz", timeout=5) as r:
                if r.status == 200:
                    break
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.05)
    return proc, addr, time.monotonic() - t0


def main():
    questions = [json.loads(l)["question"] for l in open(os.path.join(ROOT, "tests/eval/qa.jsonl"))]
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    url = os.environ.get("KBQA_DATABASE_URL")
    data = None
    if not url:
        data = tempfile.mkdtemp()
        url = subprocess.run([os.path.join(ROOT, "tests/pg/start.sh"), data], check=True,
                             capture_output=True, text=True).stdout.strip()
    local_index = tempfile.mkdtemp()
    base = dict(os.environ, KBQA_DATABASE_URL=url)
    base.pop("KBQA_INDEX_BACKEND", None)
    subprocess.run([BIN, "--index-dir", local_index, "index"], cwd=ROOT, env=base, check=True,
                   stderr=subprocess.DEVNULL)
    subprocess.run([BIN, "index"], cwd=ROOT, check=True, stderr=subprocess.DEVNULL,
                   env=dict(base, KBQA_INDEX_BACKEND="postgres"))
    setups = {
        "local": base,
        "postgres (tantivy in the replica)": dict(base, KBQA_INDEX_BACKEND="postgres"),
        "postgres (BM25 in SQL)": dict(base, KBQA_INDEX_BACKEND="postgres",
                                       KBQA_DATABASE_LEXICAL="fts"),
    }
    results = {name: {"ready": [], "p50": [], "p99": [], "rss": []} for name in setups}
    for _ in range(RUNS):
        for name, env in setups.items():
            # A replica of the database gets no corpus and an empty index folder.
            replica_dir = local_index if name == "local" else tempfile.mkdtemp()
            if name != "local":
                env = dict(env, KBQA_CORPUS=os.path.join(replica_dir, "no-corpus"))
            proc, addr, ready = start(env, replica_dir)
            try:
                times = []
                for i in range(SEARCHES):
                    t = time.monotonic()
                    post(addr, "/v1/search", {"query": questions[i % len(questions)], "k": 5})
                    times.append((time.monotonic() - t) * 1000)
                times.sort()
                post(addr, "/v1/ask", {"question": "什么是RLHF？"})
                r = results[name]
                r["ready"].append(ready)
                r["p50"].append(times[len(times) // 2])
                r["p99"].append(times[int(len(times) * 0.99) - 1])
                r["rss"].append(rss_mb(proc.pid))
            finally:
                proc.terminate()
                proc.wait()
    print(f"| replica | ready s | search p50 ms | search p99 ms | RSS after an answer MB |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        m = {k: statistics.median(v) for k, v in r.items()}
        print(f"| {name} | {m['ready']:.2f} | {m['p50']:.2f} | {m['p99']:.2f} | {m['rss']:.0f} |")
    if data:
        subprocess.run([os.path.join(ROOT, "tests/pg/start.sh"), "--stop", data], check=False)


if __name__ == "__main__":
    sys.exit(main())
