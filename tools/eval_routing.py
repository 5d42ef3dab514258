"""Evaluate heuristic and learned routing on public data; write docs/routing-eval.md (issue 12).

Usage: python tools/eval_routing.py [--data DIR] [--out FILE] [--folds 5]
DIR defaults to ../shared/data. The cross-validated sections (RouterBench train, arena-bench)
retrain the "strong" model per fold and need the `[train]` extra; without it they are skipped.

Sections: task type on MT-Bench, WizardLM and the Auto-J test split; complexity against WizardLM
difficulty; RouterBench test cost–quality (every tier's model alone, heuristic routing, the
learned router's curve over the cost dial, random routing with equal tier shares, the oracle,
APGR); the same on arena-bench by cross-validation; and the train-CV curve the default dial was
chosen on.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

from routing_data import (  # noqa: E402
    ARENA_MODELS,
    DATA,
    TIER_MODELS,
    Labelled,
    Scored,
    load_arena,
    load_autoj,
    load_mt_bench,
    load_routerbench,
    load_wizard,
    wizard_level,
)
from routing_metrics import (  # noqa: E402
    TIERS,
    Point,
    Prices,
    apgr,
    dial_route,
    oracle,
    pgr,
    price_fit,
    random_at_cost,
    random_like,
    route_point,
    single,
    spearman,
    task_scores,
)

from batchroute import classifier, learned, task_head  # noqa: E402
from batchroute.router import choose_tier  # noqa: E402
from batchroute.spec import JobSpec  # noqa: E402
from batchroute.thresholds import DEFAULT_POLICY  # noqa: E402
from batchroute.types import Classification  # noqa: E402

Classify = Callable[[str], Classification]
CLASSIFIERS: dict[str, Classify] = {"heuristic": classifier.classify, "learned": learned.classify}
TARGET_QUALITY, TARGET_COST = 0.97, 0.45
SHARES = [i / 10 for i in range(11)]
RATIOS = [0.1, 0.2, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9]
Preds = tuple[list[tuple[float, ...]], list[tuple[float, ...]]]  # per prompt: quality, factor
LEVEL3 = {"low": 0, "medium": 1, "high": 2, "very_high": 2}


def default_spec() -> JobSpec:
    """A job with the four default tiers and the default routing table."""
    return JobSpec.model_validate(
        {
            "name": "eval",
            "input": "eval.jsonl",
            "prompt": {"user": "{text}"},
            "request": {"max_tokens": 256},
            "budget": {"daily_usd": 1},
        }
    )


# --- task types and complexity -----------------------------------------------------------------


def task_section(sets: dict[str, list[Labelled]], f1: dict[str, dict[str, float]]) -> list[str]:
    """The task-type tables; fills `f1[set][classifier]` with each macro-F1."""
    out = ["## Task type", ""]
    out += [
        "A prediction the set's mapping also accepts (e.g. MT-Bench `stem` → simple_qa or "
        "analysis) counts as right; macro-F1 is over the gold labels present. The mappings are "
        "`tools/routing_data.py`'s (WizardLM: 14 prompts labelled by hand, each with its "
        "reason there). The learned task type is the task head "
        f"(`batchroute/{task_head.MODEL_FILE}`, {task_head.load().meta.get('trained_on')}); "
        "its constants were chosen by 5-fold CV on its training set "
        "(`python tools/train_task_head.py --cv full`, `--cv lead`, `--cv scale`, "
        "`--cv char`), never on these sets.",
        "",
        "| set | n | heuristic acc | heuristic macro-F1 | learned acc | learned macro-F1 |",
        "|---|---|---|---|---|---|",
    ]
    mats = []
    for name, items in sets.items():
        row = [name, str(len(items))]
        for cname, clf in CLASSIFIERS.items():
            preds = [clf(i.text).task_type for i in items]
            sc = task_scores([i.gold for i in items], [i.accepted for i in items], preds)
            row += [f"{sc.accuracy:.1%}", f"{sc.macro_f1:.3f}"]
            f1.setdefault(name, {})[cname] = sc.macro_f1
            mats += [f"### {name}: {cname}", "", *confusion_table(sc.confusion, sc.labels), ""]
        out.append("| " + " | ".join(row) + " |")
    return [*out, "", "Confusion matrices (rows gold, columns predicted):", "", *mats]


def confusion_table(conf: dict[tuple[str, str], int], labels: Sequence[str]) -> list[str]:
    short = [lab[:9] for lab in labels]
    lines = ["| gold \\ pred | " + " | ".join(short) + " |", "|---" * (len(labels) + 1) + "|"]
    for g in labels:
        cells = [str(conf.get((g, p), 0) or ".") for p in labels]
        lines.append(f"| {g} | " + " | ".join(cells) + " |")
    return lines


def complexity_section(wiz: list[tuple[Labelled, int]]) -> list[str]:
    out = ["## Complexity against WizardLM difficulty", ""]
    out += [
        "Gold: low = difficulty 1–3, medium = 4–6, high = 7–10 (very_high counts as high). "
        "Spearman is over the 10-point difficulty and the 4 levels (or the learned score).",
        "",
        "| classifier | exact | within one level | Spearman (level) | Spearman (score) |",
        "|---|---|---|---|---|",
    ]
    diffs = [d for _, d in wiz]
    gold = [LEVEL3[wizard_level(d)] for d in diffs]
    for name, clf in CLASSIFIERS.items():
        cs = [clf(lab.text) for lab, _ in wiz]
        pred = [LEVEL3[c.complexity] for c in cs]
        exact = sum(g == p for g, p in zip(gold, pred, strict=True)) / len(gold)
        near = sum(abs(g - p) <= 1 for g, p in zip(gold, pred, strict=True)) / len(gold)
        levels = [float(["low", "medium", "high", "very_high"].index(c.complexity)) for c in cs]
        rho = spearman([float(d) for d in diffs], levels)
        scores = [c.score for c in cs if c.score is not None]
        rho_s = f"{spearman([float(d) for d in diffs], scores):.3f}" if scores else "n/a"
        out.append(f"| {name} | {exact:.1%} | {near:.1%} | {rho:.3f} | {rho_s} |")
    return [*out, ""]


# --- cost–quality ------------------------------------------------------------------------------


def curve_section(
    title: str, rows: list[Scored], preds: Preds | None, prices: Prices, note: str, unit: str
) -> tuple[list[str], dict[str, float]]:
    """One cost–quality section; returns its lines and the headline figures."""
    quality = [r.quality for r in rows]
    cost = [r.cost for r in rows]
    spec = default_spec()
    top = single("premium", quality, cost)
    points = [single(t, quality, cost) for t in TIERS]
    heur = route_point(
        "heuristic (task table + complexity floor)",
        [choose_tier(classifier.classify(r.text), spec, explicit_task=False) for r in rows],
        quality,
        cost,
    )
    points += [heur, random_like(heur, quality, cost), random_at_cost(heur, quality, cost)]
    head: dict[str, float] = {}
    texts = [r.text for r in rows]
    if preds is not None:
        policy = ", ".join(f"{k}={v}" for k, v in DEFAULT_POLICY.items())
        dial = route_point(
            f"learned, default dial ({policy})",
            dial_route(*preds, texts, prices, DEFAULT_POLICY),
            quality,
            cost,
        )
        points += [dial, random_like(dial, quality, cost), random_at_cost(dial, quality, cost)]
        head = {"quality": dial.quality / top.quality, "cost": dial.cost / top.cost}
    points.append(oracle(quality, cost))
    out = [f"## {title}", "", note, ""]
    out += [f"| policy | {unit} | % of premium's | cost $/prompt | % of premium's cost | shares |"]
    out += ["|---|---|---|---|---|---|"]
    out += [_row(p, top) for p in points]
    if preds is not None:
        out += ["", *learned_curve(preds, texts, prices, quality, cost, top)]
    return [*out, ""], head


def _row(p: Point, top: Point) -> str:
    shares = ", ".join(f"{t} {s:.0%}" for t, s in p.shares.items())
    return (
        f"| {p.name} | {p.quality:.3f} | {p.quality / top.quality:.1%} | {p.cost:.6f} | "
        f"{p.cost / top.cost:.1%} | {shares} |"
    )


def learned_curve(
    preds: Preds,
    texts: list[str],
    prices: Prices,
    quality: list[dict[str, float]],
    cost: list[dict[str, float]],
    top: Point,
) -> list[str]:
    out = [
        "Learned router over the cost dial (`max_cost_ratio`, calibrated on this input with "
        "the tiers' fitted prices; the cost columns are the real costs), against random routing "
        "with the same tier shares and at the same real cost:",
        "",
        "| max_cost_ratio | quality | % of premium's | % of premium's cost | shares "
        "| random, same shares | random, same cost | learned − random at same cost |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for ratio in RATIOS:
        tiers = dial_route(*preds, texts, prices, {"max_cost_ratio": ratio})
        p = route_point(f"{ratio:.2f}", tiers, quality, cost)
        r, rc = random_like(p, quality, cost), random_at_cost(p, quality, cost)
        shares = ", ".join(f"{t} {s:.0%}" for t, s in p.shares.items())
        out.append(
            f"| {ratio:.2f} | {p.quality:.3f} | {p.quality / top.quality:.1%} | "
            f"{p.cost / top.cost:.1%} | {shares} | {r.quality:.3f} | {rc.quality:.3f} | "
            f"{p.quality - rc.quality:+.3f} |"
        )
    weak = single("mid", quality, cost).quality
    pair = ("mid", "premium")  # two tiers take the mid and premium levels (tier_levels)
    at = {
        s: route_point(
            "", dial_route(*preds, texts, prices, {"strong_share": s}, pair), quality, cost
        ).quality
        for s in SHARES
    }
    value = apgr(at.__getitem__, weak, top.quality)
    pgrs = ", ".join(f"{s:.1f}: {pgr(q, weak, top.quality):.2f}" for s, q in at.items())
    out += [
        "",
        f"**APGR {value:.3f}** (RouteLLM's setup: a job of two tiers, mid = weak, premium = "
        "strong; the dial's `strong_share` 0–100 % in steps of 10 %; random routing scores "
        f"0.5). PGR by share: {pgrs}.",
    ]
    return out


# --- cross-validated scores --------------------------------------------------------------------


def cv_predictions(rows: list[Scored], data: Path, folds: int, *, arena: bool) -> Preds | None:
    """Out-of-fold per-level predictions: each fold predicted by heads trained without it
    (for RouterBench, without arena; for arena, with RouterBench train and the other arena
    folds). The cost factor heads are fitted on the RouterBench rows of the training side
    (arena has no costs)."""
    try:
        import numpy as np
        import train_router as tr
    except ImportError:
        return None
    quality: list[tuple[float, ...]] = [()] * len(rows)
    factor: list[tuple[float, ...]] = [()] * len(rows)
    for f in range(folds):
        test = [i for i in range(len(rows)) if i % folds == f]
        held = set(test)
        train_rows = [r for i, r in enumerate(rows) if i not in held]
        if arena:
            texts, q_target, weights = tr.strong_data(data, train_rows)
            c_rows = load_routerbench("train", data)
        else:
            texts = [r.text for r in train_rows]
            q_target = np.array([tr.level_quality(r) for r in train_rows])
            weights = [1.0] * len(train_rows)
            c_rows = train_rows
        docs = [learned.routing_features(t) for t in texts]
        c_docs = [learned.routing_features(r.text) for r in c_rows]
        vocab = tr.Vocab(docs)  # the cost rows are among the training rows
        model = tr.fit_strong(
            vocab.matrix(docs), q_target, weights, vocab.matrix(c_docs), tr.log_factors(c_rows)
        )
        q, fac = model.predict(vocab.matrix([learned.routing_features(rows[i].text) for i in test]))
        for j, i in enumerate(test):
            quality[i] = tuple(float(x) for x in q[j])
            factor[i] = tuple(float(x) for x in fac[j])
    return quality, factor


def with_costs(rows: list[Scored], costs: dict[str, float]) -> list[Scored]:
    return [Scored(r.text, r.group, r.quality, dict(costs)) for r in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "routing-eval.md")
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args(argv)
    data: Path = args.data
    started = time.monotonic()
    lines = [
        "# Routing evaluation (generated by `python tools/eval_routing.py`; do not edit)",
        "",
        f"Tier mapping (RouterBench): {', '.join(f'{t} → {m}' for t, m in TIER_MODELS.items())}; "
        "strong = standard or premium. Learned model: "
        f"`{learned.MODEL_FILE}` ({learned.load_model().meta.get('trained_on')}).",
        "",
    ]
    wiz = load_wizard(data)
    sets = {
        "MT-Bench turn 1": load_mt_bench(data),
        "WizardLM": [lab for lab, _ in wiz],
        "Auto-J test": load_autoj("test", data),
    }
    f1: dict[str, dict[str, float]] = {}
    lines += task_section(sets, f1) + complexity_section(wiz)
    rb_test = load_routerbench("test", data)
    rb_train = load_routerbench("train", data)
    prices = price_fit([r.text for r in rb_train], [r.cost for r in rb_train])
    test_preds = [learned.predict(r.text) for r in rb_test]
    section, head = curve_section(
        "RouterBench test (held out)",
        rb_test,
        ([p.quality for p in test_preds], [p.factor for p in test_preds]),
        prices,
        f"{len(rb_test)} prompts (ARC-Challenge, MBPP, Winogrande); quality = accuracy; cost = "
        "RouterBench's USD per call.",
        "accuracy",
    )
    met = head["quality"] >= TARGET_QUALITY and head["cost"] <= TARGET_COST
    lines += [
        "## Headline",
        "",
        f"RouterBench test, learned router at the default dial: **{head['quality']:.1%} of "
        f"gpt-4-1106-preview's accuracy at {head['cost']:.1%} of its cost** (target ≥ "
        f"{TARGET_QUALITY:.0%} at ≤ {TARGET_COST:.0%}: **{'met' if met else 'not met'}**).",
        "",
        *(
            f"{name}: learned task-type macro-F1 − heuristic = {d:+.3f} (target ≥ +0.10: "
            f"**{'met' if d >= 0.10 else 'not met'}**)."
            for name in ("Auto-J test", "MT-Bench turn 1")
            for d in [f1[name]["learned"] - f1[name]["heuristic"]]
        ),
        f"WizardLM (never trained on; the generalisation check): learned task-type macro-F1 − "
        f"heuristic = {f1['WizardLM']['learned'] - f1['WizardLM']['heuristic']:+.3f}.",
        "",
        *section,
    ]
    mean_cost = {t: sum(r.cost[t] for r in rb_train) / len(rb_train) for t in TIERS}
    arena = with_costs(load_arena(data), mean_cost)
    a_preds = cv_predictions(arena, data, args.folds, arena=True)
    lines += curve_section(
        f"arena-bench-v1 ({args.folds}-fold cross-validation)",
        arena,
        a_preds,
        prices,
        f"{len(arena)} prompts; quality = GPT-4 judge score 1–10 (biased toward GPT-4 answers); "
        f"budget stand-in = {ARENA_MODELS['budget']}; cost = each tier's mean RouterBench train "
        "cost. Each fold is scored by a strong model trained on RouterBench train and the other "
        "folds." + ("" if a_preds else " **Skipped: needs the [train] extra.**"),
        "judge score",
    )[0]
    t_preds = cv_predictions(rb_train, data, args.folds, arena=False)
    lines += curve_section(
        f"RouterBench train ({args.folds}-fold cross-validation; the default dial was chosen here)",
        rb_train,
        t_preds,
        prices,
        f"{len(rb_train)} prompts, out-of-fold scores of a model trained on RouterBench train "
        "only.",
        "accuracy",
    )[0]
    lines += [f"_Evaluation took {time.monotonic() - started:.0f} s._", ""]
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
