#!/usr/bin/env python3
"""Fits kbqa's answer confidence (`[answer.confidence]`) on one half of an
eval report and reports it on the other, both ways round.

    python3 tests/eval/calibrate.py tests/eval/reports/answers-qwen2.5-coder-0.5b.json

The report must come from `kbqa eval answers` with the confidence
threshold at 0 (every checked answer asserted), so each checked answer has
its signals and whether it was right (`checked_correct`). The halves are
fixed by position within each language (even / odd), so every fit is
reported on questions it never saw. For each fold it prints the weights
(as TOML), the AUROC of the confidence on the held-out half, its
risk-coverage curve there, and the threshold chosen on the fitting half:
the lowest that keeps confidently wrong answers at or under
`--max-wrong` of the in-scope questions. No third-party packages: plain
gradient descent on a handful of features.
"""
import argparse
import json
import math

FEATURES = ["mean_logprob", "min_logprob", "refusal_score", "overlap", "inferred", "first_cited"]
MIN_LOGPROB_FLOOR = -20.0


def features(signals):
    s = signals
    mean = s.get("mean_logprob")
    if mean is None:
        return None
    low = s.get("min_logprob")
    return [
        mean,
        max(low if low is not None else mean, MIN_LOGPROB_FLOOR),
        s.get("refusal_score") or 0.0,
        s.get("overlap") or 0.0,
        1.0 if s.get("inferred") else 0.0,
        float(s.get("first_cited") or 0),
    ]


def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-max(-40.0, min(40.0, z))))


def fit(rows, l2=0.05, steps=20000, lr=0.05):
    """Logistic regression on standardised features, L2-regularised; the
    weights are returned on the raw scale (what the config holds)."""
    n, k = len(rows), len(FEATURES)
    xs = [r[0] for r in rows]
    ys = [1.0 if r[1] else 0.0 for r in rows]
    mu = [sum(x[j] for x in xs) / n for j in range(k)]
    sd = [max(1e-6, math.sqrt(sum((x[j] - mu[j]) ** 2 for x in xs) / n)) for j in range(k)]
    zs = [[(x[j] - mu[j]) / sd[j] for j in range(k)] for x in xs]
    w, b = [0.0] * k, 0.0
    for _ in range(steps):
        gw, gb = [0.0] * k, 0.0
        for z, y in zip(zs, ys):
            err = sigmoid(b + sum(wj * zj for wj, zj in zip(w, z))) - y
            gb += err
            for j in range(k):
                gw[j] += err * z[j]
        b -= lr * gb / n
        for j in range(k):
            w[j] -= lr * (gw[j] / n + l2 * w[j])
    raw = [w[j] / sd[j] for j in range(k)]
    bias = b - sum(w[j] * mu[j] / sd[j] for j in range(k))
    return bias, raw


def confidence(bias, raw, x):
    return sigmoid(bias + sum(wj * xj for wj, xj in zip(raw, x)))


def auroc(scored):
    pos = [c for c, y in scored if y]
    neg = [c for c, y in scored if not y]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def split(outcomes):
    """Even and odd positions within each language: two fixed halves."""
    a, b, seen = [], [], {}
    for o in outcomes:
        i = seen.get(o["lang"], 0)
        seen[o["lang"]] = i + 1
        (a if i % 2 == 0 else b).append(o)
    return a, b


def rows_of(outcomes):
    rows = []
    for o in outcomes:
        if o.get("checked_correct") is None or not o.get("signals"):
            continue
        x = features(o["signals"])
        if x is not None:
            rows.append((x, bool(o["checked_correct"]) and o["in_scope"], o))
    return rows


def at_threshold(outcomes, bias, raw, t):
    """(answered right, confidently wrong, not sure, refused) per in-scope question."""
    ins = [o for o in outcomes if o["in_scope"]]
    right = wrong = unsure = refused = 0
    for o in ins:
        x = features(o["signals"]) if o.get("signals") else None
        if o.get("checked_correct") is None:
            refused += 1
        elif x is not None and confidence(bias, raw, x) < t:
            unsure += 1
        elif o["checked_correct"]:
            right += 1
        else:
            wrong += 1
    n = max(1, len(ins))
    return right / n, wrong / n, unsure / n, refused / n


def choose(outcomes, bias, raw, max_wrong):
    for t in [i / 100 for i in range(0, 100)]:
        if at_threshold(outcomes, bias, raw, t)[1] <= max_wrong:
            return t
    return 0.99


def report(fit_on, test_on, name, max_wrong):
    bias, raw = fit([(x, y) for x, y, _ in rows_of(fit_on)])
    t = choose(fit_on, bias, raw, max_wrong)
    test_rows = rows_of(test_on)
    scored = [(confidence(bias, raw, x), y) for x, y, _ in test_rows]
    print(f"\n### fold {name}: fitted on {len(rows_of(fit_on))} checked answers, reported on {len(test_rows)}\n")
    print("```toml\n[answer.confidence]")
    print(f"threshold = {t:.2f}\nbias = {bias:.4f}")
    for f, w in zip(FEATURES, raw):
        print(f"{f} = {w:.4f}")
    print("```\n")
    print(f"AUROC on the held-out half: {auroc(scored):.3f}")
    for lang in sorted({o['lang'] for o in test_on}):
        sub = [(confidence(bias, raw, x), y) for x, y, o in test_rows if o["lang"] == lang]
        print(f"- {lang}: AUROC {auroc(sub):.3f} ({len(sub)} answers)")
    print("\nRisk-coverage on the held-out half (in-scope questions):\n")
    print("| threshold | answered right | confidently wrong | not sure | refused |")
    print("|---|---|---|---|---|")
    for th in [0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, t]:
        r = at_threshold(test_on, bias, raw, th)
        mark = " (chosen)" if th == t else ""
        print(f"| {th:.2f}{mark} | {r[0]:.3f} | {r[1]:.3f} | {r[2]:.3f} | {r[3]:.3f} |")
    return bias, raw, t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("report")
    ap.add_argument("--max-wrong", type=float, default=0.08)
    args = ap.parse_args()
    outcomes = json.load(open(args.report, encoding="utf-8"))["outcomes"]
    a, b = split(outcomes)
    print(f"# Confidence calibration of {args.report}")
    report(a, b, "A → B", args.max_wrong)
    report(b, a, "B → A", args.max_wrong)
    rows = rows_of(outcomes)
    print(f"\nAll {len(rows)} checked answers, mean signals by outcome:\n")
    print("| signal | right | wrong |\n|---|---|---|")
    for j, f in enumerate(FEATURES):
        right = [x[j] for x, y, _ in rows if y]
        wrong = [x[j] for x, y, _ in rows if not y]
        avg = lambda v: sum(v) / len(v) if v else float("nan")
        print(f"| {f} | {avg(right):.3f} | {avg(wrong):.3f} |")
    for j, f in enumerate(FEATURES):
        print(f"- AUROC of {f} alone: {auroc([(x[j], y) for x, y, _ in rows]):.3f}")


if __name__ == "__main__":
    main()
