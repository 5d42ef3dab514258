"""tools/eval_routing.py and its metrics on a tiny fixture made here (never ../shared)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"
sys.path.insert(0, str(TOOLS))

import eval_routing  # noqa: E402
import routing_metrics as rm  # noqa: E402
from routing_data import ARENA_MODELS, TIER_MODELS  # noqa: E402


def test_task_scores_count_accepted_labels_as_right_and_average_f1_over_gold() -> None:
    golds = ["a", "a", "b", "c"]
    accepted = [("a",), ("a",), ("b", "a"), ("c",)]
    preds = ["a", "b", "a", "c"]
    sc = rm.task_scores(golds, accepted, preds)
    assert sc.accuracy == 0.75  # "a" for a b-or-a item is right
    # truth a,a,a,c vs pred a,b,a,c: F1(a) = 2·2/(2·2+0+1) = 0.8, F1(c) = 1
    assert sc.macro_f1 == pytest.approx((0.8 + 1.0) / 2)
    assert sc.confusion[("a", "b")] == 1
    assert sc.labels[:2] == ("a", "c")


def test_spearman_on_known_rankings() -> None:
    assert rm.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert rm.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert rm.spearman([1, 1, 1], [1, 2, 3]) == 0.0


Q = [
    {"budget": 0.0, "mid": 1.0, "standard": 1.0, "premium": 1.0},
    {"budget": 0.0, "mid": 0.0, "standard": 0.0, "premium": 1.0},
    {"budget": 1.0, "mid": 1.0, "standard": 1.0, "premium": 1.0},
    {"budget": 0.0, "mid": 0.0, "standard": 0.0, "premium": 0.0},
]
C = [{"budget": 1.0, "mid": 2.0, "standard": 3.0, "premium": 10.0}] * 4


def test_oracle_takes_the_cheapest_tier_reaching_the_best_quality() -> None:
    p = rm.oracle(Q, C)
    assert p.quality == 0.75
    assert p.cost == (2 + 10 + 1 + 1) / 4
    assert p.shares == {"budget": 0.5, "mid": 0.25, "premium": 0.25}


def test_random_with_equal_shares_is_the_share_weighted_mean_of_tiers() -> None:
    p = rm.route_point("x", ["mid", "premium", "budget", "budget"], Q, C)
    r = rm.random_like(p, Q, C)
    assert r.shares == p.shares
    mean = {t: sum(q[t] for q in Q) / 4 for t in rm.TIERS}
    assert r.quality == pytest.approx(
        0.5 * mean["budget"] + 0.25 * mean["mid"] + 0.25 * mean["premium"]
    )
    assert r.cost == pytest.approx(0.5 * 1 + 0.25 * 2 + 0.25 * 10)


def test_apgr_of_random_routing_is_one_half_and_of_a_perfect_router_near_one() -> None:
    assert rm.apgr(lambda s: 0.6 + s * 0.2, 0.6, 0.8) == pytest.approx(0.5)
    assert rm.apgr(lambda s: 0.8, 0.6, 0.8) == pytest.approx(1.0)
    assert rm.pgr(0.7, 0.6, 0.8) == pytest.approx(0.5)


# --- the whole command on a fixture with every file the eval reads -------------------------------


def _jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


PROMPTS = [
    "Write a Python function that adds two numbers.",
    "Which planet is closest to the sun?\nA) Mars\nB) Mercury",
    "The trophy didn't fit in the suitcase because _ was too big.\nA) trophy\nB) suitcase",
    "Prove that there are infinitely many primes.",
]


def _fixture(root: Path) -> Path:
    data = root / "data"
    _jsonl(
        data / "mt_bench" / "question.jsonl",
        [
            {"question_id": 81, "category": "writing", "turns": ["Write a poem about rain.", "x"]},
            {"question_id": 82, "category": "coding", "turns": [PROMPTS[0], "x"]},
            {"question_id": 83, "category": "math", "turns": [PROMPTS[3], "x"]},
        ],
    )
    _jsonl(
        data / "wizardlm_testset" / "WizardLM_testset.jsonl",
        [
            {"idx": 1, "Skill": "Math", "Difficulty": 2, "Instruction": "What is 2 + 2?"},
            {"idx": 2, "Skill": "Code Generation", "Difficulty": 7, "Instruction": PROMPTS[0]},
            {"idx": 3, "Skill": "Biology", "Difficulty": 5, "Instruction": "Why do cells die?"},
        ],
    )
    autoj = [
        {"category": "code_generation", "instruction": PROMPTS[0], "input": ""},
        {"category": "text_summarization", "instruction": "Summarize:", "input": "Long text."},
        {"category": "default", "instruction": "ok", "input": ""},
        {"category": "writing_poem", "instruction": "Write a poem about rain.", "input": ""},
    ]
    _jsonl(data / "autoj_scenarios" / "testdata.jsonl", autoj)
    _jsonl(data / "autoj_scenarios" / "traindata.jsonl", autoj)
    models = list(TIER_MODELS.values())
    header = ["", "sample_id", "prompt", "eval_name"]
    header += models + [f"{m}|total_cost" for m in models]
    for split in ("train", "test"):
        path = data / "routerbench_0shot_subset" / f"arc_challenge_{split}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            for i, text in enumerate(PROMPTS * 3):
                right = [1.0, 1.0, 1.0, 1.0] if i % 3 == 0 else [0.0, float(i % 4 < 2), 0.0, 1.0]
                costs = [0.0001, 0.0003, 0.0005, 0.005]
                w.writerow([i, f"arc.{i}", repr([text]), "arc-challenge", *right, *costs])
    qs, scores = [], []
    for i, text in enumerate(PROMPTS * 3):
        qs.append({"question_id": f"q{i}", "turns": [text]})
        s = dict.fromkeys(ARENA_MODELS.values(), 5 + i % 3)
        s[ARENA_MODELS["premium"]] = 9
        scores.append({"question_id": f"q{i}", "scores": s})
    _jsonl(data / "arena_bench_v1" / "question.jsonl", qs)
    _jsonl(data / "arena_bench_v1" / "scores.jsonl", scores)
    return data


def test_the_eval_command_writes_every_section_from_a_tiny_fixture(tmp_path: Path) -> None:
    data = _fixture(tmp_path)
    out = tmp_path / "routing-eval.md"
    assert eval_routing.main(["--data", str(data), "--out", str(out), "--folds", "2"]) == 0
    text = out.read_text(encoding="utf-8")
    for heading in (
        "## Task type",
        "| MT-Bench turn 1 | 3 |",
        "| WizardLM | 3 |",
        "| Auto-J test | 3 |",  # `default` dropped
        "## Complexity against WizardLM difficulty",
        "## Headline",
        "## RouterBench test (held out)",
        "| all premium | 1.000 | 100.0% | 0.005000 | 100.0% | premium 100% |",
        "| oracle |",
        "**APGR",
        "## arena-bench-v1 (2-fold cross-validation)",
    ):
        assert heading in text, heading
    # all-budget on the fixture: right on every third row only
    assert "| all budget | 0.333 |" in text


def test_random_at_equal_cost_mixes_the_two_tiers_around_the_policys_cost() -> None:
    """The issue's baseline: random routing that spends what the router spends. Mean costs are
    budget 1, mid 2, standard 3, premium 10, mean qualities 0.25, 0.5, 0.5, 0.75: at cost 6 the
    best random mix is half mid, half premium (0.625; standard + premium gives 0.607, budget +
    premium 0.528)."""
    p = rm.Point("x", 0.9, 6.0, {"premium": 1.0})
    r = rm.random_at_cost(p, Q, C)
    assert r.cost == pytest.approx(6.0)
    assert r.shares == pytest.approx({"mid": 0.5, "premium": 0.5})
    assert r.quality == pytest.approx(0.625)
    cheap = rm.random_at_cost(rm.Point("y", 0.0, 0.5, {}), Q, C)  # below every tier: the cheapest
    assert cheap.shares == {"budget": 1.0}
