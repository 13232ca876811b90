"""Soak: `kbqa serve` under mixed load for a while (default 10 minutes).

Load, all at once:
- 2 search clients in a loop (POST /v1/search);
- 1 streaming ask client that reads every answer to the end;
- 1 client that starts streaming asks and disconnects after the first
  token (its answer must stop and free the worker);
- every minute: a corpus file changes, `kbqa index` builds a new
  generation, and POST /admin/reload makes it live.

Reported: requests by status (from the server's /metrics and from the
clients), 5xx count (must be 0), the server's RSS sampled every 30 s
(start, end, max), and the workers and queue after the load stops (must
be 0). Writes target/bench/soak.json and prints a Markdown table.

Usage: python3 benches/soak.py KBQA_BINARY WORKDIR [SECONDS]
"""

import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time

kbqa, work = sys.argv[1], sys.argv[2]
seconds = int(sys.argv[3]) if len(sys.argv) > 3 else 600
corpus, index_dir = os.path.join(work, "kb"), os.path.join(work, "idx")
shutil.copytree("corpus", corpus)
base = [kbqa, "--corpus", corpus, "--index-dir", index_dir]
subprocess.run(base + ["index"], check=True, capture_output=True)

env = dict(os.environ, KBQA_ADMIN_KEYS="soak-admin", KBQA_QUEUE="4", KBQA_LOG="warn")
log = open(os.path.join(work, "serve.log"), "w+")
server = subprocess.Popen(base + ["serve", "--addr", "127.0.0.1:0"], stderr=log, env=env)
addr = None
for _ in range(600):
    log.seek(0)
    m = re.search(r"listening on http://(\S+)", log.read())
    if m:
        addr = m.group(1)
        break
    time.sleep(0.1)
host, port = addr.split(":")


