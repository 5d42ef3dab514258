"""The run plan (pure): resume decisions, escalation paths and worst cases, no event loop."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from factories import make_spec

from batchroute.budget import ceil_usd, worst_case_cost
from batchroute.catalog import Catalog
from batchroute.lookup import MemoryLookup
from batchroute.plan import Admit, Overrides, build_plan
from batchroute.prompt import fingerprint
from batchroute.types import Record, RecordStatus, ResumeState

TIERS = {
    "budget": ["meta-llama/llama-3.1-8b-instruct", "qwen/qwen-2.5-7b-instruct"],
    "mid": ["openai/gpt-4o-mini"],
    "standard": ["openai/gpt-4o"],
}


def _rec(key: str, text: str = "hello", line: int = 1) -> Record:
    return Record(key=key, line_no=line, fields={"id": key, "text": text, "target_lang": "French"})


def _plan(tmp_path: Path, **kw: object):  # type: ignore[no-untyped-def]
    overrides = kw.pop("overrides", Overrides())
    spec = make_spec(tmp_path, tiers=TIERS, **kw)
    return build_plan(spec, Catalog.shipped(), ResumeState(), overrides)  # type: ignore[arg-type]


def test_final_statuses_follow_retry_failed() -> None:
    assert Overrides().final_statuses == {
        RecordStatus.DONE,
        RecordStatus.FAILED,
        RecordStatus.INVALID,
    }
    assert Overrides(retry_failed=True).final_statuses == {RecordStatus.DONE}


def test_intake_sends_skips_and_counts_stale(tmp_path: Path) -> None:
    probe = _plan(tmp_path)
    item = probe.intake(MemoryLookup()).admit(_rec("same"))
    assert item.admit is Admit.SEND
    assert item.item is not None
    same_fp = item.item.fp
    final = {"same": same_fp, "changed": "an-old-fingerprint", "old": None}
    for rerun in (False, True):
        lookup = MemoryLookup(final, failed_before={"changed"})
        intake = _plan(tmp_path, overrides=Overrides(rerun_changed=rerun)).intake(lookup)
        same, changed, old, new = (intake.admit(_rec(k)) for k in ("same", "changed", "old", "new"))
        assert (same.admit, same.stale) == (Admit.FINAL, False)
        assert old.admit is Admit.FINAL  # done before fingerprints were kept: never stale
        assert changed.stale
        assert changed.failed_before
        assert changed.admit is (Admit.SEND if rerun else Admit.FINAL)
        assert new.admit is Admit.SEND
        assert intake.taken == 1 + rerun


def test_intake_skips_a_repeated_key_and_rejects_unrenderable_records(tmp_path: Path) -> None:
    intake = _plan(tmp_path).intake(MemoryLookup())
    assert intake.admit(_rec("a")).admit is Admit.SEND
    assert intake.admit(_rec("a", "other text")).admit is Admit.DUPLICATE
    broken = Record(key="line:3", line_no=3, fields=None, error="not JSON")
    bad = intake.admit(broken)
    assert (bad.admit, bad.reason) == (Admit.INVALID, "not JSON")
    missing = intake.admit(Record(key="b", line_no=4, fields={"id": "b", "text": "t"}))
    assert missing.admit is Admit.INVALID  # no {target_lang}
    assert "target_lang" in missing.reason


def test_limit_counts_records_sent_only(tmp_path: Path) -> None:
    lookup = MemoryLookup({"done": None})
    intake = _plan(tmp_path, overrides=Overrides(limit=2)).intake(lookup)
    assert intake.admit(_rec("done")).admit is Admit.FINAL
    assert not intake.full
    intake.admit(_rec("x"))
    intake.admit(_rec("y"))
    assert intake.full


def test_escalation_path_stops_at_max_escalations_and_the_last_tier(tmp_path: Path) -> None:
    plan = _plan(tmp_path, limits={"max_escalations": 1})
    assert plan.escalation_path("budget") == ("budget", "mid")
    assert plan.escalation_path("premium") == ("premium",)  # the factory's last tier
    assert _plan(tmp_path, limits={"max_escalations": 5}).escalation_path("mid") == (
        "mid",
        "standard",
        "premium",
    )


def test_worst_record_is_every_call_the_runner_may_reserve(tmp_path: Path) -> None:
    plan = _plan(tmp_path, limits={"max_escalations": 1, "max_attempts": 3})
    item = plan.intake(MemoryLookup()).admit(_rec("r", "word " * 50)).item
    assert item is not None
    item.tier = "budget"
    calls = [
        ceil_usd(worst_case_cost(plan.info(m), item.prompt_bound, 256))
        for m in (*TIERS["budget"], *TIERS["mid"])
    ]
    assert plan.worst_record(item) == sum(calls) * 3


def test_native_fallback_reserves_the_dearest_model_that_may_serve(tmp_path: Path) -> None:
    tiers = {"mid": {"models": ["openai/gpt-4o-mini", "openai/gpt-4o"], "native_fallback": True}}
    spec = make_spec(tmp_path, tiers=tiers)
    plan = build_plan(spec, Catalog.shipped(), ResumeState(), Overrides())
    _, served = plan.served_by("mid", "openai/gpt-4o-mini")
    assert served == ("openai/gpt-4o-mini", "openai/gpt-4o")
    dear = ceil_usd(worst_case_cost(plan.info("openai/gpt-4o"), 100, 256))
    assert plan.worst_call(served, 100) == dear


def test_a_model_missing_from_the_catalogue_is_priced_as_the_dearest(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    cat = Catalog.shipped()
    assert plan.info("nobody/unknown-model") == cat.dearest()
    assert plan.cap == Decimal(10)
    assert _plan(tmp_path, overrides=Overrides(budget_usd=Decimal("0.5"))).cap == Decimal("0.5")


def test_fingerprint_is_the_plans(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    item = plan.intake(MemoryLookup()).admit(_rec("k")).item
    assert item is not None
    assert item.fp == fingerprint(item.messages, plan.params)


def test_the_plan_is_pure_it_imports_no_stage_that_does_io() -> None:
    import ast

    import batchroute.plan as plan_mod

    tree = ast.parse(Path(plan_mod.__file__).read_text(encoding="utf-8"))
    imported = {
        n.module.split(".")[1]
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("batchroute.")
    }
    assert imported
    io_stages = {"client", "store", "journal", "lock", "progress", "limiter", "reader", "runner"}
    assert not imported & io_stages, imported & io_stages
