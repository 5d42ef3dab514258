"""Classifier throughput on one core: heuristic vs learned (issue 12: learned ≥ 5,000 prompts/s).

Run on demand:
    .venv/bin/python tests/bench/bench_classify.py [--prompts 20000] [--data ../shared/data]

Prompts are synthetic (a seeded mix of short questions, instructions with a pasted text, and code)
unless --data points at ../shared/data, in which case the Auto-J test and MT-Bench prompts are
used as they are. The rate is prompts per second of this process's CPU time (time.process_time),
so other processes on a shared machine slow it less than wall-clock would; the wall-clock rate
is printed too. The model files' one-off load and the build of the fast path's exact tables
(`learned._exact_tables`, after the first 1,000 predictions) are timed separately; the learned
rate includes both the warm-up and the build. Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

WORDS = tuple(
    [
        "the",
        "a",
        "of",
        "to",
        "and",
        "in",
        "data",
        "model",
        "user",
        "report",
        "results",
        "service",
        "customer",
        "city",
        "river",
        "policy",
        "function",
        "list",
        "value",
        "error",
        "market",
        "energy",
        "health",
        "study",
        "team",
        "project",
        "plan",
        "budget",
        "history",
        "music",
        "science",
        "language",
        "question",
        "answer",
        "system",
        "network",
        "memory",
        "record",
        "table",
        "price",
    ]
)
STARTS = [
    "What is",
    "Write a short story about",
    "Summarize the following text:",
    "Translate into French:",
    "Write a Python function that",
    "Explain why",
    "Compare",
    "Classify the sentiment of",
    "Fix the bug in this code:",
    "Prove that",
]


def synthetic(n: int, seed: int = 12) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = int(rng.lognormvariate(3.5, 1.0))  # median ~33 words, long tail
        body = " ".join(rng.choice(WORDS) for _ in range(max(3, min(length, 900))))
        text = f"{rng.choice(STARTS)} {body}."
        if rng.random() < 0.1:
            text += "\n```python\ndef f(x):\n    return x + 1\n```"
        out.append(text)
    return out


def shared(data: Path) -> list[str]:
    texts = []
    for line in (data / "autoj_scenarios" / "testdata.jsonl").read_text("utf-8").split("\n"):
        if line.strip():
            row = json.loads(line)
            texts.append(row["instruction"] + ("\n\n" + row["input"] if row["input"] else ""))
    for line in (data / "mt_bench" / "question.jsonl").read_text("utf-8").split("\n"):
        if line.strip():
            texts.append(json.loads(line)["turns"][0])
    return texts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=20_000)
    ap.add_argument("--data", type=Path, default=None)
    a = ap.parse_args()
    base = shared(a.data) if a.data else synthetic(2_000)
    texts = (base * (a.prompts // len(base) + 1))[: a.prompts]
    mean = sum(map(len, texts)) / len(texts)
    print(f"{len(texts)} prompts, mean {mean:.0f} chars; load average {os.getloadavg()[0]:.1f}")
    t0 = time.process_time()
    from batchroute import classifier, learned, task_head

    learned.load_model()
    task_head.load()
    print(f"import + model load: {(time.process_time() - t0) * 1000:.0f} ms CPU")
    t0 = time.process_time()
    learned._build_exact(learned.load_model())  # not kept: the timed loop below builds its own
    print(
        f"fast path's exact tables: {(time.process_time() - t0) * 1000:.0f} ms CPU, once, "
        f"after {learned._WARM_UP:,} predictions (inside the learned figure below)"
    )
    for name, fn in (("heuristic", classifier.classify), ("learned", learned.classify)):
        c0, w0 = time.process_time(), time.perf_counter()
        for t in texts:
            fn(t)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        target = "  (target ≥ 5,000/s)" if name == "learned" else ""
        print(
            f"{name:>9}: {len(texts) / cpu:8,.0f} prompts/s CPU, "
            f"{len(texts) / wall:8,.0f} prompts/s wall{target}"
        )


if __name__ == "__main__":
    main()
