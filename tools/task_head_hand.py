"""The task head with the hand-labelled Auto-J train sample (`python tools/task_head_hand.py
[NAME…]`; training only; docs/task-head-selection.md, "Seventh pass").

Every candidate keeps the shipped set-up (Auto-J train mapped + MBPP, the arena prompts at weight
3) and changes only what it learns from the 517 hand-labelled Auto-J train prompts
(`autoj_hand.hand_labels`). Figures, all on training data:

- `hand_scen`: held-out-scenario CV (GroupKFold over scenarios, `task_head_cv.scenario_folds`),
  macro-F1 of the labelled prompts' predictions against the hand labels;
- `hand_strat`: the same on the stratified 5-fold CV (seed 12, on the mapped labels);
- `scen` / `strat`: macro-F1 of every base prompt's prediction in those CVs against the best
  labels there are (the hand label where there is one, the mapped label elsewhere);
- `arena`: macro-F1 on the arena labels by 5-fold CV (seed 12), the base set in every fold.

The test fold's own hand labels never enter its training. MT-Bench, WizardLM and the Auto-J test
split are never read here.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autoj_hand import DOWN_BELOW, base_lines, hand_labels, mapping_error
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold
from task_head_arena import Sets
from task_head_cv import scenario_folds
from train_task_head import ARENA_WEIGHT, SEED, fit

# Each candidate: `hand` — 0: the hand labels unused (shipped), 1: they replace the mapped
# label of their prompts; `hand_weight` — those prompts' sample weight; `down` — the sample
# weight of the *unlabelled* prompts of scenarios whose mapping agrees with fewer than
# `DOWN_BELOW` of their hand labels (1.0: unchanged).
CANDIDATES: dict[str, dict[str, float]] = {
    "shipped": {"hand": 0, "hand_weight": 1.0, "down": 1.0},
    "hand": {"hand": 1, "hand_weight": 1.0, "down": 1.0},
    "hand3": {"hand": 1, "hand_weight": 3.0, "down": 1.0},
    "hand+down": {"hand": 1, "hand_weight": 1.0, "down": 0.3},
}


class HandSets(Sets):
    """`Sets` plus each base prompt's hand label (or None) and best label."""

    def __init__(self, data: Path) -> None:
        super().__init__(data)
        hand = hand_labels()
        lines = base_lines(data) + [-1] * (len(self.docs) - len(base_lines(data)))
        self.hand: list[str | None] = [hand.get(i) for i in lines]
        self.best = [h or m for h, m in zip(self.hand, self.labels, strict=True)]
        poor = {cat for cat, _, k, a, _ in mapping_error(data) if a / k < DOWN_BELOW}
        self.poor = [g in poor for g in self.groups]

    def fit_hand(self, cand: dict[str, float], base: Sequence[int], arena: Sequence[int]) -> Any:
        """`cand` fitted on base prompts `base` and arena prompts `arena` (weight 3)."""
        labels, weights = [], []
        for i in base:
            if cand["hand"] and self.hand[i] is not None:
                labels.append(self.best[i])
                weights.append(cand["hand_weight"])
            else:
                labels.append(self.labels[i])
                weights.append(cand["down"] if self.poor[i] else 1.0)
        docs = [self.docs[i] for i in base] + [self.a_docs[i] for i in arena]
        labels += [self.a_labels[i] for i in arena]
        weights += [ARENA_WEIGHT] * len(arena)
        groups = [self.groups[i] for i in base] + ["arena"] * len(arena)
        return fit(docs, labels, source_weights=weights, groups=groups)


def _pred(head: Any, d: tuple[list[int], list[int]]) -> str:
    return str(head.predict([*d[0], *d[1]]))


def scores(sets: HandSets, cand: dict[str, float]) -> dict[str, float]:
    """The five figures of the module docstring for `cand`."""
    every_arena = list(range(len(sets.a_docs)))
    idx = list(range(len(sets.docs)))
    labelled = [i for i in idx if sets.hand[i] is not None]
    gold = [sets.hand[i] for i in labelled]
    out: dict[str, float] = {}
    strat = StratifiedKFold(5, shuffle=True, random_state=SEED).split(idx, sets.labels)
    for name, folds in (("scen", scenario_folds(sets.data, 5)), ("strat", list(strat))):
        preds = [""] * len(idx)
        for tr, te in folds:
            head = sets.fit_hand(cand, list(tr), every_arena)
            for i in te:
                preds[i] = _pred(head, sets.docs[i])
        out[f"hand_{name}"] = float(f1_score(gold, [preds[i] for i in labelled], average="macro"))
        out[name] = float(f1_score(sets.best, preds, average="macro"))
        print(f"  {name}: hand {out[f'hand_{name}']:.3f} all {out[name]:.3f}", file=sys.stderr)
    preds = [""] * len(every_arena)
    a_folds = StratifiedKFold(5, shuffle=True, random_state=SEED).split(sets.a_texts, sets.a_labels)
    for tr, te in a_folds:
        head = sets.fit_hand(cand, idx, list(tr))
        for i in te:
            preds[i] = _pred(head, sets.a_docs[i])
    out["arena"] = float(f1_score(sets.a_labels, preds, average="macro"))
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    from routing_data import DATA

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("names", nargs="*", help="candidates (default: all)")
    args = parser.parse_args(argv)
    sets = HandSets(args.data)
    for name in args.names or list(CANDIDATES):
        s = scores(sets, CANDIDATES[name])
        print(f"{name:<10} " + "  ".join(f"{k} {v:.3f}" for k, v in s.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main())
