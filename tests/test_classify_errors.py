"""`batchroute classify` on records it cannot classify, through the real CLI in a subprocess.

A field the prompt needs that no record has is a wrong argument (`--field nope`) or a job file
that does not fit the input: exit 2 with one line naming the file, a line and the key, as for any
bad argument (design §3). A few records without it, or not JSON, are bad records among good
ones: each keeps its line with its error on stdout (one output line per input line), stderr
names the file, line and key of the first few, and the exit code is 4, as a run that leaves
invalid records (design-notes: "Exit code 4 covers invalid records").
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from factories import write_job, write_jsonl
from subprocs import ENV


def classify(tmp_path: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batchroute", "classify", *map(str, args)],
        capture_output=True, text=True, cwd=tmp_path, env=ENV, timeout=120, check=False,
    )  # fmt: skip


def no_traceback(p: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in p.stderr + p.stdout
    assert "unexpected error" not in p.stderr


def test_a_field_no_record_has_exits_2_naming_the_file_line_and_key(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": f"Say hello {i}"} for i in range(3)])
    p = classify(tmp_path, "--field", "nope", src)
    assert p.returncode == 2, (p.stdout, p.stderr)
    no_traceback(p)
    (line,) = p.stderr.strip().splitlines()
    assert str(src) in line
    assert "'nope'" in line
    assert "line 1" in line
    assert "text" in line  # what the record does have, to spot the typo


def test_a_job_whose_prompt_field_no_record_has_exits_2(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "body": "Say hello"}])
    job = write_job(tmp_path)  # its prompt asks for {target_lang} and {text}
    p = classify(tmp_path, "--job", job, src)
    assert p.returncode == 2, (p.stdout, p.stderr)
    no_traceback(p)
    (line,) = p.stderr.strip().splitlines()
    assert str(src) in line
    assert "line 1" in line
    assert "'target_lang'" in line or "'text'" in line


def test_some_records_without_the_field_are_reported_per_line_and_exit_4(tmp_path: Path) -> None:
    records: list[dict[str, Any] | str] = [
        {"text": "Translate this into French."},
        {"body": "no text here"},
        "not json",
        {"text": "Write a haiku about the sea."},
    ]
    src = write_jsonl(tmp_path / "in.jsonl", records)
    p = classify(tmp_path, src)
    assert p.returncode == 4, (p.stdout, p.stderr)
    no_traceback(p)
    out = [json.loads(x) for x in p.stdout.splitlines()]
    assert [o["line"] for o in out] == [1, 2, 3, 4]  # one output line per input line
    assert ["error" in o for o in out] == [False, True, True, False]
    assert out[0]["tier"]
    assert out[3]["tier"]
    err = p.stderr
    assert f"{src} line 2" in err
    assert "'text'" in err
    assert "body" in err  # the fields the record has
    assert f"{src} line 3" in err
    assert "2 of 4 records" in err


def test_every_record_classified_exits_0_with_nothing_on_stderr(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "Say hello"}, {"text": "Sum 2 and 3"}])
    p = classify(tmp_path, src)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    assert len(p.stdout.splitlines()) == 2
