"""tools/train_task_head.py's extra data, class balancing and backoff on tiny fixtures (needs the
[train] extra)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from zlib import crc32

import pytest

np = pytest.importorskip("numpy")
pytest.importorskip("sklearn")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import routing_data  # noqa: E402
import train_task_head  # noqa: E402

ARC_PROMPT = (
    "Which gas do plants take in?\nA) oxygen\nB) carbon dioxide\n"
    'Print only a single choice  from "A" or "B" without explanation.\nAnswer:\nB\n\n'
    "What makes a shadow?\nA) light blocked\nB) sound\n"
    'Print only a single choice  from "A" or "B" without explanation.\nAnswer:'
)
WINO_PROMPT = (
    "Please answer with the letter of the correct answer.\n\n"
    "The cup fell off the table because _ was tilted.\nA) cup\nB) table\n"
    'Print only a single choice  from "A" or "B" without explanation. Answer:\nB\n\n'
    "Please answer with the letter of the correct answer.\n\n"
    "Which gas do plants take in?\nA) oxygen\nB) carbon dioxide\n"
    'Print only a single choice  from "A" or "B" without explanation. Answer:'
)


def _routerbench(folder: Path, rows: list[tuple[str, str]]) -> Path:
    """A RouterBench folder with one train CSV holding (eval_name, prompt) rows."""
    rb = folder / "routerbench_0shot_subset"
    rb.mkdir(parents=True)
    models = list(routing_data.TIER_MODELS.values())
    with (rb / "mixed_train.csv").open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["", "prompt", "eval_name", *models, *(f"{m}|total_cost" for m in models)])
        for i, (group, prompt) in enumerate(rows):
            w.writerow([i, repr([prompt]), group, *["1.0"] * 4, *["0.001"] * 4])
    return folder


def test_few_shot_prompts_split_into_their_distinct_question_items(tmp_path: Path) -> None:
    data = _routerbench(
        tmp_path, [("arc-challenge", ARC_PROMPT), ("winogrande", WINO_PROMPT), ("mbpp", "x")]
    )
    plants = "Which gas do plants take in?\nA) oxygen\nB) carbon dioxide"
    arc = routing_data.routerbench_items("train", "arc-challenge", data)
    assert arc == [plants, "What makes a shadow?\nA) light blocked\nB) sound"]
    wino = routing_data.routerbench_items("train", "winogrande", data)
    assert wino == ["The cup fell off the table because _ was tilted.\nA) cup\nB) table", plants]


def test_balanced_weights_are_sklearns_balanced_when_every_source_weighs_one() -> None:
    from sklearn.utils.class_weight import compute_sample_weight

    labels = ["a"] * 5 + ["b"] * 2 + ["c"]
    got = train_task_head.balanced_weights(labels, [1.0] * len(labels))
    assert got == pytest.approx(compute_sample_weight("balanced", labels))


def test_a_light_source_counts_less_toward_its_class_total() -> None:
    # two base prompts of class a, two extra prompts of a at weight 0.5, two of b: class a's
    # weighted count is 3, b's 2; balancing gives each class the same total weight
    labels = ["a", "a", "a", "a", "b", "b"]
    w = train_task_head.balanced_weights(labels, [1.0, 1.0, 0.5, 0.5, 1.0, 1.0])
    assert w[:4].sum() == pytest.approx(w[4:].sum())
    assert w[0] == pytest.approx(2 * w[2])


def _toy() -> tuple[list[tuple[list[int], list[int]]], list[str]]:
    """Prompts of three task types; the heuristic's verdict agrees on most, not all."""
    tasks = ("simple_qa", "deep_reasoning", "analysis")
    ht = {t: crc32(b"#ht:" + t.encode()) for t in tasks}
    hr = crc32(b"#hr:some_rule")
    docs, labels = [], []
    for i in range(40):
        gold = tasks[i % 3]
        verdict = gold if i % 5 else tasks[(i + 1) % 3]
        docs.append(([1000 + i % 7, 2000 + (i % 3)], [ht[verdict], hr]))
        labels.append(gold)
    return docs, labels


