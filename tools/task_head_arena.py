"""The task head with the hand-labelled arena prompts (`python tools/train_task_head.py --cv
arena [--only NAME…]`; training only; docs/task-head-selection.md, "Sixth pass").

Primary figure, `arena`: macro-F1 on the arena labels by 5-fold CV over three partitions of the
300 prompts (a candidate is fitted on the base set plus four fifths of them and predicts the
fifth; the shipped head, fitted on the base set alone, predicts all of them). Guard: the fifth
pass's `stratified` and `scenario` CVs on the base set, the candidate's arena prompts joined to
every training fold. MT-Bench, WizardLM and the Auto-J test split are never read here.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from routing_data import load_arena_tasks
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold
from task_head_cv import PARTITION_SEEDS, random_group_folds, scenario_folds
from train_task_head import SEED, doc, fit, task_data, task_groups

from batchroute.classifier import classify

Doc = tuple[list[int], list[int]]

# Each candidate: the arena prompts' weight (0 = not used: the shipped head) and `fit`'s other
# keyword arguments over the shipped constants.
CANDIDATES: dict[str, dict[str, Any]] = {
    "shipped": {"weight": 0.0},
    "arena1": {"weight": 1.0},
    "arena3": {"weight": 3.0},
    "arena10": {"weight": 10.0},
    "arena3+groups3": {"weight": 3.0, "min_groups": 3},
}
ARENA_SEEDS = (SEED, *PARTITION_SEEDS)  # the three partitions of the arena prompts


class Sets:
    """The base set (Auto-J train mapped + MBPP) and the arena prompts, featurized once."""

    def __init__(self, data: Path) -> None:
        self.data = data
        texts, self.labels = task_data(data)
        self.groups = task_groups(data)
        self.docs = [doc(t) for t in texts]
        arena = load_arena_tasks(data)
        self.a_texts = [a.text for a in arena]
        self.a_labels = [a.gold for a in arena]
        self.a_docs = [doc(t) for t in self.a_texts]

    def fit(self, cand: dict[str, Any], base: Sequence[int], arena: Sequence[int]) -> Any:
        """`cand` fitted on the base prompts `base` and, if it uses them, the arena prompts
        `arena` (weighted, grouped as one source "arena")."""
        w = float(cand["weight"])
        kw = {k: v for k, v in cand.items() if k != "weight"}
        arena = list(arena) if w else []
        docs = [self.docs[i] for i in base] + [self.a_docs[i] for i in arena]
        labels = [self.labels[i] for i in base] + [self.a_labels[i] for i in arena]
        kw["groups"] = [self.groups[i] for i in base] + ["arena"] * len(arena)
        if w:
            kw["source_weights"] = [1.0] * len(base) + [w] * len(arena)
        return fit(docs, labels, **kw)


def _predict(head: Any, d: Doc) -> str:
    return str(head.predict([*d[0], *d[1]]))


def arena_scores(sets: Sets, cand: dict[str, Any]) -> list[float]:
    """Pooled held-out macro-F1 on the arena labels, one per partition (`ARENA_SEEDS`)."""
    n, everything = len(sets.a_docs), list(range(len(sets.docs)))
    out = []
    shipped_preds: list[str] | None = None
    for seed in ARENA_SEEDS:
        if not cand["weight"]:  # the same fit and predictions on every partition
            if shipped_preds is None:
                head = sets.fit(cand, everything, [])
                shipped_preds = [_predict(head, d) for d in sets.a_docs]
            out.append(float(f1_score(sets.a_labels, shipped_preds, average="macro")))
            continue
        preds = [""] * n
        folds = StratifiedKFold(5, shuffle=True, random_state=seed).split(
            sets.a_texts, sets.a_labels
        )
        for tr, te in folds:
            head = sets.fit(cand, everything, list(tr))
            for i in te:
                preds[i] = _predict(head, sets.a_docs[i])
        out.append(float(f1_score(sets.a_labels, preds, average="macro")))
        print(f"  partition seed {seed}: arena {out[-1]:.3f}", file=sys.stderr, flush=True)
    return out


def guard_scores(sets: Sets, cand: dict[str, Any]) -> tuple[float, list[float]]:
    """(stratified, [scenario per partition]) on the base set's held-out prompts, every arena
    prompt in every training fold."""
    every_arena = list(range(len(sets.a_docs)))

    def pooled(folds: list[tuple[list[int], list[int]]]) -> float:
        preds = [""] * len(sets.docs)
        for tr, te in folds:
            head = sets.fit(cand, tr, every_arena)
            for i in te:
                preds[i] = _predict(head, sets.docs[i])
        return float(f1_score(sets.labels, preds, average="macro"))

    idx = list(range(len(sets.docs)))
    strat = [(list(a), list(b)) for a, b in StratifiedKFold(5, shuffle=True, random_state=SEED)
             .split(idx, sets.labels)]  # fmt: skip
    stratified = pooled(strat)
    print(f"  stratified {stratified:.3f}", file=sys.stderr, flush=True)
    parts = [pooled(scenario_folds(sets.data, 5))]
    parts += [pooled(random_group_folds(sets.groups, 5, s)) for s in PARTITION_SEEDS]
    return stratified, parts


def heuristic_arena(sets: Sets) -> float:
    """The heuristic classifier's macro-F1 on the arena labels (information only)."""
    preds = [classify(t).task_type for t in sets.a_texts]
    return float(f1_score(sets.a_labels, preds, average="macro"))


def cross_validate_arena(
    data: Path, names: list[str] | None = None, parts: str = "arena,guard"
) -> None:
    """Print each candidate's figures, one line each: `arena` (mean, then each partition) if
    `parts` names it, `stratified` and `scenario` (mean, then each partition) if it names
    "guard" (the two parts can run in separate processes: both are deterministic)."""
    sets = Sets(data)
    print(f"heuristic arena {heuristic_arena(sets):.3f}", flush=True)
    for name in names or list(CANDIDATES):
        line = f"{name:<16}"
        if "arena" in parts:
            a = arena_scores(sets, CANDIDATES[name])
            line += f" arena {np.mean(a):.3f} ({' '.join(f'{x:.3f}' for x in a)})"
        if "guard" in parts:
            st, parts = guard_scores(sets, CANDIDATES[name])
            line += f"  stratified {st:.3f}  scenario {np.mean(parts):.3f}"
            line += f" ({' '.join(f'{x:.3f}' for x in parts)})"
        print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from routing_data import DATA

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--parts", default="arena,guard", help="arena, guard or both")
    parser.add_argument("names", nargs="*", help="candidates (default: all)")
    args = parser.parse_args(argv)
    cross_validate_arena(args.data, args.names or None, args.parts)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main())
