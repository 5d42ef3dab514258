"""The classifier choice, the cost dial (`routing_policy`) and experiments in the job file and
the plan (issue 12): one code path for `run`, `--dry-run` and `classify`.

Pure tests over real job files and real input files; the CLI tests are in test_classify_cli.py.
"""

from __future__ import annotations

import json
import os
import random
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from factories import make_spec, write_jsonl

from batchroute import learned, split
from batchroute.budget import typical_prompt_tokens
from batchroute.catalog import Catalog
from batchroute.commands import validate_text
from batchroute.errors import SpecError
from batchroute.lookup import MemoryLookup
from batchroute.plan import (
    Admit,
    Overrides,
    RunPlan,
    WorkItem,
    build_plan,
    dial_point,
    policy_of,
)
from batchroute.reader import read_records
from batchroute.spec import DEFAULT_CLASSIFIER, JobSpec
from batchroute.split import in_experiment
from batchroute.thresholds import DEFAULT_POLICY, for_tiers
from batchroute.types import Record, ResumeState

N = 10_000
SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "mixed.jsonl"
STRONG = ("standard", "premium")
DIAL_FILES = ("plan.py", "split.py", "thresholds.py", "reader.py", "prompt.py")
FILLER = (
    "please be careful",
    "with a worked example",
    "for a beginner",
    "in detail, step by step, with the trade-offs",
    "briefly",
    "as a table",
    "and explain why",
    "in under 50 words",
)


def _prompts() -> list[str]:
    return [json.loads(line)["prompt"] for line in SAMPLE.read_text().splitlines()]


