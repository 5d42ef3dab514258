"""The task head's cross-validation with extra training prompts and the heuristic backoff
(`python tools/train_task_head.py --cv data|backoff|more|general`; training only).

Every row is scored on the base training set's held-out prompts (Auto-J train mapped + MBPP
train), under two fold schemes: stratified 5-fold (as `train_task_head.cross_validate`) and
5 folds that hold out whole Auto-J scenarios (a stand-in for prompt sets from other sources).
MT-Bench, WizardLM and the Auto-J test split are never read here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from zlib import crc32

import numpy as np
from routing_data import load_autoj, routerbench_items
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold
from train_task_head import SEED, doc, extra_data, fit, scenario_weights, task_data, task_groups

from batchroute import task_head

ARC, WINO = "arc-challenge", "winogrande"
AW, WD = (ARC, "simple_qa"), (WINO, "deep_reasoning")
# Each row: (extra sources, their weight, backoff in nats, character n-grams); the other
# constants as shipped.
ExtraRow = tuple[tuple[tuple[str, str], ...], float, float, int]
GRIDS: dict[str, list[ExtraRow]] = {
    "data": [
        ((), 1.0, 0.0, 0),
        ((AW,), 1.0, 0.0, 0),
        ((AW,), 0.3, 0.0, 0),
        ((WD,), 1.0, 0.0, 0),
        ((WD,), 0.3, 0.0, 0),
        (((WINO, "simple_qa"),), 0.3, 0.0, 0),
        ((AW, WD), 0.3, 0.0, 0),
    ],
    "backoff": [((), 1.0, 0.0, 0)],  # the sweep over BACKOFFS alone
    "more": [((AW,), 0.3, 0.0, 0), ((AW, WD), 0.3, 0.0, 0)],
}


def scenario_folds(data: Path, n: int) -> list[tuple[list[int], list[int]]]:
    """Folds that hold out whole Auto-J scenarios (MBPP as one): each test prompt's scenario is
    unseen in training, a stand-in for prompt sets from other sources."""
    from sklearn.model_selection import GroupKFold

    groups = [i.group for i in load_autoj("train", data)]
    groups += ["mbpp"] * (len(task_data(data)[0]) - len(groups))
    idx = list(range(len(groups)))
    return [(list(tr), list(te)) for tr, te in GroupKFold(n).split(idx, groups=groups)]


BACKOFFS = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)


def with_backoff(head: task_head.TaskHead, doc_: tuple[list[int], list[int]], b: float) -> str:
    """`head`'s prediction had it been fitted with `backoff=b` (the same fit, the heuristic's
    class's logit raised by b; `fit` adds it before quantizing, this after: ±1 step)."""
    lg = head.logits([*doc_[0], *doc_[1]])
    step = float(head.meta["step"])
    for j, task in enumerate(head.classes):
        if crc32(b"#ht:" + task.encode()) in doc_[1]:
            lg[j] += round(b * step)
    return head.choose(lg)


def cross_validate_extra(data: Path, grid: str) -> None:
    """CV macro-F1 on the base set's held-out prompts for each `GRIDS[grid]` row and each
    backoff in `BACKOFFS` (one fit per fold, the backoff applied after it): the extra prompts
    join every training fold, never a test fold. Two fold schemes: stratified (as
    `cross_validate`) and by scenario (`scenario_folds`)."""
    texts, labels = task_data(data)
    by_char = {ch: [doc(t, char=ch) for t in texts] for ch in {r[3] for r in GRIDS[grid]}}
    strat = StratifiedKFold(5, shuffle=True, random_state=SEED)
    schemes = {"stratified": list(strat.split(texts, labels)), "scenario": scenario_folds(data, 5)}
    extra_docs: dict[tuple[str, str, int], tuple[list[tuple[list[int], list[int]]], list[str]]]
    extra_docs = {}
    for extra, weight, _, char in GRIDS[grid]:
        docs = by_char[char]
        for g, t in extra:
            if (g, t, char) not in extra_docs:
                x_texts, x_labels = extra_data(data, ((g, t),))
                extra_docs[g, t, char] = ([doc(x, char=char) for x in x_texts], x_labels)
        x_docs = [d for g, t in extra for d in extra_docs[g, t, char][0]]
        x_labels = [y for g, t in extra for y in extra_docs[g, t, char][1]]
        out: dict[float, list[str]] = {b: [] for b in BACKOFFS}
        for name, folds in schemes.items():
            preds = {b: [""] * len(texts) for b in BACKOFFS}
            for tr, te in folds:
                tr_docs = [docs[i] for i in tr] + x_docs
                tr_labels = [labels[i] for i in tr] + x_labels
                sw = [1.0] * len(tr) + [weight] * len(x_docs) if extra else None
                head = fit(tr_docs, tr_labels, source_weights=sw, backoff=0.0, char=char)
                for i in te:
                    for b in BACKOFFS:
                        preds[b][i] = with_backoff(head, docs[i], b)
            for b in BACKOFFS:
                f1 = f1_score(labels, preds[b], average="macro")
                acc = float(np.mean([p == g for p, g in zip(preds[b], labels, strict=True)]))
                out[b].append(f"{name} CV macro-F1 {f1:.3f} accuracy {acc:.3f}")
        names = "+".join(f"{g}:{t}" for g, t in extra) or "none"
        for b in BACKOFFS:
            row = f"extra={names} weight={weight} backoff={b} char={char}"
            print(f"{row}: " + "; ".join(out[b]), flush=True)


