"""learned.structure: the prompt-shape features the routing heads read besides the words."""

from __future__ import annotations

from zlib import crc32

from batchroute import learned

FEW_SHOT = (
    "Which gas do plants take in?\nA) oxygen\nB) carbon dioxide\nAnswer:\nB\n\n"
    "Which is NOT a mammal? It has 2 legs.\nA) a bat\nB) a whale\nC) a sparrow flying south\n"
    "D) a dog\nAnswer:"
)


def _has(ids: list[int], name: str) -> bool:
    return crc32(name.encode()) in ids


def test_the_last_block_is_the_item_asked_about() -> None:
    ids = learned.structure(FEW_SHOT)
    assert _has(ids, "#nblk2")
    assert _has(ids, "#nopt4")  # the last item's four options, not the example's two
    assert _has(ids, "#neg1")
    assert _has(ids, "#q1")
    assert _has(ids, "#nnum1")
    assert _has(ids, "#optmax4")  # "a sparrow flying south": 23 characters
    assert not _has(ids, "#nopt2")


def test_code_tests_are_counted_and_a_prompt_without_options_has_no_option_lengths() -> None:
    code = "Write a function to add two numbers.\nassert add(1, 2) == 3\nassert add(0, 0) == 0"
    ids = learned.structure(code)
    assert _has(ids, "#assert2")
    assert _has(ids, "#nopt0")
    assert not any(_has(ids, f"#optmax{i}") for i in range(9))


def test_routing_features_add_the_shape_to_the_words_and_are_deterministic() -> None:
    words = learned.features(FEW_SHOT)
    both = learned.routing_features(FEW_SHOT)
    assert set(words) < set(both)
    assert set(both) == set(words) | set(learned.structure(FEW_SHOT))
    assert both == sorted(both) == learned.routing_features(FEW_SHOT)