def _records(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """n distinct prompts: the sample's 300, varied with a case number and a few clauses."""
    rng = random.Random(seed)
    base = _prompts()
    out = []
    for i in range(n):
        extra = " ".join(rng.sample(FILLER, rng.randint(0, 3)))
        out.append({"id": f"r{i:05d}", "prompt": f"{rng.choice(base)} {extra} (case {i})"})
    return out


def _spec(tmp_path: Path, n: int = N, **job: Any) -> JobSpec:
    write_jsonl(tmp_path / "in.jsonl", _records(n))
    job.setdefault("task", None)
    job.setdefault("prompt", {"user": "{prompt}"})
    return make_spec(tmp_path, **job)


def _plan(spec: JobSpec) -> RunPlan:
    plan = build_plan(spec, Catalog.shipped(), ResumeState(), Overrides())
    return plan.calibrated(read_records(spec.input, id_field=spec.id_field))


def _items(plan: RunPlan) -> list[WorkItem]:
    intake = plan.intake(MemoryLookup())
    out = []
    for rec in read_records(plan.spec.input, id_field=plan.spec.id_field):
        a = intake.admit(rec)
        assert a.admit is Admit.SEND
        assert a.item is not None
        out.append(a.item)
    return out


def _strong_share(items: list[WorkItem]) -> float:
    return sum(i.tier in STRONG for i in items) / len(items)


# ----------------------------------------------------------------------------- the job file
@pytest.mark.parametrize(
    ("job", "key", "words"),
    [
        ({"routing_policy": {"strong_share": 0.3, "max_cost_ratio": 0.4}}, "routing_policy",
         "exactly one"),
        ({"routing_policy": {}}, "routing_policy", "exactly one"),
        ({"routing_policy": {"strong_share": 1.5}}, "routing_policy.strong_share", "less than"),
        ({"routing_policy": {"strong_share": -0.1}}, "routing_policy.strong_share", "greater"),
        ({"routing_policy": {"max_cost_ratio": 0}}, "routing_policy.max_cost_ratio", "greater"),
        ({"routing_policy": {"strong_share": True}}, "routing_policy.strong_share", "number"),
        ({"routing_policy": {"share": 0.3}}, "routing_policy.share", "not permitted"),
        ({"routing_policy": {"strong_share": "0.3"}}, "routing_policy.strong_share", "number"),
        ({"experiment": {"share": 1, "tier_shift": 1}}, "experiment.share", "less than 1"),
        ({"experiment": {"share": 0, "tier_shift": 1}}, "experiment.share", "greater than 0"),
        ({"experiment": {"share": 0.1, "tier_shift": 0}}, "experiment.tier_shift", "must move"),
        ({"experiment": {"share": 0.1, "tier_shift": 1.5}}, "experiment.tier_shift", "integer"),
        ({"experiment": {"share": 0.1}}, "experiment.tier_shift", "required"),
        ({"experiment": {"share": 0.1, "tier_shift": 1, "seed": "7"}}, "experiment.seed",
         "integer"),
        ({"classifier": "llm"}, "classifier", "heuristic"),
    ],
)  # fmt: skip
def test_a_bad_dial_or_experiment_is_a_spec_error_naming_its_key(
    tmp_path: Path, job: dict[str, Any], key: str, words: str
) -> None:
    job.setdefault("classifier", "learned")
    with pytest.raises(SpecError) as exc:
        _spec(tmp_path, n=1, **job)
    message = str(exc.value)
    assert f"{key}:" in message
    assert words in message
    assert "job.yaml" in message


def test_the_dial_with_the_heuristic_classifier_says_it_needs_a_score(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as exc:
        _spec(tmp_path, n=1, classifier="heuristic", routing_policy={"strong_share": 0.3})
    assert "routing_policy: the cost dial calibrates the router's score" in str(exc.value)
    assert "classifier: learned" in str(exc.value)


def test_the_default_classifier_is_one_constant(tmp_path: Path) -> None:
    spec = _spec(tmp_path, n=1)
    assert spec.classifier == DEFAULT_CLASSIFIER
    assert DEFAULT_CLASSIFIER in ("heuristic", "learned")


def test_a_good_dial_and_experiment_load(tmp_path: Path) -> None:
    spec = _spec(
        tmp_path, n=1, classifier="learned", routing_policy={"max_cost_ratio": 0.4},
        experiment={"share": 0.1, "tier_shift": -1, "seed": 7},
    )  # fmt: skip
    assert spec.routing_policy is not None
    assert spec.routing_policy.max_cost_ratio == 0.4
    assert spec.experiment is not None
    assert spec.experiment.tier_shift == -1
    assert policy_of(spec) == {"max_cost_ratio": 0.4}


def test_validate_says_which_classifier_dial_and_experiment_apply(tmp_path: Path) -> None:
    text = validate_text(
        _spec(tmp_path, n=1, classifier="learned", routing_policy={"strong_share": 0.3},
              experiment={"share": 0.1, "tier_shift": 1, "seed": 7})
    )  # fmt: skip
    assert "classifier: learned\n" in text
    assert "cost dial: strong_share 0.3; strong tiers standard, premium" in text
    assert "experiment: 10.0% of records (seed 7) move +1 tier(s), no further than premium" in text
    default = validate_text(_spec(tmp_path, n=1, classifier="learned"))
    policy = ", ".join(f"{k} {v}" for k, v in DEFAULT_POLICY.items())
    assert f"cost dial: {policy} (the default)" in default
    given = validate_text(_spec(tmp_path, n=1, classifier="learned", task="translation"))
    assert "classifier: none (task translation given by the job decides alone" in given
    field = validate_text(_spec(tmp_path, n=1, task_field="kind", classifier="heuristic"))
    assert "task_field kind: a record whose kind is a known task type goes by the routing" in field
    assert "cost dial: none" in field


# ---------------------------------------------------------------------------- the cost dial
@pytest.mark.parametrize("share", [0.1, 0.3, 0.6])
def test_the_dial_sends_its_strong_share_of_10k_records_within_3_percent(
    tmp_path: Path, share: float
) -> None:
    plan = _plan(_spec(tmp_path, classifier="learned", routing_policy={"strong_share": share}))
    assert plan.dial is not None
    assert plan.scored == N
    items = _items(plan)
    assert abs(_strong_share(items) - share) <= 0.03, Counter(i.tier for i in items)
    assert all(i.cls.reason.startswith("learned:") for i in items)


def test_without_a_policy_the_learned_classifier_uses_the_default_dial(tmp_path: Path) -> None:
    plan = _plan(_spec(tmp_path, n=2_000, classifier="learned"))
    assert plan.dial is not None
    share, ratio = DEFAULT_POLICY.get("strong_share"), DEFAULT_POLICY.get("max_cost_ratio")
    if share is not None:
        assert abs(_strong_share(_items(plan)) - share) <= 0.03
    if ratio is not None:
        assert ratio - 0.03 <= _dial_cost_ratio(plan, _items(plan)) <= ratio


def _dial_cost_ratio(plan: RunPlan, items: list[WorkItem]) -> float:
    """The expected cost of the records on their tiers over all on the top tier, each at its
    own length and with the model's cost factors: what `max_cost_ratio` bounds."""
    names = list(plan.spec.tiers)
    spent = top = 0.0
    for i in items:
        point = dial_point(i.cls, i.messages, len(names))
        assert point is not None
        assert plan.dial is not None
        costs = plan.dial.costs(point.factor, point.tokens)
        spent += costs[names.index(i.tier)]
        top += costs[-1]
    return spent / top


def test_the_cost_ratio_dial_keeps_the_expected_cost_under_its_ratio(tmp_path: Path) -> None:
    ratio = 0.4
    spec = _spec(tmp_path, n=3_000, classifier="learned", routing_policy={"max_cost_ratio": ratio})
    plan = _plan(spec)
    items = _items(plan)
    got = _dial_cost_ratio(plan, items)
    assert ratio - 0.03 <= got <= ratio + 1e-9  # under its ratio, and it spends its budget
    assert plan.dial is not None
    assert plan.dial.cost_ratio == pytest.approx(got)  # what the dry run shows
    # the per-tier prices are the plan's own expected calls (a typical answer)
    tokens = typical_prompt_tokens(items[0].messages)
    for k, t in enumerate(spec.tiers):
        want = float(plan.expected_call(t, tokens))
        assert plan.dial.per_call[k] + plan.dial.per_token[k] * tokens == pytest.approx(want)


def test_the_heuristic_routes_by_its_table_with_no_dial(tmp_path: Path) -> None:
    plan = _plan(_spec(tmp_path, n=200, classifier="heuristic"))
    assert plan.dial is None
    items = _items(plan)
    assert all(i.cls.score is None and not i.cls.reason.startswith("learned:") for i in items)


def test_a_given_task_decides_alone_and_is_left_out_of_the_calibration(tmp_path: Path) -> None:
    records = _records(2_000)
    for i, r in enumerate(records):
        if i % 2:
            r["kind"] = "translation"  # routed to mid by the table, whatever its score
    write_jsonl(tmp_path / "in.jsonl", records)
    spec = make_spec(
        tmp_path, task=None, task_field="kind", prompt={"user": "{prompt}"},
        classifier="learned", routing_policy={"strong_share": 0.5},
    )  # fmt: skip
    plan = _plan(spec)
    assert plan.scored == 1_000
    items = _items(plan)
    given = [i for i in items if i.explicit]
    scored = [i for i in items if not i.explicit]
    assert len(given) == 1_000
    assert {i.tier for i in given} == {"mid"}
    assert {i.cls.reason for i in given} == {"task_field"}
    assert abs(_strong_share(scored) - 0.5) <= 0.03

    job_task = _plan(_spec(tmp_path, n=50, classifier="learned", task="summarization"))
    assert job_task.dial is None
    assert {i.tier for i in _items(job_task)} == {"mid"}


def test_a_records_tier_is_the_best_quality_minus_lambda_cost_of_its_own_predictions(
    tmp_path: Path,
) -> None:
    plan = _plan(_spec(tmp_path, n=500, classifier="learned"))
    assert plan.dial is not None
    names = list(plan.spec.tiers)
    seen = set()
    for item in _items(plan):
        c = learned.classify(item.messages[-1]["content"])
        assert c == item.cls
        assert c.tier_quality is not None
        assert c.tier_cost is not None
        quality, factor = for_tiers(c.tier_quality, 4), for_tiers(c.tier_cost, 4)
        costs = plan.dial.costs(factor, typical_prompt_tokens(item.messages))
        value = [q - plan.dial.lam * x for q, x in zip(quality, costs, strict=True)]
        assert names.index(item.tier) == value.index(max(value))
        seen.add(item.tier)
    assert len(seen) >= 2  # the dial splits this input, it does not send it all one way


# ------------------------------------------------------------------------------ experiments
@pytest.mark.parametrize(
    ("shift", "n", "within"), [(1, N, 0.02), (-1, 2_000, 0.03), (2, 2_000, 0.03)]
)
def test_the_experiment_moves_its_share_of_10k_records_and_clamps_at_the_ends(
    tmp_path: Path, shift: int, n: int, within: float
) -> None:
    job: dict[str, Any] = {"classifier": "learned", "routing_policy": {"strong_share": 0.4}}
    base = {i.record.key: i for i in _items(_plan(_spec(tmp_path, n=n, **job)))}
    x = {"share": 0.1, "tier_shift": shift, "seed": 7}
    spec = _spec(tmp_path, n=n, experiment=x, **job)
    items = _items(_plan(spec))
    names = list(spec.tiers)
    arms = Counter(i.arm for i in items)
    assert set(arms) == {"control", f"shift{shift:+d}"}
    assert abs(arms[f"shift{shift:+d}"] / n - 0.1) <= within
    for i in items:
        was = names.index(base[i.record.key].tier)
        moved = i.arm != "control"
        assert moved == in_experiment(7, i.record.key, 0.1)  # a function of (seed, key)
        want = min(max(was + shift, 0), len(names) - 1) if moved else was
        assert names.index(i.tier) == want


def test_the_experiment_works_with_the_heuristic_and_a_given_task_too(tmp_path: Path) -> None:
    spec = _spec(
        tmp_path, n=2_000, task="translation",
        experiment={"share": 0.25, "tier_shift": 1, "seed": 3},
    )  # fmt: skip
    tiers = Counter((i.arm, i.tier) for i in _items(_plan(spec)))
    assert set(tiers) == {("control", "mid"), ("shift+1", "standard")}
    assert abs(tiers["shift+1", "standard"] / 2_000 - 0.25) <= 0.03


def test_no_experiment_no_arm(tmp_path: Path) -> None:
    assert {i.arm for i in _items(_plan(_spec(tmp_path, n=100)))} == {None}


def test_calibration_memory_does_not_grow_with_the_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dial's pass over the input keeps a bounded sample (`split.SAMPLE_MAX` records, here
    made 1,000), not every record's predictions: what the plan holds at the end of the stream
    is the same for 2,000 records as for 20,000 (a 10M-line input is fine). Measured by
    tracemalloc over the dial's own modules (the model's short-lived garbage makes a
    whole-process peak too noisy for this)."""
    monkeypatch.setattr(split, "SAMPLE_MAX", 1_000)
    spec = _spec(tmp_path, n=1, classifier="learned", routing_policy={"strong_share": 0.3})
    plan = build_plan(spec, Catalog.shipped(), ResumeState(), Overrides())
    texts = [r["prompt"] for r in _records(300)]
    mine = [tracemalloc.Filter(True, f"*{os.sep}batchroute{os.sep}{m}") for m in DIAL_FILES]
    held: dict[int, int] = {}

    def records(n: int) -> Iterator[Record]:  # made on the fly: no input held anywhere
        for i in range(n):
            yield Record(i + 1, f"k{i}", {"prompt": f"{texts[i % 300]} #{i}"})
        # Every record is scored: what the pass holds now is all it will hold for them.
        snap = tracemalloc.take_snapshot().filter_traces(mine)
        held[n] = sum(s.size for s in snap.statistics("filename"))

    def scored(n: int) -> int:
        tracemalloc.start()
        try:
            return plan.calibrated(records(n)).scored
        finally:
            tracemalloc.stop()

    scored(300)  # loads the model once, outside the measure
    assert (scored(2_000), scored(20_000)) == (2_000, 20_000)
    assert held[2_000] > 0  # the sample is seen...
    # ...and 18,000 more records' predictions held would add some megabytes.
    assert held[20_000] - held[2_000] < 20_000, held


@pytest.mark.parametrize(("n", "share", "strong"), [(1, 0.45, 0), (1, 0.6, 1), (40, 0.0, 0)])
def test_the_dial_counts_records_not_score_bins(
    tmp_path: Path, n: int, share: float, strong: int
) -> None:
    """The dial counts records: one record at strong share 0.45 stays weak (0 strong records
    is nearer 0.45 of one than 1 is), at 0.6 it goes up, and strong share 0 sends none up."""
    plan = _plan(_spec(tmp_path, n=n, classifier="learned", routing_policy={"strong_share": share}))
    items = _items(plan)
    assert sum(i.tier in STRONG for i in items) == strong, [(i.tier, i.cls.score) for i in items]


@pytest.mark.parametrize("ratio", [0.2, 0.5])
def test_max_cost_ratio_holds_on_the_records_own_lengths(tmp_path: Path, ratio: float) -> None:
    """Prompts of very different lengths (a question; the same with a long text pasted in): the
    dial's cost is that of the records themselves, each at its own length, not of records of
    the mean length. Before, 0.5 asked gave about 0.53 on such an input."""
    rng = random.Random(3)
    base = _prompts()
    rows = []
    for i in range(2_000):
        text = f"{rng.choice(base)} (case {i})"
        if rng.random() < 0.3:
            text += "\n\n" + " ".join(rng.choice(base) for _ in range(rng.randint(5, 60)))
        rows.append({"id": f"r{i:05d}", "prompt": text})
    write_jsonl(tmp_path / "in.jsonl", rows)
    spec = make_spec(tmp_path, task=None, prompt={"user": "{prompt}"}, classifier="learned",
                     routing_policy={"max_cost_ratio": ratio})  # fmt: skip
    plan = _plan(spec)
    assert ratio - 0.03 <= _dial_cost_ratio(plan, _items(plan)) <= ratio + 1e-9
