"""Issue 13: the dry run explains itself. It said "worst case 10.13 ... does not fit (the cap will
stop the run)" against a $2 cap and nothing of what the worst case counts; now the table is
followed by what each figure assumes, and --json carries both figures and the explanation.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import duckdb

from batchroute.budget import BYOK_FEE, MESSAGE_OVERHEAD_TOKENS, REQUEST_OVERHEAD_TOKENS
from batchroute.catalog import Catalog
from tests.factories import write_job, write_jsonl
from tests.subprocs import run_cli

ROOT = Path(__file__).resolve().parent.parent


def _quote(*args: str | Path) -> dict:  # type: ignore[type-arg]
    done = run_cli("run", *map(str, args), "--dry-run", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_the_sample_jobs_quote_says_what_the_worst_case_counts(tmp_path: Path) -> None:
    db = tmp_path / "none.duckdb"
    done = run_cli("run", str(ROOT / "jobs" / "translate.yaml"), "--dry-run", "--db", str(db))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "expected: one answer of 256 tokens per record from the first model" in out
    worst = next(ln for ln in out.splitlines() if ln.startswith("worst case: "))
    for part in (
        "3 tries (limits.max_attempts)",
        "each model of its tier's chain and of up to 1 tier(s) above it (escalation)",
        "each answer 512 tokens (max_tokens)",
        "5 % BYOK fee",
    ):
        assert part in worst, worst
    today = out.splitlines()[-1]
    assert today.startswith("today: $0.00 spent of $2.00, $2.00 left; expected $0.0"), today
    assert "does not fit: only if that many calls failed and were paid" in today
    assert "E-" not in out
    assert "E+" not in out

    q = _quote(ROOT / "jobs" / "translate.yaml", "--db", db)
    assert Decimal(q["worst_usd"]) > Decimal(q["expected_usd"]) > 0
    assert q["worst_case_includes"] == worst.removeprefix("worst case: ")
    assert q["expected_includes"].startswith("one answer of 256 tokens")
    assert q["worst_case_counts"] == {
        "max_attempts": 3,
        "max_escalations": 1,
        "max_tokens": 512,
        "reasoning_tokens": 0,
        "cache_write": None,
        "byok_fee": "0.05",
        "web_search": False,
        "native_fallback_tiers": [],
        "batch_tiers": [],
    }
    mixed = _quote(ROOT / "jobs" / "mixed.yaml", "--db", db)
    assert mixed["worst_case_counts"]["native_fallback_tiers"] == ["mid"]
    assert (
        "in mid (native_fallback) each call at the dearest model" in (mixed["worst_case_includes"])
    )


def test_the_worst_case_is_what_the_explanation_says(tmp_path: Path) -> None:
    """One record, one tier, an `:online` model, no escalation: the quote's worst case is, by
    hand, max_attempts × (prompt bytes + overheads at the prompt price + max_tokens at the
    completion price + the request fee + one web search) × (1 + BYOK fee)."""
    model = "openai/gpt-4o-mini"
    write_jsonl(
        tmp_path / "in.jsonl", [{"id": "a", "text": "Hello there", "target_lang": "German"}]
    )
    job = write_job(
        tmp_path,
        tiers={"mid": [f"{model}:online"]},
        limits={"max_attempts": 2, "max_escalations": 0},
        request={"max_tokens": 100},
    )
    q = _quote(job)
    assert q["worst_case_counts"]["web_search"] is True
    assert q["worst_case_counts"]["max_escalations"] == 0
    assert "escalation" not in q["worst_case_includes"]
    assert "a web search per call" in q["worst_case_includes"]
    assert "whole context" in q["worst_case_includes"]

    info = Catalog.shipped().get(model)
    assert info is not None
    messages = ["You translate.", "Translate into German:\n\nHello there"]
    prompt = REQUEST_OVERHEAD_TOKENS + sum(len(m) + MESSAGE_OVERHEAD_TOKENS for m in messages)
    prompt = max(prompt, info.context_length)  # the search's injected results: the context
    search = info.web_search if info.web_search is not None else Decimal("0.02")
    call = (
        prompt * (info.worst_prompt or info.prompt)
        + 100 * (info.worst_completion or info.completion)
        + info.request
        + search
    ) * (1 + BYOK_FEE)
    assert Decimal(q["worst_usd"]) == 2 * call.quantize(Decimal("1E-12"), rounding="ROUND_CEILING")


def test_records_no_call_of_which_fits_the_cap_are_said_to_fail_not_to_wait(
    tmp_path: Path,
) -> None:
    """`--budget 0.008` and Claude at max_tokens 1024: a long record's every call has a worst
    case above the whole cap, so the run fails it at once (exceeds_daily_cap) instead of
    leaving it pending for tomorrow. The dry run said only "the cap will likely stop the run and
    leave the rest pending"; it now counts those records, the same ones the run fails."""
    short = [{"id": f"s{i}", "text": "Hi.", "target_lang": "German"} for i in range(3)]
    long = [{"id": f"l{i}", "text": "Long sentence. " * 200, "target_lang": "German"}
            for i in range(2)]  # fmt: skip
    write_jsonl(tmp_path / "in.jsonl", short + long)
    job = write_job(
        tmp_path,
        tiers={"mid": ["anthropic/claude-sonnet-4.5"]},  # the other tiers stay as they are
        request={"max_tokens": 256},
    )
    db = tmp_path / "q.duckdb"
    q = _quote(job, "--db", db, "--budget", "0.008")
    assert q["never_fit"] == 2
    assert {t["tier"]: t["never_fit"] for t in q["tiers"] if t["never_fit"]} == {"mid": 2}
    text = run_cli("run", str(job), "--dry-run", "--db", str(db), "--budget", "0.008").stdout
    line = next(ln for ln in text.splitlines() if ln.startswith("cannot be sent: "))
    assert "2 record(s) of mid" in line
    assert "exceeds the whole cap $0.008000;" in line
    assert "failed (exceeds_daily_cap)" in line

    run = run_cli("run", str(job), "--simulate", "--db", str(db), "--budget", "0.008")
    assert run.returncode == 3, run.stderr  # the short ones then spend the cap
    with duckdb.connect(str(db), read_only=True) as con:
        failed = con.execute(
            "SELECT list(record_key ORDER BY record_key) FROM results "
            "WHERE error_type = 'exceeds_daily_cap'"
        ).fetchone()
    assert failed == (["l0", "l1"],)
    assert _quote(job, "--db", db, "--budget", "0.008")["never_fit"] == 0  # final now
