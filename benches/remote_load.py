"""16 concurrent asks: `kbqa serve` generating in process vs through a
model server (llama.cpp's llama-server, OpenAI protocol), same machine,
same default GGUF, one run, rounds interleaved.

Setups:
- local:      kbqa serve, in-process candle model, 1 worker (generation
              uses every core; more workers only add latency);
- remote-np1: kbqa serve (1 worker) -> llama-server with 1 slot;
- remote-np4: kbqa serve (4 workers) -> llama-server with 4 slots
              (continuous batching: 4 answers decoded together).

Each round starts all 16 asks (16 different questions from the eval set,
POST /v1/ask, greedy) at once against each setup in turn. The queue is
large enough that nothing is refused, so latency includes queueing.
Reported per setup: throughput (answers per minute, median of rounds),
latency p50 / p99 over all asks of all rounds, non-200 count, grounded
count. Writes target/bench/remote_load.json and prints a Markdown table.

Usage: python3 benches/remote_load.py KBQA LLAMA_SERVER GGUF WORKDIR [ROUNDS]
"""

import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

kbqa, llama_server, gguf, work = sys.argv[1:5]
rounds = int(sys.argv[5]) if len(sys.argv) > 5 else 3
CONCURRENT = 16

questions = []
for line in open("tests/eval/qa.jsonl", encoding="utf-8"):
    item = json.loads(line)
    if item["in_scope"]:
        questions.append(item["question"])
# Alternate languages: the first 16 in-scope questions, zh and en mixed.
questions = questions[:CONCURRENT]
assert len(questions) == CONCURRENT


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_http(host, port, path, seconds=300):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            c = http.client.HTTPConnection(host, port, timeout=5)
            c.request("GET", path)
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{host}:{port}{path} never became ready")


def start_llama(slots):
    port = free_port()
    log = open(os.path.join(work, f"llama-np{slots}.log"), "w")
    proc = subprocess.Popen(
        [llama_server, "-m", gguf, "--host", "127.0.0.1", "--port", str(port),
         "-t", "2", "-np", str(slots), "-c", str(2048 * slots)],
        stdout=log, stderr=log, env=dict(os.environ, OMP_WAIT_POLICY="passive"))
    wait_http("127.0.0.1", port, "/health")
    return proc, f"http://127.0.0.1:{port}/v1"


def start_kbqa(env_extra):
    log = open(os.path.join(work, "serve-%d.log" % time.time_ns()), "w+")
    env = dict(os.environ, KBQA_QUEUE="64", KBQA_DEADLINE_SECS="1800", KBQA_LOG="warn")
    env.update(env_extra)
    proc = subprocess.Popen([kbqa, "serve", "--addr", "127.0.0.1:0"], stderr=log, env=env)
    addr = None
    for _ in range(3000):
        log.seek(0)
        for line in log:
            if "listening on http://" in line:
                addr = line.split("listening on http://")[1].strip()
        if addr:
            break
        time.sleep(0.1)
    host, port = addr.rsplit(":", 1)
    wait_http(host, int(port), "/readyz")
    return proc, host, int(port)


def ask(host, port, question, out):
    t = time.perf_counter()
    c = http.client.HTTPConnection(host, port, timeout=1800)
    body = json.dumps({"question": question})
    c.request("POST", "/v1/ask", body, {"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    grounded = r.status == 200 and json.loads(data).get("grounded", False)
    out.append((time.perf_counter() - t, r.status, grounded))


def burst(host, port):
    out = []
    threads = [threading.Thread(target=ask, args=(host, port, q, out)) for q in questions]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return time.perf_counter() - t, out


setups = {
    "local": (None, {"KBQA_WORKERS": "1"}),
    "remote-np1": (1, {"KBQA_WORKERS": "1"}),
    "remote-np4": (4, {"KBQA_WORKERS": "4"}),
}
results = {name: {"walls": [], "asks": []} for name in setups}
for r in range(rounds):
    for name, (slots, env) in setups.items():
        llama = None
        if slots:
            llama, url = start_llama(slots)
            env = dict(env, KBQA_GENERATOR="openai", KBQA_LLM_URL=url,
                       KBQA_LLM_MODEL="qwen2.5-coder-0.5b", KBQA_LLM_TOKENIZER=gguf)
        server, host, port = start_kbqa(env)
        try:
            # One warm-up answer: the prompt prefix is cached in both engines.
            ask(host, port, "What does EFLOPS mean?", [])
            wall, asks = burst(host, port)
        finally:
            server.terminate()
            server.wait()
            if llama:
                llama.terminate()
                llama.wait()
        results[name]["walls"].append(wall)
        results[name]["asks"].extend(asks)
        ok = sum(1 for a in asks if a[1] == 200)
        print(f"round {r + 1} {name}: {wall:.1f} s for {len(asks)} asks ({ok} ok)", file=sys.stderr)


def pct(values, p):
    values = sorted(values)
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


summary = {}
for name, r in results.items():
    lat = [a[0] for a in r["asks"]]
    summary[name] = {
        "answers_per_min": statistics.median(CONCURRENT / w * 60 for w in r["walls"]),
        "p50_s": pct(lat, 50),
        "p99_s": pct(lat, 99),
        "non_200": sum(1 for a in r["asks"] if a[1] != 200),
        "grounded": sum(1 for a in r["asks"] if a[2]),
        "asks": len(r["asks"]),
        "walls_s": r["walls"],
    }
os.makedirs("target/bench", exist_ok=True)
json.dump({"rounds": rounds, "concurrent": CONCURRENT, "setups": summary},
          open("target/bench/remote_load.json", "w"), indent=2)

base = summary["local"]
print(f"| {CONCURRENT} concurrent asks × {rounds} rounds | answers/min (median) | ratio | p50 latency | p99 latency | non-200 | grounded |")
print("|---|---|---|---|---|---|---|")
for name, s in summary.items():
    print(f"| {name} | {s['answers_per_min']:.1f} | {s['answers_per_min'] / base['answers_per_min']:.2f}× "
          f"| {s['p50_s']:.1f} s | {s['p99_s']:.1f} s | {s['non_200']} | {s['grounded']}/{s['asks']} |")
