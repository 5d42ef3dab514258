"""The task head's original stratified CV grids (`python tools/train_task_head.py --cv
[small|full|lead|scale|char]`; training only): split out of `train_task_head.py` (the 400-line
limit), unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold
from train_task_head import (
    C_TASK,
    CHAR,
    CLASS_WEIGHT,
    HEUR_SCALE,
    LEAD,
    MAX_FEATURES,
    SEED,
    doc,
    fit,
    task_data,
)

from batchroute import task_head


def predict_all(head: task_head.TaskHead, docs: Sequence[tuple[list[int], list[int]]]) -> list[str]:
    return [head.predict([*w, *h]) for w, h in docs]


# Each row: (C, heuristic scale, class weight, max features, leading words, character n-grams);
# heuristic scale 0 = words only (no stacking).
Row = tuple[float, float, str | None, int, bool, int]
GRIDS: dict[str, list[Row]] = {
    "small": [
        (C_TASK, 0.0, CLASS_WEIGHT, MAX_FEATURES, LEAD, CHAR),
        (C_TASK, HEUR_SCALE, CLASS_WEIGHT, MAX_FEATURES, LEAD, CHAR),
    ],
    # what the constants were chosen on (docs/router-model-card.md has the figures)
    "full": [
        (0.5, 0.0, "balanced", 10**9, False, 0),
        (0.5, 0.0, None, 10**9, False, 0),
        (0.5, 1.0, "balanced", 10**9, False, 0),
        (0.5, 3.0, "balanced", 10**9, False, 0),
        (0.5, 3.0, "balanced", 20_000, False, 0),
        (1.0, 3.0, "balanced", 10**9, False, 0),
    ],
    "lead": [
        (0.5, 3.0, "balanced", 20_000, True, 0),
        (0.5, 0.0, "balanced", 20_000, True, 0),
    ],
    "scale": [
        (0.5, 1.0, "balanced", 20_000, True, 0),
        (0.5, 10.0, "balanced", 20_000, True, 0),
    ],
    "char": [  # the first row is "small"'s second before character n-grams
        (0.5, 3.0, "balanced", 20_000, True, 100),
        (0.5, 3.0, "balanced", 30_000, True, 100),
        (0.5, 3.0, "balanced", 20_000, True, 60),
    ],
}


def cross_validate(data: Path, grid: str = "small") -> None:
    """5-fold stratified CV macro-F1 and accuracy on the training set for each grid row."""
    texts, labels = task_data(data)
    docs_by: dict[tuple[bool, int], list[tuple[list[int], list[int]]]] = {}
    for _, _, _, _, lead, char in GRIDS[grid]:
        if (lead, char) not in docs_by:
            docs_by[lead, char] = [doc(t, lead=lead, char=char) for t in texts]
    folds = list(StratifiedKFold(5, shuffle=True, random_state=SEED).split(texts, labels))
    for c, hs, cw, mf, lead, char in GRIDS[grid]:
        docs = docs_by[lead, char]
        preds = [""] * len(texts)
        for tr, te in folds:
            tr_docs = [docs[i] if hs else (docs[i][0], []) for i in tr]
            head = fit(tr_docs, [labels[i] for i in tr], c=c, heur_scale=hs or 1.0,
                       class_weight=cw, max_features=mf, lead=lead, char=char)  # fmt: skip
            te_docs = [docs[i] if hs else (docs[i][0], []) for i in te]
            for i, p in zip(te, predict_all(head, te_docs), strict=True):
                preds[i] = p
        f1 = f1_score(labels, preds, average="macro")
        acc = float(np.mean([p == g for p, g in zip(preds, labels, strict=True)]))
        print(
            f"task head C={c:<5} heur_scale={hs:<5} class_weight={cw!s:<9} max_features={mf:<10}"
            f" lead={lead!s:<5} char={char:<4} CV macro-F1 {f1:.3f}  accuracy {acc:.3f}",
            flush=True,
        )