def test_backoff_raises_the_heuristic_verdicts_own_logit_by_that_margin() -> None:
    docs, labels = _toy()
    plain = train_task_head.fit(docs, labels, backoff=0.0)
    backed = train_task_head.fit(docs, labels, backoff=2.0)
    step = float(backed.meta["step"])
    for words, heur in docs[:6]:
        verdict = next(t for t in plain.classes if crc32(b"#ht:" + t.encode()) in heur)
        a = plain.logits([*words, *heur])
        b = backed.logits([*words, *heur])
        p_step = float(plain.meta["step"])
        gap = {t: b[j] / step - a[j] / p_step for j, t in enumerate(plain.classes)}
        assert gap[verdict] - max(g for t, g in gap.items() if t != verdict) == pytest.approx(
            2.0, abs=0.01
        )


def test_training_with_extra_prompts_is_deterministic() -> None:
    docs, labels = _toy()
    weights = [1.0] * 30 + [0.3] * 10
    one = train_task_head.fit(docs, labels, source_weights=weights, backoff=1.0)
    two = train_task_head.fit(docs, labels, source_weights=weights, backoff=1.0)
    assert train_task_head.to_bytes(one, 40) == train_task_head.to_bytes(two, 40)


def test_the_cv_sweeps_backoff_after_the_fit_as_training_would_before_it() -> None:
    import task_head_cv

    docs, labels = _toy()
    plain = train_task_head.fit(docs, labels)
    for b in (0.5, 2.0, 8.0):
        backed = train_task_head.fit(docs, labels, backoff=b)
        got = [task_head_cv.with_backoff(plain, d, b) for d in docs]
        assert got == [backed.predict([*w, *h]) for w, h in docs]


def test_the_scenario_filter_drops_words_seen_in_too_few_scenarios() -> None:
    # word 7 occurs in 4 prompts of one scenario, word 8 in 2 prompts of two scenarios, word 9
    # in 3 scenarios; the heuristic id 50 only once but is always kept
    docs = [([7, 8], [50]), ([7], []), ([7, 9], []), ([7, 8, 9], []), ([9], [])]
    groups = ["a", "a", "a", "b", "c"]
    assert train_task_head.Design(docs, 3.0).ids == [7, 8, 9, 50]  # MIN_DF 2 only
    assert train_task_head.Design(docs, 3.0, groups, 2).ids == [7, 8, 9, 50]
    assert train_task_head.Design(docs, 3.0, groups, 3).ids == [9, 50]
    with pytest.raises(ValueError, match="group"):
        train_task_head.Design(docs, 3.0, None, 2)


def test_a_filtered_head_holds_only_the_kept_features() -> None:
    docs, labels = _toy()
    # word ids 1000+i%7 fall in scenario i%4 (7 and 4 coprime: every word in all 4); word
    # 2000+i%3 only in prompts whose scenario is i%3's alone
    groups = [f"s{i % 4}" for i in range(40)]
    groups2 = [f"t{i % 3}" for i in range(40)]
    head = train_task_head.fit(docs, labels, groups=groups, min_groups=4)
    assert {1000 + k for k in range(7)} <= set(head.packed)
    only = train_task_head.fit(docs, labels, groups=groups2, min_groups=2)
    assert not {2000, 2001, 2002} & set(only.packed)


def test_scenario_weights_give_every_scenario_the_same_total() -> None:
    w = train_task_head.scenario_weights(["a", "a", "a", "b", "c", "c"])
    assert w == pytest.approx([1 / 3] * 3 + [1.0] + [0.5] * 2)


def test_random_group_folds_hold_out_whole_groups_and_are_seeded() -> None:
    import task_head_cv

    groups = [f"g{i % 11}" for i in range(60)]
    folds = task_head_cv.random_group_folds(groups, 5, 1)
    assert sorted(i for _, te in folds for i in te) == list(range(60))
    for tr, te in folds:
        assert not {groups[i] for i in tr} & {groups[i] for i in te}
    assert folds == task_head_cv.random_group_folds(groups, 5, 1)
    assert folds != task_head_cv.random_group_folds(groups, 5, 2)


def test_training_with_the_scenario_filter_and_balance_is_deterministic() -> None:
    docs, labels = _toy()
    groups = [f"s{i % 4}" for i in range(40)]
    w = train_task_head.scenario_weights(groups)
    one = train_task_head.fit(docs, labels, groups=groups, min_groups=3, source_weights=w)
    two = train_task_head.fit(docs, labels, groups=groups, min_groups=3, source_weights=w)
    assert train_task_head.to_bytes(one, 40) == train_task_head.to_bytes(two, 40)
