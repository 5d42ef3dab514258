"""A YAML error quoted the job file's line, and with it a key pasted there (audit6).

PyYAML's message for a syntax error carries a snippet of the offending line. An API key pasted
into the job file with a stray quote (`api_key_env: "sk-or-v1-…` never closed), or a `.env`
line pasted in (`OPENROUTER_API_KEY=sk-or-v1-…`), was echoed on stderr by `validate` and
`run` (exit 2), into cron's mail: 31 characters of the key, 22 of them secret, where the
project counts 12 as the key (`errors._SECRET_HEAD`). The key in the environment is kept out
of every message; one in the job file was not.

Real CLI in a subprocess, a real job file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from subprocs import run_cli

KEY = "sk-or-v1-" + "4f2a9c1e7b3d5a8f" * 4

LINES = {
    "unclosed quote": f'  api_key_env: "{KEY}\n',
    "a .env line": f"  api_key_env: OPENROUTER_API_KEY\nOPENROUTER_API_KEY={KEY}\n",
}


@pytest.mark.parametrize("case", list(LINES))
@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_yaml_error_never_quotes_a_key_pasted_in_the_job_file(
    tmp_path: Path, case: str, command: str
) -> None:
    """Before (4fb9e65): `"sk-or-v1-4f2a9c1e7b3d5a8f4f2a9c ...` (unclosed quote) or
    `OPENROUTER_API_KEY=sk-or-v1-4f2a9c1e ...` on stderr."""
    (tmp_path / "in.jsonl").write_text('{"id": 1, "text": "x"}\n')
    job = tmp_path / "job.yaml"
    job.write_text(f"name: t\ninput: in.jsonl\nendpoint:\n{LINES[case]}tiers:\n  mid: {{}}\n")
    done = run_cli(command, str(job))
    assert done.returncode == 2, done.stderr
    assert "not valid YAML" in done.stderr, done.stderr
    assert "line " in done.stderr, done.stderr
    secret = KEY.removeprefix("sk-or-v1-")
    assert secret[:4] not in done.stderr, done.stderr
