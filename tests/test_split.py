"""The pure parts of the cost dial and the experiments (issue 12): the bounded sample the dial
is calibrated on, and the seeded experiment arms."""

from __future__ import annotations

import random

from batchroute.split import (
    CONTROL,
    DialSample,
    arm_name,
    in_experiment,
    shifted,
)

N = 10_000


def test_a_small_input_is_held_whole() -> None:
    sample: DialSample[int] = DialSample(limit=100)
    for i in range(40):
        sample.add(f"k{i}", i)
    assert sample.count == 40
    assert sorted(sample.items()) == list(range(40))


def test_the_sample_is_bounded_and_does_not_depend_on_the_order_of_the_input() -> None:
    keys = [f"key-{i}" for i in range(5_000)]
    a: DialSample[str] = DialSample(limit=500)
    b: DialSample[str] = DialSample(limit=500)
    for k in keys:
        a.add(k, k)
    shuffled = keys[:]
    random.Random(4).shuffle(shuffled)
    for k in shuffled:
        b.add(k, k)
    assert a.count == b.count == 5_000
    assert len(a.items()) == 500
    assert a.items() == b.items()  # the same records, in the same order


def test_the_sample_is_uniform_over_the_input() -> None:
    """A bottom-k sketch by key hash: the kept records are a uniform sample, so a share of
    the sample estimates the input's share (here the records with an odd number)."""
    sample: DialSample[int] = DialSample(limit=2_000)
    for i in range(40_000):
        sample.add(f"r{i}", i)
    kept = sample.items()
    assert abs(sum(i % 2 for i in kept) / len(kept) - 0.5) < 0.03
    assert abs(sum(i < 10_000 for i in kept) / len(kept) - 0.25) < 0.03


def test_a_repeated_key_never_compares_the_items() -> None:
    sample: DialSample[object] = DialSample(limit=2)
    for _ in range(5):
        sample.add("same", object())  # objects have no order: a comparison would raise
    assert len(sample.items()) == 2


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
