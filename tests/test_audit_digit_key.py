"""A digits-only API key does not rewrite the numbers of the answers (money3).

A local gateway's token may be all digits (`123456789012345`). The client cleans the key out
of every body it reads, before parsing (`errors.scrub`), and it did so on the raw bytes: a run
of those digits inside a JSON number — a `usage.cost`, a token count — became
`[redacted key]`, the body no longer parsed, and a paid answer was taken for a malformed one:
thrown away and paid for again. Now only JSON strings are cleaned of any 12-character start of
the key (where an echoed credential sits), and a number only when it holds the whole key.

Real CLI in a subprocess against a stand-in on a loopback port, real DuckDB file; the key
must still reach neither the database nor stderr.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import subprocs
import yaml
from factories import job_dict, texts, write_jsonl
from subprocs import run_cli_async
from test_audit_key_echo import _cells
from test_billing_standin import MODEL, StandIn

from batchroute.errors import REDACTED, keep_secret, scrub

KEY = "123456789012345"
KEY_ENV = "AUDIT_DIGIT_KEY"
N = 4
COST = Decimal("0.000123456789012345")  # the key's digits inside a real-looking cost


@dataclass
class DigitsInNumbers(StandIn):
    """Bills each generation at `COST`, which its usage reports; the generation id carries
    the key (a gateway building ids from its token: a string, so it must still be cleaned)."""

    def _bill(self, body: dict[str, Any], outcome: str) -> tuple[str, dict[str, Any]]:
        gid, usage = super()._bill(body, outcome)
        self.generations[f"gen-{KEY}-{gid}"] = self.generations.pop(gid)
        gid = f"gen-{KEY}-{gid}"
        self.billed[-1] = COST
        usage["cost"] = float(COST)
        usage["cost_details"] = {"upstream_inference_cost": float(COST)}
        usage["prompt_tokens_details"] = {"cached_tokens": 0, "audio_tokens": 0}
        return gid, usage


@pytest.mark.parametrize("stream", [False, True])
async def test_a_digit_key_leaves_the_costs_alone(
    tmp_path: Path, serve: Any, monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:
    """Before: every answer's body was unparseable once scrubbed: 4 records, 12 calls billed
    ($0.0015), no answer stored (3 attempts each, all `malformed_response`)."""
    monkeypatch.setitem(subprocs.ENV, KEY_ENV, KEY)
    standin = DigitsInNumbers("ok", generation_known=False)
    write_jsonl(tmp_path / "in.jsonl", texts(N))
    job = job_dict(
        tmp_path, quality=[], endpoint={"base_url": await serve(standin), "api_key_env": KEY_ENV}
    )
    job["tiers"] = {"premium": {"models": [MODEL], "stream": stream}}
    job["limits"] = {**job["limits"], "max_attempts": 3, "reconcile_wait_s": 0}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    code, err = await run_cli_async("run", str(path))
    db = tmp_path / "results.duckdb"
    assert code == 0, err
    assert len(standin.billed) == N, f"{len(standin.billed)} calls billed for {N} records"
    cells = _cells(db)
    assert KEY not in err
    assert not [c for c in cells if KEY in c]
    assert any(REDACTED in c for c in cells), "no key was echoed: the test proves less"
    from subprocs import query

    assert query(db, "SELECT status, count(*) FROM results GROUP BY 1") == [("done", N)]
    (booked,) = query(db, "SELECT sum(cost_usd) FROM attempts")[0]
    assert booked >= standin.total
    assert query(db, "SELECT DISTINCT cost_source FROM attempts") == [("openrouter",)]


def test_strings_are_still_cleaned_and_a_number_holding_the_whole_key_too() -> None:
    """The leak stays closed: in a JSON body the key (or a 12-digit start of it) inside a
    string is redacted, a number that is the key becomes a redacted string; a number that
    merely holds the key's digits (a cost) is left as it is. A body that is not JSON is
    cleaned as text."""
    keep_secret(KEY)
    body = (
        b'{"error":{"message":"Received API Key = ' + KEY.encode() + b'","raw":"k=1234567890123"},'
        b'"token":' + KEY.encode() + b',"cost":0.000123456789012345,"n":123456789012}'
    )
    clean = scrub(body).decode()
    assert "1234567890123" not in clean.split('"cost"')[0]  # in strings, and the number key
    assert '"cost":0.000123456789012345' in clean
    assert '"n":123456789012' in clean
    assert f'"token":"{REDACTED}"' in clean
    import orjson

    assert orjson.loads(clean)["error"]["message"] == f"Received API Key = {REDACTED}"
    text = scrub(b"Invalid token 123456789012345 (proxy)").decode()
    assert KEY not in text
    assert REDACTED in text
