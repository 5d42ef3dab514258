"""The pure parts of the cost dial and the experiments (issue 12): the bounded score sample the
thresholds are calibrated on, and the seeded experiment arms."""

from __future__ import annotations

import random

import pytest

from batchroute.split import (
    BINS,
    CONTROL,
    ScoreSketch,
    arm_name,
    in_experiment,
    shifted,
)

N = 10_000


def test_the_sample_holds_every_score_of_a_small_input_at_its_bin() -> None:
    sketch = ScoreSketch()
    scores = [0.0, 0.12345, 0.5, 0.99999, 1.0, 0.5]
    for s in scores:
        sketch.add(s)
    assert sketch.count == 6
    assert sketch.sample() == sorted(int(s * BINS) / BINS for s in scores)


def test_out_of_range_and_nan_scores_are_clamped_not_lost() -> None:
    sketch = ScoreSketch()
    for s in (-0.5, 1.5, float("nan")):
        sketch.add(s)
    assert sketch.sample() == [0.0, 0.0, 1.0]


def test_a_large_input_gives_a_bounded_sample_with_the_same_quantiles() -> None:
    rng = random.Random(3)
    scores = [rng.betavariate(2, 5) for _ in range(50_000)]
    sketch = ScoreSketch()
    for s in scores:
        sketch.add(s)
    sample = sketch.sample(limit=1_000)
    assert len(sample) == 1_000
    assert sample == sorted(sample)
    exact = sorted(scores)
    for q in (0.1, 0.3, 0.5, 0.7, 0.9):
        # Each sample point is its quantile's score, down to the bin's lower edge.
        got = sample[int(q * 1_000)]
        want = exact[int((int(q * 1_000) + 0.5) * 50)]
        assert want - 1 / BINS <= got <= want, (q, got, want)


def test_the_experiment_takes_its_share_of_10k_records_within_2_percent() -> None:
    for seed, share in ((7, 0.1), (1, 0.25), (123456789, 0.5)):
        taken = sum(in_experiment(seed, f"rec-{i}", share) for i in range(N))
        assert abs(taken / N - share) <= 0.02, (seed, share, taken)


def test_the_same_seed_gives_the_same_arms_and_another_seed_others() -> None:
    keys = [f"k{i}" for i in range(N)]
    first = [in_experiment(7, k, 0.1) for k in keys]
    again = [in_experiment(7, k, 0.1) for k in reversed(keys)][::-1]  # any order, any subset
    assert first == again
    other = [in_experiment(8, k, 0.1) for k in keys]
    assert first != other
    # A larger share keeps every record the smaller one took (one uniform draw per key).
    wider = [in_experiment(7, k, 0.2) for k in keys]
    assert all(w for f, w in zip(first, wider, strict=True) if f)


def test_arm_names_and_the_clamp_at_both_ends() -> None:
    assert CONTROL == "control"
    assert arm_name(1) == "shift+1"
    assert arm_name(-2) == "shift-2"
    assert [shifted(i, 1, 4) for i in range(4)] == [1, 2, 3, 3]
    assert [shifted(i, -1, 4) for i in range(4)] == [0, 0, 1, 2]
    assert shifted(0, 5, 4) == 3


@pytest.mark.parametrize("limit", [1, 7, 100])
def test_the_sample_is_never_longer_than_its_limit(limit: int) -> None:
    sketch = ScoreSketch()
    for i in range(1_000):
        sketch.add(i / 1_000)
    assert len(sketch.sample(limit)) == limit
