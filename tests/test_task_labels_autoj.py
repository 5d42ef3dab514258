"""The hand-made Auto-J train labels (tools/data/autoj_task_labels.jsonl), the second opinion on
the arena labels, and their helpers (`tools/autoj_hand.py`; training only)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from batchroute.types import TASK_TYPES

TOOLS = Path(__file__).resolve().parents[1] / "tools"
sys.path.insert(0, str(TOOLS))

import autoj_hand  # noqa: E402


def test_the_committed_autoj_labels_cover_517_distinct_lines_with_known_types() -> None:
    rows = [json.loads(x) for x in autoj_hand.HAND_LABELS.read_text().splitlines()]
    assert len(rows) == len({r["line"] for r in rows}) == 517
    assert {r["task_type"] for r in rows} <= set(TASK_TYPES)
    assert all(set(r) == {"line", "task_type", "reason"} for r in rows)
    assert autoj_hand.hand_labels() == {r["line"]: r["task_type"] for r in rows}


def test_the_second_arena_labels_are_100_known_ids_of_the_first_file() -> None:
    second = TOOLS / "data" / "arena_task_labels_second.jsonl"
    first = TOOLS / "data" / "arena_task_labels.jsonl"
    rows = [json.loads(x) for x in second.read_text().splitlines()]
    ids = {json.loads(x)["question_id"] for x in first.read_text().splitlines()}
    assert len(rows) == len({r["question_id"] for r in rows}) == 100
    assert {r["question_id"] for r in rows} <= ids
    assert {r["task_type"] for r in rows} <= set(TASK_TYPES)


def test_a_label_line_without_its_fields_is_named(tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    path.write_text('{"line": 3, "task_type": "chat"}\n{"line": 4}\n')
    with pytest.raises(ValueError, match=r"labels\.jsonl:2: needs"):
        autoj_hand.hand_labels(path)


def test_kappa_is_one_for_agreement_and_zero_at_chance() -> None:
    assert autoj_hand.kappa(["a", "b", "a"], ["a", "b", "a"]) == 1.0
    # each labeller splits evenly and they agree on half: exactly chance
    assert autoj_hand.kappa(["a", "a", "b", "b"], ["a", "b", "a", "b"]) == 0.0
    assert autoj_hand.kappa(["a", "a", "b", "b"], ["b", "b", "a", "a"]) == -1.0
