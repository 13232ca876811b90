#!/usr/bin/env python3
"""One reading against several: what choosing among passage orders buys,
with every weight and threshold fitted on one half of the set and
reported on the other.

    python3 tests/eval/readings.py tests/eval/reports/readings/answers-readings-3.json

The report must come from `kbqa eval answers --readings 3
--confidence-threshold 0`: each question then records, per reading (the
passages in retrieval's order, reversed, rotated), whether it passed the
checks, its confidence signals and whether its text holds the answer.
For k = 1, 2, 3 readings this script, per fold:

- fits the confidence (logistic, as `calibrate.py`) on the fitting half's
  readings, every reading that passed the checks being one example;
- answers each question with its most confident passing reading (none
  passing: refused), as kbqa does;
- picks the threshold on the fitting half: the lowest that keeps
  confidently wrong answers at or under `--max-wrong` of the in-scope
  questions;
- reports on the other half: answered right, confidently wrong, not sure,
  refused, refusal accuracy (out-of-scope questions not answered), per
  language; the either-reading-right ceiling; the AUROC of the confidence.
"""
import argparse
import json

from calibrate import auroc, confidence, features, fit, split

ORDERS = ["given", "reversed", "rotated", "sampled"]


def readings(o, k):
    """The readings of outcome `o` that count: the first k, or (k a name
    of an order) that one reading alone."""
    rs = o.get("readings") or []
    if isinstance(k, str):
        return [r for r in rs if r["order"] == k][:1]
    return rs[:k]


def examples(outcomes, k):
    rows = []
    for o in outcomes:
        for r in readings(o, k):
            if r["passed"] and r.get("signals"):
                x = features(r["signals"])
                if x is not None:
                    rows.append((x, bool(r["correct"]) and o["in_scope"], o))
    return rows


def answer(o, k, bias, raw):
    """(confidence, right) of the reading kbqa would choose, or None when
    no reading passed the checks."""
    best = None
    for r in readings(o, k):
        if not r["passed"] or not r.get("signals"):
            continue
        x = features(r["signals"])
        if x is None:
            continue
        c = confidence(bias, raw, x)
        if best is None or c > best[0]:
            best = (c, bool(r["correct"]) and o["in_scope"])
    return best


def outcome_at(outcomes, k, bias, raw, t):
    ins = [o for o in outcomes if o["in_scope"]]
    outs = [o for o in outcomes if not o["in_scope"]]
    right = wrong = unsure = refused = 0
    for o in ins:
        a = answer(o, k, bias, raw)
        if a is None:
            refused += 1
        elif a[0] < t:
            unsure += 1
        elif a[1]:
            right += 1
        else:
            wrong += 1
    held = sum(1 for o in outs if (a := answer(o, k, bias, raw)) is None or a[0] < t)
    n = max(1, len(ins))
    return {
        "right": right / n,
        "wrong": wrong / n,
        "unsure": unsure / n,
        "refused": refused / n,
        "refusal_acc": held / max(1, len(outs)),
        "either": sum(any(r["correct"] for r in readings(o, k)) for o in ins) / n,
        "n_in": len(ins),
        "n_out": len(outs),
    }


def choose_threshold(outcomes, k, bias, raw, max_wrong):
    for t in [i / 100 for i in range(0, 100)]:
        if outcome_at(outcomes, k, bias, raw, t)["wrong"] <= max_wrong:
            return t
    return 0.99


def label(k, outcomes):
    if isinstance(k, str):
        return f"1 ({k} alone)"
    first = next(o for o in outcomes if o.get("readings"))["readings"]
    return f"{k} ({'+'.join(r['order'] for r in first[:k])})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("report")
    ap.add_argument("--max-wrong", type=float, default=0.08)
    args = ap.parse_args()
    outcomes = json.load(open(args.report, encoding="utf-8"))["outcomes"]
    most = max(len(o.get("readings") or []) for o in outcomes)
    a, b = split(outcomes)
    print(f"# Readings: {args.report}\n")
    print("Per fold: fitted and thresholded on one half, reported on the other.")
    print("Rates are of the in-scope questions; refusal accuracy of the out-of-scope ones.\n")
    print("| readings | fold | lang | answered right | confidently wrong | not sure | refused"
          " | refusal acc. | either reading right | AUROC | threshold |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    orders = sorted({r["order"] for o in outcomes for r in o.get("readings") or []}, key=ORDERS.index)
    for k in list(range(1, most + 1)) + [o for o in orders if o != "given"]:
        for name, fit_on, test_on in [("A→B", a, b), ("B→A", b, a)]:
            bias, raw = fit([(x, y) for x, y, _ in examples(fit_on, k)])
            t = choose_threshold(fit_on, k, bias, raw, args.max_wrong)
            for lang in ["all"] + sorted({o["lang"] for o in test_on}):
                group = [o for o in test_on if lang == "all" or o["lang"] == lang]
                r = outcome_at(group, k, bias, raw, t)
                scored = [(confidence(bias, raw, x), y) for x, y, _ in examples(group, k)]
                print(
                    f"| {label(k, outcomes)} | {name} | {lang} | {r['right']:.3f} | {r['wrong']:.3f}"
                    f" | {r['unsure']:.3f} | {r['refused']:.3f} | {r['refusal_acc']:.3f}"
                    f" | {r['either']:.3f} | {auroc(scored):.3f} | {t:.2f} |"
                )


if __name__ == "__main__":
    main()
