"""Every classify output on every prompt of ../shared/data, one `repr` line each (issue 12).

Run once per source tree and compare the files: a speed change must leave them identical.

    git archive <commit> | tar -x -C /tmp/base
    PYTHONPATH=/tmp/base .venv/bin/python tests/bench/classify_outputs.py --data ../shared/data \
        --out /tmp/base.txt
    .venv/bin/python tests/bench/classify_outputs.py --data ../shared/data --out /tmp/new.txt
    cmp /tmp/base.txt /tmp/new.txt

Or against the recorded digest of 20a88a7's output (`RECORDED`, for the same two model files and
data folder): `.venv/bin/python tests/bench/classify_outputs.py --data ../shared/data --out
/tmp/new.txt --check` exits 1 on a difference, and says so when the model files differ (a
retrained model changes outputs: compare two trees then).

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
import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

SYSTEM = "You are a helpful assistant. Translate the user's text into French if asked."
# sha256 of the output file at 20a88a7 (fast and plain paths alike), by the sha256 of the
# (router_model.bin, task_model.bin) it was made with; ../shared/data as of 2026-12-07
RECORDED = {
    (
        "e7e632145b322308f363381af3eac64d42e5c605b0d45a07661af7489ecc657c",
        "d6c86fe776d83be3d46f48517949fe19f05720d49cbaa0adc5d0173532dd29d7",
    ): "0e53b73e3e9972cfd43fc8d3a2a677c41c02878f5cf728c1d88c43935cc47194",
}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
    ap.add_argument("--check", action="store_true", help="compare with RECORDED (exit 1 if not)")
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
    if a.check:
        from importlib import resources

        data = resources.files("batchroute") / "data"
        models = (
            _sha((data / "router_model.bin").read_bytes()),
            _sha((data / "task_model.bin").read_bytes()),
        )
        want, got = RECORDED.get(models), _sha(a.out.read_bytes())
        if want is None:
            raise SystemExit("model files other than the recorded ones': compare two trees instead")
        print(f"sha256 {got}: {'the recorded output' if got == want else 'DIFFERS'}")
        if got != want:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
