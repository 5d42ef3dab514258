"""Train the learned router and write batchroute/data/router_model.bin (training only).

Usage: python tools/train_router.py [--data DIR] [--out FILE] [--cv]
Needs the `[train]` extra (scikit-learn). DIR defaults to ../shared/data.

- task type: multinomial logistic regression on Auto-J train (mapped, `default` dropped) plus
  MBPP train prompts (code_generation), balanced class weights;
- strong: binary logistic regression, label "the premium tier does better than the mid tier"
  (RouterBench train: gpt-4 right and mixtral wrong; arena-bench: gpt-4's judge score above
  mixtral's), arena rows weighted up so open-ended prompts count as much as multiple choice.

`--cv` prints 5-fold cross-validated figures on the training data for a few regularisation
strengths; the constants below were chosen that way (never on a test split).
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

from routing_data import DATA, Scored, load_arena, load_autoj, load_routerbench  # noqa: E402

from batchroute.learned import MAGIC, MODEL_FILE, features  # noqa: E402
from batchroute.types import TASK_TYPES  # noqa: E402

C_TASK = 0.5
C_STRONG = 0.003
ARENA_WEIGHT = 4.0
MIN_DF = 2  # a feature seen in one training prompt only is noise, and would bloat the file
SEED = 12
MAX_FEATURES = 24_000


def strong_label(s: Scored) -> int:
    """1 when the premium tier does better than the mid tier on this prompt."""
    return int(s.quality["premium"] > s.quality["mid"])


class Vocab:
    """Hashed feature id → column, for the features seen in at least MIN_DF prompts."""

    def __init__(self, docs: Sequence[list[int]]) -> None:
        df = Counter(f for d in docs for f in d)
        self.ids = sorted(f for f, n in df.items() if n >= MIN_DF)
        self.col = {f: i for i, f in enumerate(self.ids)}

    def matrix(self, docs: Sequence[list[int]]) -> csr_matrix:
        indptr, indices = [0], []
        for d in docs:
            indices.extend(c for c in map(self.col.get, d) if c is not None)
            indptr.append(len(indices))
        data = np.ones(len(indices), dtype=np.float64)
        return csr_matrix((data, indices, indptr), shape=(len(docs), len(self.ids)))


def fit_task(x: csr_matrix, y: Sequence[str], c: float = C_TASK) -> LogisticRegression:
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=3000)
    return model.fit(x, list(y))


def fit_strong(
    x: csr_matrix, y: Sequence[int], w: Sequence[float], c: float = C_STRONG
) -> LogisticRegression:
    model = LogisticRegression(C=c, max_iter=3000)
    return model.fit(x, list(y), sample_weight=np.asarray(w, dtype=np.float64))


def task_data(data: Path) -> tuple[list[str], list[str]]:
    items = load_autoj("train", data)
    texts = [i.text for i in items] + [
        s.text for s in load_routerbench("train", data) if s.group == "mbpp"
    ]
    labels = [i.gold for i in items] + ["code_generation"] * (len(texts) - len(items))
    return texts, labels


def strong_data(
    data: Path, arena: Sequence[Scored] | None = None
) -> tuple[list[str], list[int], list[float]]:
    rb = load_routerbench("train", data)
    ar = list(load_arena(data) if arena is None else arena)
    texts = [s.text for s in rb] + [s.text for s in ar]
    labels = [strong_label(s) for s in rb] + [strong_label(s) for s in ar]
    weights = [1.0] * len(rb) + [ARENA_WEIGHT] * len(ar)
    return texts, labels, weights


def train(data: Path, arena: Sequence[Scored] | None = None) -> bytes:
    """Fit both models on the training data and return the model file's bytes."""
    t_texts, t_labels = task_data(data)
    s_texts, s_labels, s_weights = strong_data(data, arena)
    t_docs = [features(t) for t in t_texts]
    s_docs = [features(t) for t in s_texts]
    vocab = Vocab(t_docs + s_docs)
    task = fit_task(vocab.matrix(t_docs), t_labels)
    strong = fit_strong(vocab.matrix(s_docs), s_labels, s_weights)
    classes = [str(c) for c in task.classes_]
    assert set(classes) <= set(TASK_TYPES), classes
    weights = np.vstack([task.coef_, strong.coef_]).T.astype("<f4")  # n_features × (k + 1)
    # Keep the features that matter most to some output (weights scaled per output, since the
    # strong model is regularised harder): the file stays well under 2 MB, scoring stays fast.
    scaled = np.abs(weights) / np.abs(weights).max(axis=0)
    top = np.sort(np.argsort(-scaled.max(axis=1), kind="stable")[:MAX_FEATURES])
    keep = np.zeros(len(weights), dtype=bool)
    keep[top] = True
    ids = np.asarray(vocab.ids, dtype="<u4")[keep]
    weights = weights[keep]
    # complexity: P(strong) cut at the 35th/70th/92nd percentile of the task training prompts
    logits = vocab.matrix(t_docs) @ strong.coef_[0] + strong.intercept_[0]
    p = 1 / (1 + np.exp(-logits))
    cuts = [float(np.quantile(p, q)) for q in (0.35, 0.70, 0.92)]
    header = {
        "classes": classes,
        "n_features": len(ids),
        "intercepts": [float(b) for b in task.intercept_] + [float(strong.intercept_[0])],
        "complexity_cuts": cuts,
        "meta": {
            "trained_on": "Auto-J train (task), RouterBench train + arena-bench-v1 (strong)",
            "c_task": C_TASK,
            "c_strong": C_STRONG,
            "arena_weight": ARENA_WEIGHT,
            "n_task": len(t_texts),
            "n_strong": len(s_texts),
        },
    }
    head = json.dumps(header, sort_keys=True).encode()
    return MAGIC + struct.pack("<I", len(head)) + head + ids.tobytes() + weights.tobytes()


