"""Every classify output on every prompt of ../shared/data, one `repr` line each (issue 12).

Run once per source tree and compare the files: a speed change must leave them identical.

    git archive <commit> | tar -x -C /tmp/base
    PYTHONPATH=/tmp/base .venv/bin/python tests/bench/classify_outputs.py --data ../shared/data \
        --out /tmp/base.txt
    .venv/bin/python tests/bench/classify_outputs.py --data ../shared/data --out /tmp/new.txt
    cmp /tmp/base.txt /tmp/new.txt

Texts: Auto-J train and test (instruction alone, and with its input), MT-Bench and arena-bench
turns, WizardLM instructions, RouterBench prompts (the raw field and each parsed turn) and the
RouterBench models' answers (code, numbers, options, unicode: varied text). For each: the
learned and heuristic `classify`, with no system prompt and with one, and `learned.structure`.
The learned classifier's first 1,000 predictions take its plain path: the whole corpus is
classified once first, so every line below comes from the fast path (`--plain`: every line
from the plain path instead). Not a test.
"""

from __future__ import annotations

import argparse
import ast
import csv
import dataclasses
import json
import sys
from collections.abc import Iterator
from pathlib import Path

SYSTEM = "You are a helpful assistant. Translate the user's text into French if asked."


def _jsonl(path: Path) -> Iterator[dict[str, object]]:
    for line in path.read_text("utf-8").split("\n"):
        if line.strip():
            yield json.loads(line)


def corpus(data: Path) -> list[str]:
    """The texts, in a fixed order (duplicates kept: the order is what the files compare)."""
    out: list[str] = []
    for name in ("traindata.jsonl", "testdata.jsonl"):
        for r in _jsonl(data / "autoj_scenarios" / name):
            out.append(str(r["instruction"]))
            if r.get("input"):
                out.append(f"{r['instruction']}\n\n{r['input']}")
    for name in ("mt_bench", "arena_bench_v1"):
        for r in _jsonl(data / name / "question.jsonl"):
            out.extend(map(str, r["turns"]))  # type: ignore[call-overload]
    wizard = data / "wizardlm_testset" / "WizardLM_testset.jsonl"
    out.extend(str(r["Instruction"]) for r in _jsonl(wizard))
    csv.field_size_limit(sys.maxsize)
    for path in sorted((data / "routerbench_0shot_subset").glob("*.csv")):
        with path.open(encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                out.append(row["prompt"])
                for field in ("prompt", *(k for k in row if k.endswith("|model_response"))):
                    try:
                        turns = ast.literal_eval(row[field])
                    except (ValueError, SyntaxError, MemoryError, RecursionError):
                        continue
                    if isinstance(turns, list):
                        out.extend(t for t in turns if isinstance(t, str))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--plain", action="store_true", help="the learned plain path, not the fast")
    a = ap.parse_args()
    from batchroute import classifier, learned

    texts = corpus(a.data)
    if a.plain:  # every prediction through the reference path (`_predict_ids`)
        learned._fast_for = lambda m: None  # type: ignore[assignment]
    else:
        for t in texts:  # past the learned classifier's warm-up: the lines below are the fast path
            learned.classify(t)
        if learned._exact is None or learned._exact[2] is None:
            raise SystemExit("the learned classifier's fast path is not built: nothing compared")
    with a.out.open("w", encoding="utf-8", errors="surrogatepass") as fh:
        for i, t in enumerate(texts):
            rows = [
                learned.structure(t),
                *(dataclasses.astuple(learned.classify(t, system=s)) for s in ("", SYSTEM)),
                *(dataclasses.astuple(classifier.classify(t, system=s)) for s in ("", SYSTEM)),
            ]
            fh.write(f"{i}\t{rows!r}\n")
    print(f"{len(texts)} texts, {len(texts) * 5} outputs -> {a.out}")


if __name__ == "__main__":
    main()
