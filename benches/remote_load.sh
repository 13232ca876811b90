#!/usr/bin/env bash
# 16 concurrent asks against `kbqa serve`: in-process generation vs
# generation by llama.cpp's llama-server (1 slot, and 4 slots with
# continuous batching), same machine, same GGUF, rounds interleaved.
# See benches/remote_load.py for what is measured. A benchmark, not a
# test: it fails only if something cannot run, never on the numbers.
#
# Usage: benches/remote_load.sh [ROUNDS]   (default 3; writes target/bench/remote_load.json)
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${1:-3}"
cargo build --release --quiet
KBQA=target/release/kbqa
BIN=$(benches/build_llama_cpp.sh | tail -n 1)
"$KBQA" models fetch qwen2.5-coder-0.5b e5-small-q4 >&2
GGUF=$("$KBQA" models list | grep '^qwen2.5-coder-0.5b ' | grep -o '/[^ ]*\.gguf' | head -n 1)
[[ -f "$GGUF" ]] || { echo "the default GGUF is not cached" >&2; exit 1; }
"$KBQA" index >/dev/null 2>&1
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
python3 benches/remote_load.py "$KBQA" "$BIN/llama-server" "$GGUF" "$WORK" "$ROUNDS"