def call(method, path, body=None, headers=None, timeout=300):
    c = http.client.HTTPConnection(host, int(port), timeout=timeout)
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    c.request(method, path, body=None if body is None else json.dumps(body), headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


while True:
    try:
        if call("GET", "/readyz")[0] == 200:
            break
    except OSError:
        pass
    time.sleep(0.2)


def rss_mb():
    with open(f"/proc/{server.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


print(f"soak: server ready at {addr}; warming up", file=sys.stderr)
call("POST", "/v1/ask", {"question": "什么是RLHF？"})  # warm: prefix cache, embedder
print(f"soak: load for {seconds} s", file=sys.stderr)
stop = threading.Event()
lock = threading.Lock()
client_status = {}
rss = [(0.0, rss_mb())]
reloads = []


def count(kind, status):
    with lock:
        key = f"{kind} {status}"
        client_status[key] = client_status.get(key, 0) + 1


def searcher(i):
    queries = ["什么是RLHF", "What does EFLOPS mean?", "昇腾910B", "数据并行", "soak marker"]
    n = 0
    while not stop.is_set():
        try:
            s, _ = call("POST", "/v1/search", {"query": queries[(n + i) % len(queries)], "k": 5})
        except OSError as e:
            s = f"error {type(e).__name__}"
        count("search", s)
        n += 1


QUESTIONS = ["什么是SFT？", "What is data parallelism?", "GPT-3训练需要多少算力？", "What does AGI mean?"]


def streamer(disconnect):
    n = 0
    while not stop.is_set():
        q = QUESTIONS[n % len(QUESTIONS)]
        n += 1
        try:
            c = http.client.HTTPConnection(host, int(port), timeout=300)
            c.request("POST", "/v1/ask", body=json.dumps({"question": q, "stream": True}),
                      headers={"Content-Type": "application/json", "Connection": "close"})
            r = c.getresponse()
            if r.status != 200:
                r.read()
                count("disconnect" if disconnect else "stream", r.status)
                c.close()
                time.sleep(1)
                continue
            done = False
            while True:
                line = r.readline()  # de-chunked by http.client
                if not line:
                    break
                if disconnect and line.startswith(b"event: token"):
                    break
                if line.startswith(b"event: done") or line.startswith(b"event: error"):
                    done = line.startswith(b"event: done")
                    break
            r.close()
            c.close()  # a disconnecting client goes away mid-answer here
            count("disconnect" if disconnect else "stream", "200 done" if done else "200 cut")
        except OSError as e:
            count("stream", f"error {type(e).__name__}")


def reloader():
    n = 0
    while not stop.wait(60):
        n += 1
        with open(os.path.join(corpus, "article.md"), "a") as f:
            f.write(f"\n\nSoak round {n}: soak marker ZEBRA{n} was added while the server ran.\n")
        built = subprocess.run(base + ["index"], capture_output=True)
        s, body = call("POST", "/admin/reload", headers={"Authorization": "Bearer soak-admin"})
        reloads.append({"round": n, "index_ok": built.returncode == 0, "status": s,
                        "reloaded": json.loads(body).get("reloaded") if s == 200 else body.decode()})


def sampler(start):
    while not stop.wait(30):
        rss.append((round(time.time() - start, 1), rss_mb()))


start = time.time()
threads = [threading.Thread(target=searcher, args=(i,)) for i in range(2)]
threads += [threading.Thread(target=streamer, args=(False,)), threading.Thread(target=streamer, args=(True,))]
threads += [threading.Thread(target=reloader), threading.Thread(target=sampler, args=(start,))]
for t in threads:
    t.start()
time.sleep(seconds)
stop.set()
print("soak: stopping the load", file=sys.stderr)
for t in threads:
    t.join()
print("soak: load stopped", file=sys.stderr)
elapsed = time.time() - start
time.sleep(5)  # let a cut answer reach its next token
rss.append((round(time.time() - start, 1), rss_mb()))

_, metrics = call("GET", "/metrics")
metrics = metrics.decode()
server_status = {}
for route, status, n in re.findall(r'kbqa_http_requests_total\{route="([^"]+)",status="(\d+)"\} (\d+)', metrics):
    server_status[f"{route} {status}"] = int(n)


def gauge(name):
    m = re.search(rf"^{name} (\S+)$", metrics, re.M)
    return float(m.group(1)) if m else None


# /readyz answers 503 by design while the models load.
fives = sum(n for k, n in server_status.items()
            if k.split()[-1].startswith("5") and not k.startswith("/readyz"))
client_errors = sum(n for k, n in client_status.items() if "error" in k)
# The last search ZEBRA marker must be findable: the last reload took.
_, found = call("POST", "/v1/search", {"query": f"ZEBRA{len(reloads)}", "k": 1, "mode": "bm25"})
server.terminate()
server.wait(timeout=60)

result = {
    "seconds": round(elapsed),
    "server_status": server_status,
    "client_status": client_status,
    "five_xx": fives,
    "client_errors": client_errors,
    "reloads": reloads,
    "rss_mb": rss,
    "after": {
        "running": gauge("kbqa_answers_running"),
        "queued": gauge("kbqa_answer_queue_depth"),
        "cancelled_total": gauge("kbqa_answers_cancelled_total"),
        "rejected_total": gauge("kbqa_answers_rejected_total"),
        "generated_tokens_total": gauge("kbqa_generated_tokens_total"),
    },
    "last_marker_found": f"ZEBRA{len(reloads)}" in found.decode(),
    "exit_code": server.returncode,
}
os.makedirs("target/bench", exist_ok=True)
json.dump(result, open("target/bench/soak.json", "w"), indent=2, ensure_ascii=False)

values = [r for _, r in rss]
print(f"| soak, {result['seconds']} s | |")
print("|---|---|")
for k in sorted(server_status):
    print(f"| {k} | {server_status[k]} |")
print(f"| 5xx responses (besides /readyz while loading) | **{fives}** |")
print(f"| client-side connection errors | {client_errors} |")
print(f"| streamed answers read to `done` | {client_status.get('stream 200 done', 0)} |")
print(f"| clients that disconnected mid-answer | {client_status.get('disconnect 200 done', 0) + client_status.get('disconnect 200 cut', 0)} |")
print(f"| answers cancelled (server) | {result['after']['cancelled_total']:.0f} |")
print(f"| reloads (index rebuilt + POST /admin/reload) | {sum(1 for r in reloads if r['status'] == 200)} of {len(reloads)} ok |")
print(f"| last reload's new text searchable | {result['last_marker_found']} |")
print(f"| RSS start / end / max | {values[0]:.0f} / {values[-1]:.0f} / {max(values):.0f} MB |")
print(f"| answers running / queued after the load | {result['after']['running']:.0f} / {result['after']['queued']:.0f} |")
print(f"| server exit code after SIGTERM | {result['exit_code']} |")
