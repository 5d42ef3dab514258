"""The job file contract: validated once, unknown keys named, paths relative to the job file."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from batchroute.errors import SpecError
from batchroute.spec import DEFAULT_TIERS, load_spec

MINIMAL = """
name: t
input: data/in.jsonl
prompt: {user: "Say {text}"}
request: {max_tokens: 64}
budget: {daily_usd: 1.5}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "job.yaml"
    p.write_text(text)
    return p


def test_minimal_job_gets_defaults_and_relative_paths(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, MINIMAL))
    assert spec.input == (tmp_path / "data/in.jsonl").resolve()
    assert spec.database_path == (tmp_path / "results.duckdb").resolve()
    assert {k: list(v.models) for k, v in spec.tiers.items()} == DEFAULT_TIERS
    assert spec.budget.daily_usd == Decimal("1.5")
    assert spec.tier_for_task("translation") == "mid"
    assert spec.tier_for_task("deep_reasoning") == "premium"
    assert spec.next_tier("mid") == "standard"
    assert spec.next_tier("premium") is None


def test_misspelt_key_is_rejected_with_its_path(tmp_path: Path) -> None:
    text = MINIMAL + "limits: {concurency: 4}\n"
    with pytest.raises(SpecError) as exc:
        load_spec(write(tmp_path, text))
    assert "limits.concurency" in str(exc.value)
    assert "job.yaml" in str(exc.value)


def test_max_tokens_is_required(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"request\.max_tokens"):
        load_spec(write(tmp_path, MINIMAL.replace("max_tokens: 64", "temperature: 0.1")))


def test_routing_must_name_existing_tiers(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such tier"):
        load_spec(write(tmp_path, MINIMAL + "routing: {translation: gold}\n"))


def test_tier_as_object_with_options(tmp_path: Path) -> None:
    text = MINIMAL + (
        "tiers:\n  cheap: [a/x, a/y]\n"
        "  strong: {models: [b/z], native_fallback: true, provider: {sort: price}}\n"
    )
    spec = load_spec(write(tmp_path, text))
    assert spec.tiers["strong"].provider == {"sort": "price"}
    # Default task → tier names map onto the job's own tiers by rank.
    assert spec.tier_for_task("classification") == "cheap"
    assert spec.tier_for_task("deep_reasoning") == "strong"


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="line"):
        load_spec(write(tmp_path, "name: [unclosed\n"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "nope.yaml")


def test_template_fields_must_be_plain_names(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="plain record field"):
        load_spec(write(tmp_path, MINIMAL.replace("Say {text}", "Say {text.upper}")))


def test_every_shipped_job_loads() -> None:
    jobs = sorted((Path(__file__).parent.parent / "jobs").glob("*.yaml"))
    assert len(jobs) >= 2
    for job in jobs:
        spec = load_spec(job)
        assert spec.input.exists(), f"{job}: input {spec.input} is missing"


def test_extra_body_cannot_change_what_a_call_may_cost(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "max_tokens: 64", "max_tokens: 64, extra_body: {max_completion_tokens: 9999}"
    )
    with pytest.raises(SpecError, match="max_completion_tokens"):
        load_spec(write(tmp_path, text))
    ok = MINIMAL.replace("max_tokens: 64", "max_tokens: 64, extra_body: {top_k: 5}")
    assert load_spec(write(tmp_path, ok)).request.extra_body == {"top_k": 5}
