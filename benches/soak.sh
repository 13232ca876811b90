#!/usr/bin/env bash
# Soak test of `kbqa serve` (see benches/soak.py): mixed load for SECONDS
# (default 600) — searches, streamed asks, clients that disconnect
# mid-answer, and a re-index + live reload every minute — then 5xx count,
# RSS over time, and leaked workers. A benchmark, not a test: it reports,
# and fails only if something cannot run.
#
# Usage: benches/soak.sh [SECONDS]   (writes target/bench/soak.json)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
python3 benches/soak.py target/release/kbqa "$WORK" "${1:-600}"
