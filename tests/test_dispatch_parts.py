"""The dispatcher's pure parts, without an event loop (issue 10): the retry policy
(`decide`, `backoff`), quality checks, what a call is booked at, and model health on the
injected clocks."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from factories import make_spec
from hypothesis import given
from hypothesis import strategies as st

from batchroute.catalog import Catalog
from batchroute.errors import (
    AuthError,
    CreditsExhausted,
    DailyCapReached,
    QualityFailed,
    RateLimited,
    RejectedError,
    RetryableError,
    UpstreamError,
)
from batchroute.plan import Overrides, build_plan
from batchroute.runner import policy, quality
from batchroute.runner.cost import Pricer, failed_cost
from batchroute.runner.health import Health
from batchroute.spec.parts import LimitsSpec
from batchroute.types import (
    AttemptOutcome,
    Completion,
    CostSource,
    ResumeState,
    RunStatus,
    Usage,
)

P = policy.Policy(max_attempts=3, backoff_base_s=0.5, backoff_max_s=30, escalate_unavailable=False)
OUT = AttemptOutcome


def _decide(err: UpstreamError, attempt: int = 1, **kw: bool) -> AttemptOutcome:
    args = {"last_model": False, "can_escalate": True, "unavailable": False} | kw
    return policy.decide(P, err, attempt=attempt, **args)


def test_retryable_errors_retry_until_attempts_run_out() -> None:
    err = RetryableError("503", status=503)
    assert [_decide(err, a) for a in (1, 2, 3)] == [OUT.RETRY, OUT.RETRY, OUT.FALLBACK]
    assert _decide(err, 3, last_model=True) is OUT.FAILED
    assert _decide(err, 3, last_model=True, unavailable=True) is OUT.DEFERRED


def test_a_retry_after_longer_than_backoff_max_moves_on_at_once() -> None:
    assert _decide(RateLimited("429", retry_after=30)) is OUT.RETRY
    assert _decide(RateLimited("429", retry_after=31)) is OUT.FALLBACK


def test_rejections_fall_back_and_never_escalate() -> None:
    err = RejectedError("400", status=400)
    assert _decide(err) is OUT.FALLBACK
    assert _decide(err, last_model=True) is OUT.FAILED  # a dearer tier is no cure


def test_weak_answers_escalate_when_a_tier_is_left() -> None:
    err = QualityFailed("empty content", error_type="empty_content")
    assert _decide(err) is OUT.ESCALATE
    assert _decide(err, can_escalate=False) is OUT.FALLBACK
    assert _decide(err, can_escalate=False, last_model=True) is OUT.FAILED


def test_weak_answers_stay_in_their_tier_when_escalate_on_leaves_quality_out() -> None:
    """`escalate_on: [unavailable]` names what climbs: quality failures no longer do."""
    outage_only = policy.Policy(3, 0.5, 30, escalate_unavailable=True, escalate_quality=False)
    err = QualityFailed("empty content", error_type="empty_content")
    kw = {"attempt": 1, "can_escalate": True, "unavailable": False}
    assert policy.decide(outage_only, err, last_model=False, **kw) is OUT.FALLBACK
    assert policy.decide(outage_only, err, last_model=True, **kw) is OUT.FAILED


def test_an_outage_escalates_only_when_the_job_opts_in() -> None:
    opted = policy.Policy(3, 0.5, 30, escalate_unavailable=True)
    err = RetryableError("timeout", error_type="timeout")
    kw = {"attempt": 3, "last_model": True, "unavailable": True}
    assert policy.decide(opted, err, can_escalate=True, **kw) is OUT.ESCALATE
    assert policy.decide(opted, err, can_escalate=False, **kw) is OUT.DEFERRED


def test_fatal_errors_stop_with_the_right_status() -> None:
    for err, status in (
        (CreditsExhausted("402"), RunStatus.BUDGET_EXHAUSTED),
        (AuthError("401"), RunStatus.FAILED),
    ):
        assert _decide(err) is OUT.FATAL
        assert policy.fatal_status(err) is status


def test_only_availability_failures_out_of_retries_mark_the_chain_down() -> None:
    assert policy.out_of_retries_unavailable(P, RetryableError("503"), 3)
    assert not policy.out_of_retries_unavailable(P, RetryableError("503"), 2)
    malformed = RetryableError("bad json", error_type="malformed_response")
    assert not policy.out_of_retries_unavailable(P, malformed, 3)
    assert not policy.out_of_retries_unavailable(P, RejectedError("400"), 3)


@given(
    attempt=st.integers(1, 30),
    jitter=st.floats(0, 1, exclude_max=True),
    retry_after=st.none() | st.floats(0, 120),
)
def test_backoff_is_bounded_jittered_and_honours_retry_after(
    attempt: int, jitter: float, retry_after: float | None
) -> None:
    delay = policy.backoff(P, attempt, retry_after, jitter)
    exp = min(P.backoff_max_s, P.backoff_base_s * 2.0 ** (attempt - 1))
    assert delay >= (retry_after or 0.0)
    if retry_after is None or retry_after <= exp / 2:
        assert exp / 2 <= delay <= exp  # "equal jitter": at least half the exponential step


def _completion(content: str | None, finish: str = "stop", **usage: object) -> Completion:
    return Completion(content, finish, None, "m", None, "gen-1", Usage(**usage))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("content", "finish", "wants_json", "found"),
    [
        ("hello", "stop", False, None),
        ("  \n", "stop", False, "empty_content"),
        (None, "stop", False, "empty_content"),
        ("cut", "length", False, "finish_length"),
        ("{not json", "stop", True, "invalid_json"),
        ("{not json", "stop", False, None),
        ('{"a": 1}', "stop", True, None),
    ],
)
def test_quality_checks(
    content: str | None, finish: str, wants_json: bool, found: str | None
) -> None:
    c = _completion(content, finish)
    assert quality.problem(c, ("empty", "length", "json"), wants_json=wants_json) == found
    assert quality.problem(c, (), wants_json=wants_json) is None  # checks can be switched off


def test_a_failed_check_keeps_the_answers_cost_and_id() -> None:
    err = quality.failure("invalid_json", _completion("x"), model="m", cost=Decimal("0.01"))
    assert (err.error_type, err.cost, err.generation_id, str(err)) == (
        "invalid_json",
        Decimal("0.01"),
        "gen-1",
        "invalid json",
    )


WORST = Decimal("0.5")


@pytest.mark.parametrize(
    ("err", "booked"),
    [
        (RetryableError("503", status=503), (Decimal(0), CostSource.NONE)),  # no generation
        (RetryableError("t", error_type="timeout"), (WORST, CostSource.RESERVED)),
        (RetryableError("r", error_type="connection"), (WORST, CostSource.RESERVED)),
        (RetryableError("in 200", status=200, in_body=True), (WORST, CostSource.RESERVED)),
        (RejectedError("c", cost=Decimal("0.1")), (Decimal("0.1"), CostSource.OPENROUTER)),
        (RejectedError("neg", cost=Decimal("-1")), (WORST, CostSource.RESERVED)),
        (RejectedError("huge", cost=Decimal("2")), (Decimal(2), CostSource.OPENROUTER)),  # the bill
    ],
)
def test_failed_calls_are_booked_over_never_under(
    err: UpstreamError, booked: tuple[Decimal, CostSource]
) -> None:
    assert failed_cost(err, WORST) == booked


def _pricer(tmp_path: Path, **request: object) -> Pricer:
    tmp_path.mkdir(exist_ok=True)
    spec = make_spec(tmp_path, request={"max_tokens": 100, **request})
    return Pricer(build_plan(spec, Catalog.shipped(), ResumeState(), Overrides()))


def test_answers_without_a_usable_cost_keep_their_reservation(tmp_path: Path) -> None:
    pricer = _pricer(tmp_path)
    model = "openai/gpt-4o-mini"
    tier = "mid"  # the model's tier in the factories' job
    worst = pricer.worst(50, (model,))
    no_usage = _completion("ok", present=False)
    byok_no_upstream = _completion("ok", cost=Decimal("0.001"), is_byok=True)
    assert pricer.answered(no_usage, model, worst, tier) == (worst, CostSource.RESERVED)
    assert pricer.answered(byok_no_upstream, model, worst, tier) == (worst, CostSource.RESERVED)
    tokens = _completion("ok", prompt_tokens=50, completion_tokens=100)
    cost, source = pricer.answered(tokens, model, worst, tier)
    assert source is CostSource.CATALOG
    assert 0 < cost <= worst


def test_worst_case_covers_every_model_that_may_serve_and_web_search(tmp_path: Path) -> None:
    catalog = Catalog.shipped()
    cheap, dear = "openai/gpt-4o-mini", "openai/gpt-4o"
    pricer = _pricer(tmp_path / "a")
    assert pricer.worst(50, (cheap, dear)) == pricer.worst(50, (dear,))
    assert pricer.worst(50, (dear,)) > pricer.worst(50, (cheap,))
    assert pricer.worst(50, (cheap + ":online",)) > pricer.worst(50, (cheap,))
    searching = _pricer(tmp_path / "b", extra_body={"web_search_options": {}})
    assert searching.worst(50, (cheap,)) == pricer.worst(50, (cheap + ":online",))
    priced = [m for m, info in catalog.models.items() if not info.variable_price]
    unknown = pricer.worst(50, ("nobody/retired-model",))
    assert unknown >= max(pricer.worst(50, (m,)) for m in priced)


def test_a_free_daily_cap_resets_on_the_injected_wall_clock() -> None:
    """Health reads the reset time against the run's clock, not the machine's."""
    mono, wall = [100.0], [1_000_000.0]
    lim = LimitsSpec(cooldown_s=60)
    health = Health(lim, monotonic=lambda: mono[0], wall=lambda: wall[0], log=lambda _m: None)
    m = "meta-llama/llama-3.3-70b-instruct:free"
    health.penalise(m, DailyCapReached("429", model=m, reset_at=wall[0] + 3600))
    assert health.usable((m, "other")) == ["other"]
    mono[0] += 3599
    assert health.usable((m, "other")) == ["other"]
    mono[0] += 2
    assert health.usable((m, "other")) == [m, "other"]


def _health(lim: LimitsSpec) -> tuple[Health, list[float], list[str]]:
    mono, logs = [100.0], []
    health = Health(lim, monotonic=lambda: mono[0], wall=lambda: 1_000_000.0, log=logs.append)
    return health, mono, logs


def test_the_same_4xx_again_and_again_cools_a_model_down() -> None:
    """A parameter a model does not take: the same rejection `cooldown_after` times in a row
    cools it down for `cooldown_s` (other records go to its fallback), as a timeout would."""
    lim = LimitsSpec(cooldown_after=3, cooldown_s=60)
    health, mono, logs = _health(lim)
    m, chain = "openai/gpt-4o-mini", ("openai/gpt-4o-mini", "other")
    bad = RejectedError("Unrecognized key: Sort", model=m, status=400, error_type="bad_request")
    for _ in range(lim.cooldown_after - 1):
        health.penalise(m, bad)
        assert health.usable(chain) == list(chain)
    health.penalise(m, bad)
    assert health.usable(chain) == ["other"]
    assert any(m in line and "3 times in a row" in line for line in logs), logs
    mono[0] += 59
    assert health.usable(chain) == ["other"]
    mono[0] += 2
    assert health.usable(chain) == list(chain)


def test_different_4xx_or_a_success_between_do_not_cool_a_model_down() -> None:
    lim = LimitsSpec(cooldown_after=2, cooldown_s=60)
    health, _, _ = _health(lim)
    m, chain = "openai/gpt-4o-mini", ("openai/gpt-4o-mini", "other")
    a = RejectedError("Unrecognized key: Sort", model=m, status=400, error_type="bad_request")
    b = RejectedError("tools are not supported", model=m, status=404, error_type="not_found")
    for err in (a, b, a, b):  # never the same one twice in a row
        health.penalise(m, err)
    health.ok(m)
    health.penalise(m, a)
    assert health.usable(chain) == list(chain)


def test_a_rejection_about_one_record_never_cools_a_model_down() -> None:
    """context_length_exceeded says the record is too big, not that the model is broken:
    however often it comes, the model stays usable for the other records."""
    lim = LimitsSpec(cooldown_after=2, cooldown_s=60)
    health, _, logs = _health(lim)
    m, chain = "openai/gpt-4o-mini", ("openai/gpt-4o-mini", "other")
    big = RejectedError(
        "This model's maximum context length is 128000 tokens",
        model=m,
        status=400,
        error_type="context_length_exceeded",
    )
    for _ in range(lim.cooldown_after * 5):
        health.penalise(m, big)
    assert health.usable(chain) == list(chain)
    assert logs == []
