#!/usr/bin/env bash
# Re-indexing after a small edit: incremental `kbqa index` (embeds only the
# chunks whose text changed) vs `kbqa index --rebuild` (embeds all), on a
# copy of the shipped corpus, side by side with hyperfine (medians).
# Before each incremental run a new paragraph is appended to article.md.
#
# Usage: benches/incremental_index.sh [RUNS]   (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-5}"
command -v hyperfine >/dev/null || { echo "needs hyperfine: apt-get install hyperfine" >&2; exit 2; }
cargo build --release --quiet
KBQA="$PWD/target/release/kbqa"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cp -r corpus "$WORK/kb"
"$KBQA" --corpus "$WORK/kb" --index-dir "$WORK/idx" index >/dev/null 2>&1
mkdir -p target/bench
hyperfine --runs "$RUNS" --warmup 1 --export-json target/bench/incremental_index.json \
  -n "incremental (one paragraph appended)" \
  --prepare "echo \"新增段落 \$RANDOM：增量索引只重新嵌入改动的分块。\" >> $WORK/kb/article.md" \
  "$KBQA --corpus $WORK/kb --index-dir $WORK/idx index" \
  -n "full rebuild" \
  "$KBQA --corpus $WORK/kb --index-dir $WORK/idx index --rebuild"
# What the incremental run reported about the last edit:
echo "新增段落 last：增量索引。" >> "$WORK/kb/article.md"
"$KBQA" --corpus "$WORK/kb" --index-dir "$WORK/idx" index 2>&1 | grep -E "changed|to embed" >&2
