#!/usr/bin/env bash
# Retrieval quality on the eval set, local backend vs the postgres backend
# (BM25 as tantivy rebuilt from the chunk table, and as PostgreSQL's
# full-text index over kbqa's own jieba terms), every mode, side by side
# in one run. Starts a throwaway PostgreSQL (tests/pg/start.sh) unless
# KBQA_DATABASE_URL is set.
#
#   benches/pg_retrieval.sh            # prints a Markdown table
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
KBQA=target/release/kbqa
if [ -z "${KBQA_DATABASE_URL:-}" ]; then
    data="$(mktemp -d)"
    KBQA_DATABASE_URL="$(tests/pg/start.sh "$data" 2>/dev/null)"
    trap 'tests/pg/start.sh --stop "$data"; rm -rf "$data"' EXIT
fi
export KBQA_DATABASE_URL
out="$(mktemp -d)"
KBQA_INDEX_BACKEND=postgres "$KBQA" index >/dev/null 2>&1
echo "| mode | backend | BM25 engine | recall@1 | recall@5 | MRR@10 |"
echo "|---|---|---|---|---|---|"
for mode in bm25 vector hybrid; do
    for setup in "local -" "postgres tantivy" "postgres fts"; do
        set -- $setup
        report="$out/$mode-$1-$2.json"
        if [ "$1" = local ]; then
            "$KBQA" eval retrieval --mode "$mode" --report "$report" >/dev/null 2>&1
        else
            KBQA_INDEX_BACKEND=postgres KBQA_DATABASE_LEXICAL="$2" \
                "$KBQA" eval retrieval --mode "$mode" --report "$report" >/dev/null 2>&1
        fi
        python3 - "$report" "$mode" "$1" "$2" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
o = r["overall"] if "overall" in r else r
print(f"| {sys.argv[2]} | {sys.argv[3]} | {sys.argv[4]} | {o['recall_at_1']:.3f} | {o['recall_at_5']:.3f} | {o['mrr']:.3f} |")
PY
    done
done
rm -rf "$out"
