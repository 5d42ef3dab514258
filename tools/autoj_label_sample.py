"""The seeded sample of Auto-J train prompts hand-labelled for the task head (issue 12, task6;
`docs/task-labels-autoj.md`); training only.

`python tools/autoj_label_sample.py ids` prints the sample (the prompt's 0-based line number in
`autoj_scenarios/traindata.jsonl`), `PER` prompts drawn per mapped scenario with `SEED`
(`default`, which maps to no task, is left out). `python tools/autoj_label_sample.py show
START COUNT` prints prompts of the sample in a seeded shuffled order, showing only the line number
and the prompt text (instruction and input, long ones cut in the middle), never the scenario or
its mapped type: the labeller decides from the text alone.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from routing_data import DATA, _jsonl, autoj_task

PER = 9  # prompts per scenario: 58 scenarios -> ~520 prompts
SEED = 6
HEAD, TAIL = 1500, 400  # characters shown from a long prompt's start and end


def rows(data: Path = DATA) -> list[dict[str, str]]:
    """Auto-J train's rows, in file order."""
    return _jsonl(data / "autoj_scenarios" / "traindata.jsonl")


def sample(data: Path = DATA) -> list[int]:
    """The sampled line numbers, sorted: `PER` per mapped scenario (all of a smaller one)."""
    by: dict[str, list[int]] = {}
    for i, row in enumerate(rows(data)):
        if autoj_task(row["category"]) is not None:
            by.setdefault(row["category"], []).append(i)
    rng = random.Random(SEED)
    out: list[int] = []
    for cat in sorted(by):
        out += rng.sample(by[cat], min(PER, len(by[cat])))
    return sorted(out)


def text(row: dict[str, str]) -> str:
    """The prompt as the head sees it (`routing_data.load_autoj`)."""
    return row["instruction"] + (("\n\n" + row["input"]) if row.get("input") else "")


def shown_order(data: Path = DATA) -> list[int]:
    """The sample shuffled (seeded), so that one scenario's prompts do not come together."""
    order = sample(data)
    random.Random(SEED + 1).shuffle(order)
    return order


def main(argv: list[str]) -> int:
    if argv[:1] == ["ids"]:
        print("\n".join(str(i) for i in sample()))
        return 0
    if argv[:1] == ["show"] and len(argv) == 3:
        start, count = int(argv[1]), int(argv[2])
        all_rows = rows()
        for k, i in enumerate(shown_order()[start : start + count], start):
            t = text(all_rows[i])
            if len(t) > HEAD + TAIL:
                t = t[:HEAD] + f"\n[... {len(t) - HEAD - TAIL} characters cut ...]\n" + t[-TAIL:]
            print(f"=== #{k} line {i}\n{t}\n")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
