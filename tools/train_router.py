"""Train the learned router and write batchroute/data/router_model.bin (training only).

Usage: python tools/train_router.py [--data DIR] [--out FILE] [--cv]
Needs the `[train]` extra (scikit-learn). DIR defaults to ../shared/data.

- task type: `tools/train_task_head.py` (called from here too: one command writes both
  `router_model.bin` and `task_model.bin`);
- gain: ridge regression of the premium tier's quality minus the best cheaper capable tier's
  (mid or standard; RouterBench train accuracy 0/1, arena-bench judge score / 9);
- cost: ridge regression of log(premium cost) of the prompt (RouterBench train);
- the routing score is sigmoid(SCALE · gain / relative cost): gain per dollar, squashed.

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
from sklearn.linear_model import Ridge
from sklearn.model_selection import StratifiedKFold

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

import train_task_head as task_head_train  # noqa: E402
from routing_data import DATA, Scored, load_arena, load_routerbench  # noqa: E402

from batchroute import task_head, thresholds  # noqa: E402
from batchroute.learned import MAGIC, MODEL_FILE, features  # noqa: E402

ALPHA_GAIN = 300.0  # ridge strengths chosen by RouterBench-train CV (see --cv)
ALPHA_COST = 300.0
ARENA_WEIGHT = 1.0
SCORE_SCALE = 10.0  # only spreads the squashed score over (0, 1); ranks do not depend on it
MIN_DF = 2  # a feature seen in one training prompt only is noise, and would bloat the file
SEED = 12
MAX_FEATURES = 24_000


def strong_label(s: Scored) -> float:
    """The premium tier's quality gain over the mid tier, in accuracy units (a 1-10 judge score
    is divided by 9). Over the best of mid and standard did worse in CV (the mid tier is the
    one the weak side mostly uses)."""
    gain = s.quality["premium"] - s.quality["mid"]
    return gain / 9.0 if s.group == "arena" else gain


class Scorer:
    """The two ridge models behind the routing score (training-side mirror of learned.predict)."""

    def __init__(self, gain: Ridge, cost: Ridge, cost_ref: float) -> None:
        self.gain, self.cost, self.cost_ref = gain, cost, cost_ref

    def score(self, x: csr_matrix) -> np.ndarray:
        rel = np.exp(np.clip(self.cost.predict(x) - self.cost_ref, -20, 20))
        return 1 / (1 + np.exp(-SCORE_SCALE * self.gain.predict(x) / rel))


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


def fit_strong(
    x: csr_matrix,
    y: Sequence[float],
    w: Sequence[float],
    xc: csr_matrix,
    log_cost: Sequence[float],
    alpha: float = ALPHA_GAIN,
) -> Scorer:
    """Fit the gain model on (x, y, w) and the cost model on (xc, log_cost)."""
    gain = Ridge(alpha=alpha).fit(x, np.asarray(y), sample_weight=np.asarray(w, dtype=np.float64))
    cost = Ridge(alpha=ALPHA_COST).fit(xc, np.asarray(log_cost))
    return Scorer(gain, cost, float(np.mean(log_cost)))


def cost_data(rows: Sequence[Scored]) -> tuple[list[str], list[float]]:
    """(texts, log premium cost) of the rows that carry a cost (RouterBench)."""
    priced = [r for r in rows if r.cost.get("premium", 0) > 0]
    return [r.text for r in priced], [float(np.log(r.cost["premium"])) for r in priced]


task_data = task_head_train.task_data  # the task prompts (they count in the vocabulary)


def strong_data(
    data: Path, arena: Sequence[Scored] | None = None
) -> tuple[list[str], list[float], list[float]]:
    rb = load_routerbench("train", data)
    arena_rows = load_arena(data) if arena is None else arena
    ar = [Scored(s.text, "arena", s.quality, {}) for s in arena_rows]
    texts = [s.text for s in rb] + [s.text for s in ar]
    labels = [strong_label(s) for s in rb] + [strong_label(s) for s in ar]  # gain targets
    weights = [1.0] * len(rb) + [ARENA_WEIGHT] * len(ar)
    return texts, labels, weights


def train(data: Path, arena: Sequence[Scored] | None = None) -> bytes:
    """Fit both models on the training data and return the model file's bytes."""
    t_texts, _ = task_data(data)
    s_texts, s_labels, s_weights = strong_data(data, arena)
    c_texts, c_logs = cost_data(load_routerbench("train", data))
    t_docs = [features(t) for t in t_texts]
    s_docs = [features(t) for t in s_texts]
    c_docs = [features(t) for t in c_texts]
    # The vocabulary still counts the task prompts (the routing heads are unchanged by the task
    # head's move); the task type itself is the task head's (tools/train_task_head.py, its own
    # file), so this file holds no task columns: n_features × 2 (gain, log cost).
    vocab = Vocab(t_docs + s_docs)
    strong = fit_strong(vocab.matrix(s_docs), s_labels, s_weights, vocab.matrix(c_docs), c_logs)
    classes: list[str] = []
    weights = np.vstack([strong.gain.coef_, strong.cost.coef_]).T.astype("<f4")
    # Keep the features that matter most to some output (weights scaled per output, since the
    # strong model is regularised harder): the file stays well under 2 MB, scoring stays fast.
    scaled = np.abs(weights) / np.abs(weights).max(axis=0)
    top = np.sort(np.argsort(-scaled.max(axis=1), kind="stable")[:MAX_FEATURES])
    keep = np.zeros(len(weights), dtype=bool)
    keep[top] = True
    ids = np.asarray(vocab.ids, dtype="<u4")[keep]
    weights = weights[keep]
    # complexity: prompt length cut at the 35th/70th/92nd percentile of the task training prompts
    lengths = [len(t) for t in t_texts]
    cuts = [float(np.quantile(lengths, q)) for q in (0.35, 0.70, 0.92)]
    header = {
        "classes": classes,
        "n_features": len(ids),
        "intercepts": [float(strong.gain.intercept_), float(strong.cost.intercept_)],
        "complexity_cuts": cuts,
        "score_scale": SCORE_SCALE,
        "cost_ref": strong.cost_ref,
        "meta": {
            "trained_on": "RouterBench train + arena-bench-v1 (strong); task type: "
            + task_head_train.TRAINED_ON,
            "alpha_gain": ALPHA_GAIN,
            "alpha_cost": ALPHA_COST,
            "arena_weight": ARENA_WEIGHT,
            "n_task": len(t_texts),
            "n_strong": len(s_texts),
        },
    }
    head = json.dumps(header, sort_keys=True).encode()
    return MAGIC + struct.pack("<I", len(head)) + head + ids.tobytes() + weights.tobytes()


