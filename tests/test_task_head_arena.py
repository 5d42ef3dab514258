"""The hand-made arena task labels (tools/data/arena_task_labels.jsonl) and their loader
(`routing_data.load_arena_tasks`, training only)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from batchroute.types import TASK_TYPES

TOOLS = Path(__file__).resolve().parents[1] / "tools"
sys.path.insert(0, str(TOOLS))

import routing_data  # noqa: E402


def _arena(tmp_path: Path, ids: list[str], labels: list[str]) -> tuple[Path, Path]:
    """A data folder with an arena question file of `ids`, and a label file of `labels` lines."""
    folder = tmp_path / "arena_bench_v1"
    folder.mkdir()
    rows = [{"question_id": q, "turns": [f"prompt {q}"], "category": "x"} for q in ids]
    (folder / "question.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(line + "\n" for line in labels))
    return tmp_path, path


def _label(qid: str, task: str) -> str:
    return json.dumps({"question_id": qid, "task_type": task, "reason": ""})


def test_labels_join_the_prompts_in_the_question_files_order(tmp_path: Path) -> None:
    data, path = _arena(tmp_path, ["b", "a"], [_label("a", "chat"), _label("b", "simple_qa")])
    got = routing_data.load_arena_tasks(data, path)
    assert [(x.text, x.gold, x.group) for x in got] == [
        ("prompt b", "simple_qa", "arena"),
        ("prompt a", "chat", "arena"),
    ]


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        ([_label("a", "chat"), _label("b", "poetry")], r"labels\.jsonl:2: bad"),
        ([_label("a", "chat"), _label("a", "chat"), _label("b", "chat")], r":2: bad or repeated"),
        ([_label("a", "chat")], "no label for question_id b"),
        ([_label("a", "chat"), _label("b", "chat"), _label("c", "chat")], r"unknown.*'c'"),
    ],
)
def test_a_bad_label_file_is_named_with_its_line_or_id(
    tmp_path: Path, lines: list[str], match: str
) -> None:
    data, path = _arena(tmp_path, ["a", "b"], lines)
    with pytest.raises(ValueError, match=match):
        routing_data.load_arena_tasks(data, path)


def test_the_committed_labels_cover_300_prompts_with_known_types() -> None:
    rows = [json.loads(x) for x in routing_data.ARENA_LABELS.read_text().splitlines()]
    assert len(rows) == len({r["question_id"] for r in rows}) == 300
    assert {r["task_type"] for r in rows} <= set(TASK_TYPES)
    assert all(set(r) == {"question_id", "task_type", "reason"} for r in rows)


def test_the_shipped_head_says_whether_it_learnt_from_the_arena_labels() -> None:
    # the file's header names its training data: it must match the committed constant, so a
    # retrain that forgot the labels (or a stale file) is caught without the shared data
    pytest.importorskip("sklearn")
    import train_task_head

    from batchroute import task_head

    trained_on = str(task_head.load().meta["trained_on"])
    weight = train_task_head.ARENA_WEIGHT
    assert ("arena-bench-v1 hand-labelled" in trained_on) == bool(weight)
    if weight:
        assert f"(weight {weight:g})" in trained_on