# --cv general (docs/task-head-selection.md): candidates for prompts from other sources, each a
# set of `fit` keyword arguments over the shipped constants; "char" goes to `doc` too, and
# "scenbal" (not a `fit` argument) weights each prompt by 1 / its scenario's size.
GENERAL: dict[str, dict[str, Any]] = {
    "shipped": {},
    "groups2": {"min_groups": 2},
    "groups3": {"min_groups": 3},
    "groups5": {"min_groups": 5},
    "c0.25": {"c": 0.25},
    "c0.1": {"c": 0.1},
    "heur6": {"heur_scale": 6.0},
    "scenbal": {"scenbal": True},
    "char60+groups3": {"char": 60, "min_groups": 3},
    "backoff1": {"backoff": 1.0},
    "backoff2": {"backoff": 2.0},
}
PARTITION_SEEDS = (1, 2)  # the seeded random scenario partitions beside GroupKFold's


def random_group_folds(groups: list[str], n: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """n folds holding out whole groups: the sorted distinct groups, shuffled by `seed`, dealt
    round-robin (each fold gets the same number of groups, not of prompts)."""
    names = sorted(set(groups))
    order = np.random.default_rng(seed).permutation(len(names))
    fold_of = {names[j]: r % n for r, j in enumerate(order)}
    out = []
    for k in range(n):
        te = [i for i, g in enumerate(groups) if fold_of[g] == k]
        tr = [i for i, g in enumerate(groups) if fold_of[g] != k]
        out.append((tr, te))
    return out


def _fit_kwargs(cand: dict[str, Any], groups: list[str], idx: list[int]) -> dict[str, Any]:
    """`fit`'s keyword arguments for candidate `cand` trained on the prompts `idx`."""
    kw = {k: v for k, v in cand.items() if k != "scenbal"}
    kw["groups"] = [groups[i] for i in idx]
    if cand.get("scenbal"):
        kw["source_weights"] = scenario_weights(kw["groups"])
    return kw


def general_scores(data: Path, cand: dict[str, Any], n: int = 5) -> dict[str, float | list[float]]:
    """One candidate's figures: `stratified` (5-fold, seed SEED), `scenario` (the mean over
    GroupKFold's partition and PARTITION_SEEDS' of held-out-scenario macro-F1; `partitions`
    each), `arc` (trained on everything: the share of ARC train items called simple_qa)."""
    texts, labels = task_data(data)
    groups = task_groups(data)
    docs = [doc(t, char=cand.get("char", 0)) for t in texts]

    def pooled(folds: list[tuple[list[int], list[int]]]) -> float:
        preds = [""] * len(texts)
        for tr, te in folds:
            kw = _fit_kwargs(cand, groups, tr)
            head = fit([docs[i] for i in tr], [labels[i] for i in tr], **kw)
            for i in te:
                preds[i] = head.predict([*docs[i][0], *docs[i][1]])
        return float(f1_score(labels, preds, average="macro"))

    strat = StratifiedKFold(n, shuffle=True, random_state=SEED)
    stratified = pooled(list(strat.split(texts, labels)))
    partitions = [pooled(scenario_folds(data, n))]
    partitions += [pooled(random_group_folds(groups, n, s)) for s in PARTITION_SEEDS]
    head = fit(docs, labels, **_fit_kwargs(cand, groups, list(range(len(texts)))))
    arc_docs = [doc(t, char=cand.get("char", 0)) for t in routerbench_items("train", ARC, data)]
    arc = float(np.mean([head.predict([*w, *h]) == "simple_qa" for w, h in arc_docs]))
    return {
        "stratified": stratified,
        "scenario": float(np.mean(partitions)),
        "partitions": partitions,
        "arc": arc,
        "features": float(len(head.packed)),
    }


def cross_validate_general(data: Path, names: list[str] | None = None) -> None:
    """Print each `GENERAL` candidate's figures (`general_scores`), one line each."""
    for name in names or list(GENERAL):
        s = general_scores(data, GENERAL[name])
        parts = " ".join(f"{p:.3f}" for p in s["partitions"])  # type: ignore[union-attr]
        print(
            f"{name:<16} stratified {s['stratified']:.3f}  scenario {s['scenario']:.3f}"
            f" ({parts})  arc {s['arc']:.3f}  features {s['features']:.0f}",
            flush=True,
        )
