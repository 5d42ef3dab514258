"""The API key pasted where the job names its environment variable is echoed (audit5).

`endpoint.api_key_env` names the variable that holds the key. Pasting the key itself there is
the common slip (the README's job files show `api_key_env: OPENROUTER_API_KEY`, and a user
with the key on the clipboard puts it in the one "key" field). No variable has that name, so
`batchroute run` stops with exit 2 and `no API key: set sk-or-v1-…`: the key on stderr, i.e.
in cron's mail and every log that keeps it. The key must never appear in an error message.

Now `endpoint.api_key_env` must be a variable's name: a bad job file (exit 2) whose message
names the key path and does not repeat the value.

Real CLI in a subprocess; no server is needed (the run stops before any call).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from factories import job_dict, texts, write_jsonl
from subprocs import run_cli

KEY = "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"


def _job(tmp_path: Path) -> Path:
    write_jsonl(tmp_path / "in.jsonl", texts(3))
    job = job_dict(tmp_path, endpoint={"base_url": "http://127.0.0.1:9/api/v1", "api_key_env": KEY})
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("run",), id="run"),
        pytest.param(("validate",), id="validate"),
        pytest.param(("run", "--dry-run"), id="dry-run"),
    ],
)
def test_a_key_pasted_as_the_variable_name_is_never_echoed(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    """Before (b5d2829), `run`: exit 2, stderr `batchroute: no API key: set sk-or-v1-5b3c…,
    or try it offline with --simulate` (the whole key)."""
    job = _job(tmp_path)
    proc = run_cli(args[0], str(job), *args[1:])
    text = proc.stdout + proc.stderr
    assert KEY not in text, text
    assert KEY[12:40] not in text, text  # not a part of it either
    if args == ("run",):
        assert proc.returncode == 2, text  # a bad job file: it says which key is wrong
        assert "api_key_env" in text, text


@pytest.mark.parametrize(
    ("env", "shown"),
    [
        pytest.param("a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0", False, id="hex-token"),
        pytest.param("MY_GATEWAY_KEY", True, id="a-variable"),
    ],
)
def test_an_unset_variable_is_named_only_when_it_looks_like_one(
    tmp_path: Path, env: str, shown: bool
) -> None:
    """A gateway token of letters and digits pasted as `api_key_env` passes the job file's
    check (it could be a variable's name). Before (2c1313c): `no API key: set a1b2c3…`, the
    token on stderr. Now an UPPER_SNAKE name is named; anything else is not repeated."""
    write_jsonl(tmp_path / "in.jsonl", texts(3))
    endpoint = {"base_url": "http://127.0.0.1:9/api/v1", "api_key_env": env}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job_dict(tmp_path, endpoint=endpoint), sort_keys=False))
    proc = run_cli("run", str(path))
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2, text
    assert "no API key" in text, text
    assert (env in text) is shown, text


@pytest.mark.parametrize(
    "url",
    [
        KEY,
        "openrouter.ai/api/v1",
        "ftp://example.com/api",
        "https:///api/v1",
        " http://x/",
        f"https://user:{KEY}@openrouter.ai/api/v1",  # the review: a secret kept with the URL
        f"https://openrouter.ai/api/v1?key={KEY}",
    ],
)
def test_a_base_url_that_is_no_http_url_is_refused_without_echoing_it(
    tmp_path: Path, url: str
) -> None:
    """Before (4fb9e65), a base_url that is no URL passed the job file's check: every call
    failed as a connection error, booked at its reservation, and again at every rerun (audit6's
    "noticed"); the key pasted there must not be echoed either."""
    write_jsonl(tmp_path / "in.jsonl", texts(3))
    job = job_dict(tmp_path, endpoint={"base_url": url, "api_key_env": "OPENROUTER_API_KEY"})
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    proc = run_cli("validate", str(path))
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2, text
    assert "endpoint.base_url" in text, text
    assert KEY[12:40] not in text, text
