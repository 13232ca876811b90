"""Drives kbqa's chat page in headless Chromium through ChromeDriver's
W3C WebDriver protocol (plain HTTP, no client library needed).

Usage: chat_page.py PAGE_URL QUESTION SCREENSHOT.png [API_KEY [KB]]
With KB, the question is asked of that knowledge base, chosen in the
page's selector. Prints one JSON object: the answer text, the sources
shown under it, and the selector's options.
"""

import base64
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

page, question, screenshot = sys.argv[1], sys.argv[2], sys.argv[3]
key = sys.argv[4] if len(sys.argv) > 4 else ""
kb = sys.argv[5] if len(sys.argv) > 5 else ""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


port = free_port()
driver = subprocess.Popen(
    ["chromedriver", f"--port={port}"],
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
)
base = f"http://127.0.0.1:{port}"


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        base + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)["value"]


try:
    for _ in range(100):
        try:
            call("GET", "/status")
            break
        except OSError:
            time.sleep(0.1)
    profile = tempfile.mkdtemp()
    session = call(
        "POST",
        "/session",
        {
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": "/usr/bin/chromium",
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-quic",
                            "--no-first-run",
                            "--disable-background-networking",
                            "--disable-component-update",
                            "--disable-sync",
                            f"--user-data-dir={profile}",
                            # A phone-size screen.
                            "--window-size=390,844",
                        ],
                    },
                }
            }
        },
    )["sessionId"]
    s = f"/session/{session}"
    call("POST", s + "/url", {"url": page})
    if key:
        # What the page's key box stores; then the page starts again with it.
        call("POST", s + "/execute/sync",
             {"script": "localStorage.setItem('kbqa-key', arguments[0])", "args": [key]})
        call("POST", s + "/url", {"url": page})
    options = []
    if kb:
        pick = """
          const sel = document.getElementById('kb');
          const names = [...sel.options].map(o => o.value);
          if (sel.hidden || !names.includes(arguments[0])) return null;
          sel.value = arguments[0];
          sel.dispatchEvent(new Event('change'));
          return names;
        """
        deadline = time.time() + 30
        while not options and time.time() < deadline:
            options = call("POST", s + "/execute/sync", {"script": pick, "args": [kb]}) or []
            time.sleep(0.2)

    def find(css):
        return call("POST", s + "/element", {"using": "css selector", "value": css})[
            "element-6066-11e4-a52e-4f735466cecf"
        ]

    box = find("#q")
    call("POST", f"{s}/element/{box}/value", {"text": question})
    call("POST", f"{s}/element/{find('#send')}/click", {})
    script = """
      const turn = document.querySelector('.turn.done');
      if (!turn) {
        const err = document.querySelector('.answer.error');
        return err ? {error: err.textContent} : null;
      }
      return {
        answer: turn.querySelector('.answer').textContent,
        sources: [...turn.querySelectorAll('.sources li')].map(li => li.textContent),
        notes: [...turn.querySelectorAll('.note')].map(n => n.textContent),
        width: document.documentElement.clientWidth,
        scrollWidth: document.documentElement.scrollWidth,
      };
    """
    result = None
    deadline = time.time() + 240
    while time.time() < deadline:
        result = call("POST", s + "/execute/sync", {"script": script, "args": []})
        if result:
            break
        time.sleep(0.5)
    png = call("GET", s + "/screenshot")
    with open(screenshot, "wb") as f:
        f.write(base64.b64decode(png))
    call("DELETE", s)
    if result is not None:
        result["kbs"] = options
    json.dump(result, sys.stdout, ensure_ascii=False)
finally:
    driver.terminate()
