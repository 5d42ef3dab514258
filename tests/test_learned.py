"""The learned router (batchroute/learned.py): contract, determinism, the shipped model file."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from importlib import resources
from zlib import crc32

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchroute import learned
from batchroute.thresholds import LEVELS
from batchroute.types import COMPLEXITIES, TASK_TYPES

PROMPTS = [
    "Write a Python function that reverses a linked list.",
    "Translate into German:\n\nThe meeting moved to Friday.",
    "Summarize this memo in three bullet points: the office closes early on Friday.",
    "Prove that the square of an odd integer is odd.",
    "hi",
    "",
    "¿Dónde está la estación de tren? 東京はどこですか",
    "x" * 50_000,
    "\ud800 lone surrogate and \x00 NUL",
]


def test_the_model_file_ships_in_the_package_and_is_at_most_2_mb() -> None:
    blob = resources.files("batchroute").joinpath(learned.MODEL_FILE).read_bytes()
    assert len(blob) <= 2 * 1024 * 1024
    model = learned.load_model()
    # the routing heads only: the task type is the task head's own file (test_task_head.py);
    # per level quality, then per level log cost factor
    assert model.classes == ()
    assert model.n_levels == len(LEVELS)
    assert len(model.intercepts) == 2 * len(LEVELS)
    assert len(model.rows) == len(model.weights) > 1000
    assert list(model.complexity_cuts) == sorted(model.complexity_cuts)


def test_a_damaged_model_file_is_refused_with_its_name() -> None:
    with pytest.raises(ValueError, match=r"router_model\.bin"):
        learned._parse(b"not a model")
    blob = resources.files("batchroute").joinpath(learned.MODEL_FILE).read_bytes()
    with pytest.raises(ValueError, match="truncated or damaged"):
        learned._parse(blob[: len(blob) // 2])


@pytest.mark.parametrize("text", PROMPTS)
def test_classify_keeps_the_contract(text: str) -> None:
    c = learned.classify(text, system="You are a translator.")
    assert c.task_type in TASK_TYPES
    assert c.complexity in COMPLEXITIES
    assert c.reason.startswith("learned:")
    assert c.score is not None
    assert 0.0 <= c.score <= 1.0
    assert c.tier_quality is not None
    assert len(c.tier_quality) == len(LEVELS)
    assert c.tier_cost is not None
    assert all(1 / 21 < f < 21 for f in c.tier_cost)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=3000), st.text(max_size=200))
def test_any_text_classifies_and_twice_gives_the_same(text: str, system: str) -> None:
    a = learned.classify(text, system=system)
    assert a == learned.classify(text, system=system)
    assert a.task_type in TASK_TYPES


def test_obvious_prompts_get_their_task_type() -> None:
    # Not a quality measure (that is docs/routing-eval.md): a check that the weights are wired
    # to the right class names, which a transposed matrix or shuffled header would break.
    assert learned.classify(PROMPTS[0]).task_type == "code_generation"
    assert learned.classify(PROMPTS[1]).task_type == "translation"
    assert learned.classify("Write a limerick about a cat.").task_type == "creative_writing"
    assert learned.classify("Hey there! Any tips for a rainy Sunday?").task_type == "chat"


_CHILD = """
import dataclasses, json, sys
from batchroute import learned
texts = json.loads(sys.stdin.read())
out = [dataclasses.astuple(learned.classify(t)) for t in texts]
mods = {"sklearn": "sklearn" in sys.modules, "numpy": "numpy" in sys.modules}
print(json.dumps({"out": out, **mods}))
"""


def _fresh(seed: str) -> dict[str, object]:
    env = {"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD],
        input=json.dumps(PROMPTS[:-1]),
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    )
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def test_same_input_same_output_across_fresh_interpreters_and_hash_seeds() -> None:
    a, b = _fresh("1"), _fresh("987654")
    assert a["out"] == b["out"]
    here = [dataclasses.astuple(learned.classify(t)) for t in PROMPTS[:-1]]
    assert a["out"] == json.loads(json.dumps(here))
    assert a["sklearn"] is False  # inference never needs the training extra
    assert a["numpy"] is False


def _toy_model(quality: dict[str, tuple[float, ...]], log_cost: dict[str, float]) -> learned.Model:
    """A model whose only features are single words, with the given per-level quality weights
    and one log cost factor weight (the same for every level)."""
    words = sorted(set(quality) | set(log_cost))
    rows: dict[int, tuple[float, ...]] = {}
    weights: list[tuple[float, ...]] = []
    for w in words:
        fid = crc32(w.encode())
        q = quality.get(w, (0.0,) * 4)
        weights.append((0.0,) * len(TASK_TYPES) + q + (log_cost.get(w, 0.0),) * 4)
        rows[fid] = weights[-1]
    return learned.Model(
        classes=TASK_TYPES,
        rows=rows,
        weights=weights,
        intercepts=(0.0,) * len(TASK_TYPES) + (0.5, 0.6, 0.6, 0.8) + (0.0,) * 4,
        complexity_cuts=(0.5, 0.6, 0.7),
        score_scale=10.0,
        n_levels=4,
        meta={},
    )


def test_predict_gives_per_level_quality_and_cost_factors_and_the_score_follows_the_gain() -> None:
    model = _toy_model({"hard": (0.0, 0.0, 0.0, 0.2), "easy": (0.2, 0.2, 0.2, 0.0)}, {"long": 1.0})
    pred = {t: learned.predict(t, model=model) for t in ("hard", "easy", "long", "plain")}
    assert pred["plain"].quality == pytest.approx((0.5, 0.6, 0.6, 0.8))
    assert pred["hard"].quality == pytest.approx((0.5, 0.6, 0.6, 1.0))
    assert pred["long"].factor == pytest.approx((math.e,) * 4)
    assert pred["plain"].factor == (1.0,) * 4
    # score: sigmoid(10 · (premium − best of budget and mid))
    assert pred["plain"].score == pytest.approx(1 / (1 + math.exp(-10 * 0.2)))
    assert pred["easy"].score < pred["plain"].score == pred["long"].score < pred["hard"].score