def cross_validate(data: Path) -> None:
    """5-fold CV on the training data for a few C values (how the constants were chosen)."""
    t_texts, t_labels = task_data(data)
    s_texts, s_labels, s_weights = strong_data(data)
    t_docs = [features(t) for t in t_texts]
    s_docs = [features(t) for t in s_texts]
    folds = StratifiedKFold(5, shuffle=True, random_state=SEED)
    for c in (0.25, 0.5, 1.0, 2.0):
        preds: list[str] = [""] * len(t_texts)
        for tr, te in folds.split(t_texts, t_labels):
            vocab = Vocab([t_docs[i] for i in tr])
            m = fit_task(vocab.matrix([t_docs[i] for i in tr]), [t_labels[i] for i in tr], c)
            for i, p in zip(te, m.predict(vocab.matrix([t_docs[i] for i in te])), strict=True):
                preds[i] = str(p)
        f1 = f1_score(t_labels, preds, average="macro")
        print(f"task   C={c:<5} CV macro-F1 {f1:.3f}")
    groups = [f"{lab}{int(w > 1)}" for lab, w in zip(s_labels, s_weights, strict=True)]
    for c in (0.003, 0.01, 0.02, 0.05):
        scores = np.zeros(len(s_texts))
        for tr, te in folds.split(s_texts, groups):
            vocab = Vocab([s_docs[i] for i in tr])
            m = fit_strong(
                vocab.matrix([s_docs[i] for i in tr]),
                [s_labels[i] for i in tr],
                [s_weights[i] for i in tr],
                c,
            )
            scores[te] = m.predict_proba(vocab.matrix([s_docs[i] for i in te]))[:, 1]
        arena = np.asarray(s_weights) > 1
        y = np.asarray(s_labels)
        auc_rb = roc_auc_score(y[~arena], scores[~arena])
        auc_ar = roc_auc_score(y[arena], scores[arena])
        print(f"strong C={c:<5} CV AUC RouterBench {auc_rb:.3f}  arena {auc_ar:.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=REPO / "batchroute" / MODEL_FILE)
    parser.add_argument("--cv", action="store_true", help="print CV figures, write nothing")
    args = parser.parse_args(argv)
    if args.cv:
        cross_validate(args.data)
        return 0
    blob = train(args.data)
    args.out.write_bytes(blob)
    print(f"wrote {args.out} ({len(blob):,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
