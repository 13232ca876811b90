#!/usr/bin/env bash
# The terminal front end, measured (issue 21):
#  1. the wall time of 10 questions in one `kbqa chat` session against
#     10 `kbqa ask` processes: same questions (benches/chat_questions.txt,
#     ten eval-set questions, five Chinese and five English, none a
#     follow-up), same binary, same index, alternating runs in one
#     hyperfine call; medians;
#  2. the time from starting `kbqa chat` in a terminal (a tmux pane) to
#     its first prompt on screen, over $PROMPTS starts; median.
# Needs hyperfine and tmux (Debian packages). Usage: benches/chat_vs_ask.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
PROMPTS=${PROMPTS:-5}
BIN=$PWD/target/release/kbqa
QS=$PWD/benches/chat_questions.txt
OUT=target/chat_vs_ask
mkdir -p "$OUT"

cargo build --release --quiet
# The index and the models are ready before anything is timed.
"$BIN" index >/dev/null 2>&1
"$BIN" models fetch >/dev/null 2>&1

if [ "$RUNS" != 0 ]; then  # RUNS=0: only the start-up figure
    hyperfine --runs "$RUNS" --export-json "$OUT/hyperfine.json" \
        -n "kbqa chat (1 process)" "$BIN chat < $QS > /dev/null 2>&1" \
        -n "kbqa ask (10 processes)" "while IFS= read -r q; do $BIN ask \"\$q\" > /dev/null 2>&1; done < $QS"

    python3 - "$OUT/hyperfine.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
chat = r["kbqa chat (1 process)"]["median"]
ask = r["kbqa ask (10 processes)"]["median"]
print(f"10 questions: chat {chat:.1f} s, ask {ask:.1f} s (medians); ask/chat = {ask / chat:.2f}x; "
      f"per question {chat / 10:.2f} s vs {ask / 10:.2f} s")
PY
fi

times=()
for i in $(seq "$PROMPTS"); do
    sock="kbqa-bench-$$-$i"
    start=$(date +%s.%N)
    tmux -L "$sock" -f /dev/null new-session -d -x 120 -y 40 "$BIN chat; sleep 60"
    until tmux -L "$sock" capture-pane -p -t 0 | grep -q '^kbqa> *$'; do sleep 0.01; done
    end=$(date +%s.%N)
    tmux -L "$sock" kill-server
    times+=("$(python3 -c "print(f'{$end - $start:.2f}')")")
done
printf '%s\n' "${times[@]}" | sort -n | python3 -c "
import sys
t = [float(x) for x in sys.stdin]
print(f'start to first prompt: median {t[len(t) // 2]:.2f} s over {len(t)} starts (all: {\", \".join(f\"{x:.2f}\" for x in t)})')"
