"""A second labeller's opinion on a seeded 100 of the 300 arena prompts (issue 12, task6;
`docs/task-labels-autoj.md`, "Second opinion on the arena labels"); training only.

`python tools/arena_second_labels.py show START COUNT` prints the sample's prompts (question id
and text only), never the first labeller's label; `python tools/arena_second_labels.py kappa`
compares `tools/data/arena_task_labels_second.jsonl` with task5's
`tools/data/arena_task_labels.jsonl`: agreement, Cohen's kappa and the pairs that differ.
"""

from __future__ import annotations

import json
import random
import sys
from collections import Counter
from pathlib import Path

from autoj_hand import kappa
from routing_data import ARENA_LABELS, DATA, REPO, _jsonl

N, SEED = 100, 62
SECOND = REPO / "tools" / "data" / "arena_task_labels_second.jsonl"


def sample(data: Path = DATA) -> list[tuple[str, str]]:
    """(question_id, prompt) of the seeded 100, in a seeded order."""
    qs = [
        (q["question_id"], q["turns"][0])
        for q in _jsonl(data / "arena_bench_v1" / "question.jsonl")
    ]
    return random.Random(SEED).sample(qs, N)


def _labels(path: Path) -> dict[str, str]:
    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    return {r["question_id"]: r["task_type"] for r in rows}


def main(argv: list[str]) -> int:
    if argv[:1] == ["show"] and len(argv) == 3:
        start, count = int(argv[1]), int(argv[2])
        for k, (qid, text) in enumerate(sample()[start : start + count], start):
            print(f"=== #{k} {qid}\n{text}\n")
        return 0
    if argv[:1] == ["kappa"]:
        second, first = _labels(SECOND), _labels(ARENA_LABELS)
        ids = [qid for qid, _ in sample()]
        a, b = [first[i] for i in ids], [second[i] for i in ids]
        agree = sum(x == y for x, y in zip(a, b, strict=True))
        print(f"prompts {len(ids)}, agree {agree} ({agree / len(ids):.0%}), "
              f"Cohen's kappa {kappa(a, b):.3f}")  # fmt: skip
        pairs = Counter((x, y) for x, y in zip(a, b, strict=True) if x != y)
        for (x, y), c in pairs.most_common():
            print(f"  first {x} / second {y}: {c}")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
