"""The README tells the truth: its set-up commands are the ones CI runs, and they work.

A new user copies the first two commands; CI (`.ci/run`) must run the same test command, the
first command must succeed offline, and every command and option in the command table must
exist in `batchroute --help`.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from batchroute.cli import main
from batchroute.commands import simulated_db
from batchroute.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
CI = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
RUN_CMD = "pip install -e . && batchroute run jobs/translate.yaml --simulate"
TEST_CMD = "pip install -e '.[dev]' && pytest -q"


def shell_blocks(text: str) -> list[str]:
    """Lines of the ```sh blocks."""
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines()]


def command_table() -> dict[str, str]:
    """{command: its usage cell} from the README's `| command | what it does |` table."""
    rows = re.findall(r"^\| `batchroute (\w+)([^`]*)` \|", README, flags=re.M)
    return {cmd: usage for cmd, usage in rows}


def batchroute_exe() -> list[str]:
    """The installed console script, as a user would type it; else `python -m batchroute`."""
    script = Path(sys.executable).parent / "batchroute"
    if script.exists():
        return [str(script)]
    found = shutil.which("batchroute")
    return [found] if found else [sys.executable, "-m", "batchroute"]


def test_readme_has_the_two_set_up_commands_verbatim() -> None:
    lines = shell_blocks(README)
    assert RUN_CMD in lines
    assert TEST_CMD in lines
    assert lines.index(RUN_CMD) < lines.index(TEST_CMD)  # first run it, then test it


def test_ci_runs_the_readme_test_command() -> None:
    ci_lines = [line.strip() for line in CI.splitlines() if not line.strip().startswith("#")]
    install, _, test = TEST_CMD.partition(" && ")
    # CI may add -q to pip; the install target and the test command must be the same.
    pattern = re.escape(install).replace(r"pip\ install", r"pip\ install(?:\ -q)?")
    assert any(re.fullmatch(pattern, line) for line in ci_lines), CI
    assert test in ci_lines
    assert ci_lines.index(test) > next(
        i for i, line in enumerate(ci_lines) if re.fullmatch(pattern, line)
    )


def test_the_first_readme_command_runs_offline(tmp_path: Path) -> None:
    """`batchroute run jobs/translate.yaml --simulate`, from the repository root, exit 0."""
    _, _, command = RUN_CMD.partition(" && ")
    argv = shlex.split(command)
    assert argv[0] == "batchroute"
    db = tmp_path / "readme.duckdb"  # keep the checkout clean
    p = subprocess.run(
        [*batchroute_exe(), *argv[1:], "--db", str(db)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    con = duckdb.connect(str(db), read_only=True)
    try:
        ((n, statuses),) = con.execute(
            "SELECT count(*), list(DISTINCT status) FROM results"
        ).fetchall()
    finally:
        con.close()
    assert n >= 200
    assert statuses == ["done"]


def test_the_readme_reports_the_database_the_simulated_run_wrote() -> None:
    """`--simulate` writes beside the job's database (issue 9): the README's report line must
    name that file, not the real one."""
    reports = [shlex.split(line) for line in shell_blocks(README) if "batchroute report" in line]
    assert reports, "no `batchroute report` line in a ```sh block"
    job_db = load_spec(ROOT / "jobs" / "translate.yaml").database_path
    assert ROOT / reports[0][2] == simulated_db(job_db)


def test_every_command_in_the_readme_table_exists_in_help() -> None:
    table = command_table()
    assert set(table) >= {"run", "report", "simulate", "validate"}
    p = subprocess.run(
        [*batchroute_exe(), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert p.returncode == 0, p.stderr
    (choices,) = re.findall(r"\{([\w,]+)\}", p.stdout)[:1]
    assert set(table) <= set(choices.split(","))


@pytest.mark.parametrize("command", sorted(command_table()))
def test_every_option_in_the_readme_table_exists(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    help_text = capsys.readouterr().out
    options = set(re.findall(r"--[a-z][a-z-]*", command_table()[command]))
    missing = {o for o in options if not re.search(rf"{re.escape(o)}\b", help_text)}
    assert not missing, f"batchroute {command}: README names {missing}, --help does not"


# --- links (issue 13) ---------------------------------------------------------------------------

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
# Paths named in the text: anything that climbs out (`../x`) or names a markdown file of docs/.
MENTION = re.compile(r"(?<![\w/.:-])(\.\./[\w./-]+|docs/[\w./-]+\.md)")
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _broken(doc: Path) -> list[str]:
    # Code blocks hold examples (a job file's `input: ../sample_data/...` is relative to it).
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
    bad = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a web address, mailto:, or an anchor in the same file
        path = (doc.parent / target.split("#", 1)[0]).resolve()
        if not path.is_relative_to(ROOT) or not path.exists():
            bad.append(f"link {target}")
    for name in MENTION.findall(text):
        base = doc.parent if name.startswith("../") else ROOT
        path = (base / name.rstrip(".")).resolve()
        if not path.is_relative_to(ROOT) or not path.exists():
            bad.append(f"mention {name}")
    return bad


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_relative_link_points_at_a_file_in_the_repository(doc: Path) -> None:
    """A reader of the repository (or of its page on a forge) can follow every link; the
    README once linked docs/openrouter-api.md and ../shared/..., which are not in it."""
    assert _broken(doc) == []


def test_the_link_check_finds_broken_links(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text(
        "[a](docs/openrouter-api.md) [b](../shared/docs/design.md) see `../shared/data` and "
        "docs/nothing.md; fine: [c](https://openrouter.ai) [d](#money)\n"
    )
    assert _broken(doc) == [
        "link docs/openrouter-api.md",
        "link ../shared/docs/design.md",
        "mention docs/openrouter-api.md",
        "mention ../shared/docs/design.md",
        "mention ../shared/data",
        "mention docs/nothing.md",
    ]
