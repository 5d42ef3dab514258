"""The hand labels of the Auto-J train sample (`tools/data/autoj_task_labels.jsonl`,
`docs/task-labels-autoj.md`) and the scenario mapping's error measured against them (training
data only; `python tools/autoj_hand.py` prints the per-scenario table).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from autoj_label_sample import rows
from routing_data import DATA, REPO, autoj_task

HAND_LABELS = REPO / "tools" / "data" / "autoj_task_labels.jsonl"
# A scenario whose mapping agrees with fewer than this share of its hand labels is "poor"
# (the seventh pass's `hand+down` weighs its unlabelled prompts down).
DOWN_BELOW = 2 / 3


def hand_labels(path: Path = HAND_LABELS) -> dict[int, str]:
    """Line number in `traindata.jsonl` -> the hand label."""
    out: dict[int, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if "line" not in row or "task_type" not in row:
            raise ValueError(f"{path}:{n}: needs 'line' and 'task_type'")
        out[int(row["line"])] = str(row["task_type"])
    return out


def base_lines(data: Path = DATA) -> list[int]:
    """The `traindata.jsonl` line of each Auto-J prompt in `train_task_head.task_data`'s order
    (the mapped rows; `default` is dropped there)."""
    return [i for i, r in enumerate(rows(data)) if autoj_task(r["category"]) is not None]


def mapping_error(data: Path = DATA) -> list[tuple[str, str, int, int, Counter[str]]]:
    """Per scenario: (scenario, mapped type, labelled, agreeing, the hand labels' counts),
    worst first."""
    hand = hand_labels()
    all_rows = rows(data)
    by: dict[str, list[str]] = {}
    for i, t in hand.items():
        by.setdefault(all_rows[i]["category"], []).append(t)
    out = []
    for cat, got in by.items():
        mapped = autoj_task(cat) or ""
        out.append((cat, mapped, len(got), sum(t == mapped for t in got), Counter(got)))
    return sorted(out, key=lambda r: (r[3] / r[2], r[0]))


def kappa(a: list[str], b: list[str]) -> float:
    """Cohen's kappa of two label lists."""
    n = len(a)
    po = sum(x == y for x, y in zip(a, b, strict=True)) / n
    ca, cb = Counter(a), Counter(b)
    pe = sum(ca[k] * cb[k] for k in ca) / (n * n)
    return (po - pe) / (1 - pe)


def main() -> int:
    table = mapping_error()
    n = sum(r[2] for r in table)
    agree = sum(r[3] for r in table)
    hand = hand_labels()
    all_rows = rows()
    lines = sorted(hand)
    mapped = [autoj_task(all_rows[i]["category"]) or "" for i in lines]
    print(f"prompts {n}, scenario mapping agrees with the hand label on {agree} "
          f"({agree / n:.1%}); disagrees on {n - agree} ({1 - agree / n:.1%})")  # fmt: skip
    per = [1 - r[3] / r[2] for r in table]
    print(f"mean per-scenario disagreement {sum(per) / len(per):.1%}; scenarios with any "
          f"disagreement {sum(p > 0 for p in per)} of {len(per)}; with a majority "
          f"disagreeing {sum(p > 0.5 for p in per)}")  # fmt: skip
    print(f"Cohen's kappa (mapping vs hand) {kappa(mapped, [hand[i] for i in lines]):.3f}")
    print("\n| scenario | mapped to | agree | hand labels |\n|---|---|---|---|")
    for cat, m, k, a, got in table:
        others = ", ".join(f"{t} {c}" for t, c in got.most_common())
        print(f"| {cat} | {m} | {a}/{k} | {others} |")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main())


def relabel(
    data: Path, labels: list[str], groups: list[str], hand_weight: float, down: float
) -> tuple[list[str], list[float]]:
    """The base set's labels and sample weights with the hand labels in (`train_task_head` with
    `HAND`; the seventh pass's candidates): a labelled prompt takes its hand label at weight
    `hand_weight`; an unlabelled prompt of a scenario whose mapping agrees with fewer than
    `DOWN_BELOW` of its hand labels gets weight `down`; every other prompt keeps its label at 1.
    `labels` and `groups` are `task_data`'s and `task_groups`'s (Auto-J rows first)."""
    hand = hand_labels()
    lines = base_lines(data)
    poor = {cat for cat, _, k, a, _ in mapping_error(data) if a / k < DOWN_BELOW}
    out_l, out_w = list(labels), [1.0] * len(labels)
    for i, g in enumerate(groups):
        h = hand.get(lines[i]) if i < len(lines) else None
        if h is not None:
            out_l[i], out_w[i] = h, hand_weight
        elif g in poor:
            out_w[i] = down
    return out_l, out_w
