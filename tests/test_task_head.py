"""The learned router's task-type head (batchroute/task_head.py): packed integer weights, the
shipped file, and the prompts the previous head (task columns in router_model.bin) misread."""

from __future__ import annotations

import json
import struct
from importlib import resources
from zlib import crc32

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchroute import classifier, learned, task_head
from batchroute.types import TASK_TYPES

WEIGHT = st.integers(min_value=-(1 << 15) + 1, max_value=(1 << 15) - 1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(WEIGHT, min_size=10, max_size=10), min_size=0, max_size=300))
def test_a_sum_of_packed_weights_unpacks_to_the_per_class_sums(rows: list[list[int]]) -> None:
    total = sum(task_head.pack(r) for r in rows)
    assert task_head.unpack(total, 10) == [sum(r[j] for r in rows) for j in range(10)]


def test_a_weight_too_wide_for_16_bits_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bits"):
        task_head.pack([1 << 15])


def _blob(
    classes: list[str],
    ids: list[int],
    weights: list[list[int]],
    meta: dict[str, object] | None = None,
) -> bytes:
    header = json.dumps(
        {
            "classes": classes,
            "n_features": len(ids),
            "intercepts": [0] * len(classes),
            **({"meta": meta} if meta is not None else {}),
        }
    ).encode()
    flat = [w for row in weights for w in row]
    return (
        task_head.MAGIC
        + struct.pack("<I", len(header))
        + header
        + struct.pack(f"<{len(ids)}I", *ids)
        + struct.pack(f"<{len(flat)}h", *flat)
    )


def test_a_toy_file_parses_and_predicts_by_its_weights() -> None:
    head = task_head.parse(_blob(["chat", "translation"], [7, 9], [[5, -5], [-2, 300]]))
    assert head.predict([7]) == "chat"
    assert head.predict([7, 9]) == "translation"
    assert head.predict([]) == "chat"  # all logits 0: the first class
    assert head.logits([7, 9, 123]) == [3, 295]  # an unknown id adds nothing


def test_character_ngrams_are_taken_from_the_lower_cased_head_with_whitespace_folded() -> None:
    ids = set(task_head.char_features("SUMMARIZE\t\n  this"))
    assert {crc32(b"#c: su"), crc32(b"#c:summ"), crc32(b"#c:e th"), crc32(b"#c:his ")} <= ids
    assert crc32(b"#c:e\tt") not in ids
    # only the first CHAR_HEAD characters count: a long tail adds nothing
    head = "Translate into French: " * 20
    assert task_head.char_features(head) == task_head.char_features(head + "zzzz" * 100)
    assert task_head.char_features(head, 23) == task_head.char_features("Translate into French:")
    assert set(task_head.char_features("日本語")) == {crc32("#c: 日本".encode()),
        crc32("#c:日本語".encode()), crc32("#c:本語 ".encode()), crc32("#c: 日本語".encode()),
        crc32("#c:日本語 ".encode())}  # fmt: skip
    assert task_head.char_features("") == []


def test_a_head_trained_with_character_ngrams_reads_them_at_inference() -> None:
    gram = crc32(b"#c:tran")  # in "translate", not a word of it
    blob = _blob(["chat", "translation"], [gram], [[0, 50]], {"char": 100, "stacked": False})
    head = task_head.parse(blob)
    assert head.char == 100
    ids = learned.features("please translate this")
    assert task_head.predict(ids, "please translate this", head=head) == "translation"
    plain = task_head.parse(_blob(["chat", "translation"], [gram], [[0, 50]], {"stacked": False}))
    assert task_head.predict(ids, "please translate this", head=plain) == "chat"


def test_a_damaged_task_file_is_refused_with_its_name() -> None:
    with pytest.raises(ValueError, match=r"task_model\.bin"):
        task_head.parse(b"not a model")
    blob = _blob(["chat", "translation"], [7, 9], [[5, -5], [-2, 300]])
    with pytest.raises(ValueError, match="truncated or damaged"):
        task_head.parse(blob[:-1])


def test_the_shipped_files_together_stay_under_2_mb_and_the_head_knows_every_task_type() -> None:
    files = resources.files("batchroute")
    head_size = len(files.joinpath(task_head.MODEL_FILE).read_bytes())
    router_size = len(files.joinpath(learned.MODEL_FILE).read_bytes())
    assert head_size <= 1024 * 1024
    assert head_size + router_size <= 2 * 1024 * 1024
    head = task_head.load()
    assert set(head.classes) == set(TASK_TYPES)
    assert len(head.packed) > 1000


def test_the_heuristic_verdict_is_the_one_classify_reports() -> None:
    for text in ("Translate into German:\n\nThe meeting moved to Friday.", "hi", ""):
        task, rule = classifier.rule_verdict(text)
        c = classifier.classify(text)
        assert (c.task_type, c.reason.split(";cx:")[0]) == (task, rule)


# Short canonical instructions the previous head (Auto-J words only) got wrong and the
# heuristic gets right: summarization came out as analysis, a multiple-choice knowledge
# question as deep_reasoning (its training label for exam questions without math).
@pytest.mark.parametrize(
    ("text", "task"),
    [
        (
            "Summarize this memo in three bullet points: the office closes early on Friday, "
            "parking moves to lot B, and the all-hands is on Monday.",
            "summarization",
        ),
        ("Which of these is a mammal? A) shark B) dolphin C) trout D) octopus", "simple_qa"),
        (
            "Classify the sentiment of this review as positive, negative or neutral: "
            "The battery died after two days.",
            "classification",
        ),
    ],
)
def test_short_canonical_instructions_get_their_task_type(text: str, task: str) -> None:
    assert learned.classify(text).task_type == task