SIDE = thresholds.SIDE_WEIGHTS[2]


def cross_validate(data: Path, what: str = "all") -> None:
    """5-fold CV on the training data (how the constants were chosen): task-type macro-F1 for a
    few C values; the routing quality and cost on RouterBench train for a few ridge strengths
    and side spreads (`thresholds.SIDE_WEIGHTS`) over the strong share."""
    folds = StratifiedKFold(5, shuffle=True, random_state=SEED)
    if what in ("all", "task"):
        task_head_train.cross_validate(data)
    if what in ("all", "score"):
        cv_score(data, folds)


def cv_score(data: Path, folds: StratifiedKFold) -> None:
    rb = load_routerbench("train", data)
    docs = [features(r.text) for r in rb]
    groups = [r.group for r in rb]
    top_q = sum(r.quality["premium"] for r in rb) / len(rb)
    top_c = sum(r.cost["premium"] for r in rb) / len(rb)
    tiers = ("budget", "mid", "standard", "premium")
    for alpha in (30.0, 100.0, 300.0, 1000.0):
        scores = np.zeros(len(rb))
        for tr, te in folds.split(docs, groups):
            vocab = Vocab([docs[i] for i in tr])
            x = vocab.matrix([docs[i] for i in tr])
            lc = cost_data([rb[i] for i in tr])[1]
            m = fit_strong(x, [strong_label(rb[i]) for i in tr], [1.0] * len(tr), x, lc, alpha)
            scores[te] = m.score(vocab.matrix([docs[i] for i in te]))
        for weights in ((1.0, 3.0), (1.0, 9.0), (0.0, 1.0)):
            thresholds.SIDE_WEIGHTS[2] = weights
            row = []
            for share in (0.35, 0.4, 0.45, 0.5, 0.55):
                cuts = thresholds.calibrate(list(scores), 4, strong_share=share)
                ts = [tiers[thresholds.tier_index(x, cuts)] for x in scores]
                q = sum(r.quality[t] for r, t in zip(rb, ts, strict=True)) / len(rb) / top_q
                c = sum(r.cost[t] for r, t in zip(rb, ts, strict=True)) / len(rb) / top_c
                row.append(f"{share}: {q:.3f}@{c:.3f}")
            print(f"gain alpha={alpha:<5} side {weights}: " + "  ".join(row))
    thresholds.SIDE_WEIGHTS[2] = SIDE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=REPO / "batchroute" / MODEL_FILE)
    parser.add_argument(
        "--cv",
        nargs="?",
        const="all",
        choices=("all", "task", "score"),
        help="print CV figures, write nothing",
    )
    args = parser.parse_args(argv)
    if args.cv:
        cross_validate(args.data, args.cv)
        return 0
    blob = train(args.data)
    args.out.write_bytes(blob)
    print(f"wrote {args.out} ({len(blob):,} bytes)")
    # the task head's own file, next to the router's (one command writes both)
    head_out = args.out.with_name(Path(task_head.MODEL_FILE).name)
    head_blob = task_head_train.train(args.data)
    head_out.write_bytes(head_blob)
    print(f"wrote {head_out} ({len(head_blob):,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
