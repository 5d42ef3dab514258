"""Tests for the heuristic classifier: every task type, complexity ordering, robustness."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchroute.classifier import classify
from batchroute.types import COMPLEXITIES, TASK_TYPES

EXAMPLES = [
    (
        "Sort these support tickets into billing, shipping or technical:\n1. Card declined",
        "classification",
    ),
    ("What is the sentiment of this tweet: 'worst commute ever'?", "classification"),
    ("Who discovered penicillin?", "simple_qa"),
    ("Translate into German:\n\nThe meeting moved to Friday.", "translation"),
    ("¿Dónde está la estación de tren? Please put it in English.", "translation"),
    (
        "Summarize this memo in three bullet points: the office closes early on Friday.",
        "summarization",
    ),
    ("Hey there! Any tips for a rainy Sunday?", "chat"),
    ("Pretend you are a medieval innkeeper and welcome me.", "chat"),
    ("Write a Python function that checks whether a year is a leap year.", "code_generation"),
    (
        "Why does this fail with a TypeError?\n```\ndef f(a):\n    return a + '1'\nf(2)\n```",
        "code_review",
    ),
    ("Compare the pros and cons of renting versus buying a flat in a big city.", "analysis"),
    ("Write a limerick about a cat who hates Mondays.", "creative_writing"),
    ("Prove that the square of an odd integer is odd.", "deep_reasoning"),
]


@pytest.mark.parametrize(("text", "expected"), EXAMPLES)
def test_hand_written_examples(text: str, expected: str) -> None:
    assert classify(text).task_type == expected


def test_every_task_type_is_covered_by_the_examples() -> None:
    assert {expected for _, expected in EXAMPLES} == set(TASK_TYPES)


def test_one_line_question_is_less_complex_than_multi_part_proof() -> None:
    easy = classify("What is the capital of Peru?")
    hard = classify(
        "Prove rigorously that every bounded monotone sequence converges. Then:\n"
        "1. Derive the limit of x_{n+1} = sqrt(2 + x_n) with x_0 = 0.\n"
        "2. Show the convergence rate.\n3. Give a counterexample without monotonicity.\n"
        "Each step must be justified, and you should avoid citing theorems without proof."
    )
    assert COMPLEXITIES.index(easy.complexity) < COMPLEXITIES.index(hard.complexity)


def test_reason_names_rule_and_complexity_cue() -> None:
    reason = classify("Translate to French: good night").reason
    assert reason.startswith("rule:translate_verb;cx:")


def test_system_prompt_can_name_the_task() -> None:
    result = classify("Das Wetter ist heute schön.", system="Translate the user text into English.")
    assert result.task_type == "translation"
    assert result.reason.startswith("system:")


def test_generic_system_prompt_does_not_override() -> None:
    result = classify("Who painted Guernica?", system="You are a helpful assistant.")
    assert result.task_type == "simple_qa"


def test_deterministic() -> None:
    text = "Analyze the following sales figures and explain the trend: 10, 12, 9, 15."
    assert len({classify(text) for _ in range(5)}) == 1


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=5000), st.text(max_size=200))
def test_any_string_gives_valid_output(text: str, system: str) -> None:
    result = classify(text, system=system)
    assert result.task_type in TASK_TYPES
    assert result.complexity in COMPLEXITIES
    assert result.reason


@pytest.mark.parametrize("text", ["", " ", "\x00\x01\uffff" * 1000, "a" * 2_000_000, "?" * 10_000])
def test_edge_inputs(text: str) -> None:
    result = classify(text)
    assert result.task_type in TASK_TYPES
    assert result.complexity in COMPLEXITIES


REPO = Path(__file__).resolve().parents[1]
DATA = next(
    (p for p in (Path("/work/shared/data"), REPO.parent / "shared" / "data") if p.is_dir()), None
)
MT_BENCH_FLOOR = 0.55  # measured 0.625 (50/80) on MT-Bench turn 1; margin for rule edits


@pytest.mark.skipif(DATA is None, reason="shared evaluation data not present")
def test_mt_bench_accuracy_stays_above_floor() -> None:
    spec = importlib.util.spec_from_file_location(
        "eval_classifier", REPO / "tools" / "eval_classifier.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert DATA is not None
    assert module.evaluate_mt_bench(DATA) >= MT_BENCH_FLOOR
