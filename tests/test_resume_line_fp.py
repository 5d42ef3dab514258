"""Resume skips an unchanged final line on its fingerprint (issue 11, `results.line_fp`).

A result row keeps the fingerprint of its input line under the job's prompt, parameters and id
field. The next run skips a final record whose line has that very fingerprint without parsing
its JSON, rendering or fingerprinting its request; any other final line (its text changed, the
prompt or parameters changed, or a row written before the column) takes the full path, so it
is still seen stale exactly when its request changed. The real CLI, the simulator, DuckDB files.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
from factories import texts, write_job, write_jsonl
from subprocs import job_endpoint, query, run_cli, simulator
from test_resume import LIMITS, REQUEST, _summary

from batchroute.prompt import line_salt, request_params
from batchroute.reader import line_fp
from batchroute.spec import load_spec


def _write(db: Path, sql: str) -> None:
    con = duckdb.connect(str(db))
    try:
        con.execute(sql)
    finally:
        con.close()


def test_each_row_keeps_its_lines_fingerprint_and_an_unchanged_line_is_not_rendered(
    tmp_path: Path,
) -> None:
    """The row's line_fp is `reader.line_fp` of its line; on the next run a final record with
    that fingerprint is skipped without its request fingerprint being compared (here tampered
    in the file, which the full path would report stale), while a row without line_fp (written
    before the column) still takes the full path and is seen stale."""
    tmp = tmp_path
    with simulator() as sim:
        write_jsonl(tmp / "in.jsonl", texts(40))
        job = write_job(tmp, endpoint=job_endpoint(sim), limits=LIMITS, request=REQUEST)
        db = tmp / "results.duckdb"
        first = run_cli("run", str(job))
        assert first.returncode == 0, first.stderr

        spec = load_spec(job)
        salt = line_salt(spec.prompt, request_params(spec.request), spec.id_field)
        lines = (tmp / "in.jsonl").read_bytes().splitlines()
        expected = {f"r{i:05d}": line_fp(raw, salt) for i, raw in enumerate(lines)}
        stored = dict(query(db, "SELECT record_key, line_fp FROM results"))
        assert stored == expected

        # r00003: same line, request_fp tampered: skipped on its line_fp (not rendered).
        # r00004: the same tampering, but no line_fp (a row from before migration 9).
        _write(db, "UPDATE results SET request_fp = 'tampered' WHERE record_key = 'r00003'")
        _write(
            db,
            "UPDATE results SET request_fp = 'tampered', line_fp = NULL "
            "WHERE record_key = 'r00004'",
        )
        paid = sim.calls()
        again = run_cli("run", str(job))
        assert again.returncode == 0, again.stderr
        s = _summary(again.stdout)
        assert (s["final"], s["stale"]) == ("40", "1")  # r00004 only
        assert sim.calls() == paid

        dry = run_cli("run", str(job), "--dry-run", "--rerun-changed", "--json")
        assert dry.returncode == 0, dry.stderr
        assert json.loads(dry.stdout)["stale"] == 1
        redo = run_cli("run", str(job), "--rerun-changed")
        assert redo.returncode == 0, redo.stderr
        assert sim.calls() - paid == 1
        assert query(db, "SELECT line_fp FROM results WHERE record_key = 'r00004'") == [
            (expected["r00004"],)
        ]


def test_a_line_changed_outside_the_prompt_is_not_stale_and_a_changed_prompt_is(
    tmp_path: Path,
) -> None:
    """A field the prompt does not use changes: the line's fingerprint differs, so the full path
    runs and finds the request unchanged (not stale, not redone). A changed word in a used
    field: stale. Then the prompt itself changes, lines untouched: every record is stale, and
    with --rerun-changed every one is redone; so does a changed parameter."""
    tmp = tmp_path
    with simulator() as sim:
        records = texts(30)
        write_jsonl(tmp / "in.jsonl", records)
        job = write_job(tmp, endpoint=job_endpoint(sim), limits=LIMITS, request=REQUEST)
        assert run_cli("run", str(job)).returncode == 0

        for r in records[:5]:
            r["note"] = "a field the prompt does not use"
        records[5]["text"] += " (edited)"
        write_jsonl(tmp / "in.jsonl", records)
        paid = sim.calls()
        kept = run_cli("run", str(job))
        assert kept.returncode == 0, kept.stderr
        assert _summary(kept.stdout)["stale"] == "1"
        rerun = run_cli("run", str(job), "--rerun-changed")
        assert rerun.returncode == 0, rerun.stderr
        assert sim.calls() - paid == 1  # r00005 only: the notes changed no request

        prompt = {
            "system": "You translate carefully.",
            "user": "Translate into {target_lang}:\n\n{text}",
        }
        job = write_job(
            tmp, endpoint=job_endpoint(sim), limits=LIMITS, request=REQUEST, prompt=prompt
        )
        paid = sim.calls()
        changed = run_cli("run", str(job))
        assert changed.returncode == 0, changed.stderr
        assert _summary(changed.stdout)["stale"] == "30"
        assert sim.calls() == paid
        assert run_cli("run", str(job), "--rerun-changed").returncode == 0
        assert sim.calls() - paid == 30
        assert _summary(run_cli("run", str(job)).stdout)["stale"] is None

        request = {**REQUEST, "temperature": 0.5}
        job = write_job(
            tmp, endpoint=job_endpoint(sim), limits=LIMITS, request=request, prompt=prompt
        )
        assert _summary(run_cli("run", str(job)).stdout)["stale"] == "30"


def test_a_database_from_before_the_column_resumes_as_before(tmp_path: Path) -> None:
    """A file whose schema predates line_fp (a dry run does not migrate it): the dry run
    still finds the final and the stale records; the run migrates it and agrees."""
    tmp = tmp_path
    with simulator() as sim:
        records = texts(20)
        write_jsonl(tmp / "in.jsonl", records)
        job = write_job(tmp, endpoint=job_endpoint(sim), limits=LIMITS, request=REQUEST)
        db = tmp / "results.duckdb"
        assert run_cli("run", str(job)).returncode == 0
        (version,) = query(
            db,
            "SELECT version FROM batchroute_migrations WHERE name LIKE 'results.line_fp%'",
        )[0]
        _write(db, "ALTER TABLE results DROP COLUMN line_fp")
        # ...and the columns of every later migration: the file as the one before left it
        _write(db, "ALTER TABLE attempts DROP COLUMN IF EXISTS listed_usd")  # migration 11
        _write(db, "ALTER TABLE attempts DROP COLUMN IF EXISTS served_model")  # migration 12
        _write(db, "ALTER TABLE attempts DROP COLUMN IF EXISTS served_listed_usd")
        _write(db, "DROP TABLE IF EXISTS generation_gaps")
        _write(db, f"DELETE FROM batchroute_migrations WHERE version >= {version}")

        records[2]["text"] += " (edited)"
        write_jsonl(tmp / "in.jsonl", records)
        dry = run_cli("run", str(job), "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "1 changed since" in dry.stdout, dry.stdout
        paid = sim.calls()
        run = run_cli("run", str(job))
        assert run.returncode == 0, run.stderr
        s = _summary(run.stdout)
        assert (s["final"], s["stale"]) == ("20", "1")
        assert sim.calls() == paid
        assert query(db, "SELECT count(line_fp) FROM results") == [(0,)]  # skipped: unwritten


def test_lines_skipped_in_bulk_are_counted_as_the_intake_counts_them(tmp_path: Path) -> None:
    """The feed reads only the lines the store has no final, unchanged record of: every other
    line is counted in bulk. Identical copies of a final line (repeats, never read), a final
    key whose edited line comes first (stale; its unchanged copy later is the repeat), blank
    lines, a new record and a failed one: the dry run, the run's summary, the progress total
    and the calls agree with the records' real fate."""
    tmp = tmp_path
    with simulator() as sim:
        records = texts(30)
        write_jsonl(tmp / "in.jsonl", records)
        job = write_job(tmp, endpoint=job_endpoint(sim), limits=LIMITS, request=REQUEST)
        db = tmp / "results.duckdb"
        assert run_cli("run", str(job)).returncode == 0
        _write(db, "UPDATE results SET status = 'failed' WHERE record_key = 'r00007'")
        lines = (tmp / "in.jsonl").read_text().splitlines()
        edited = json.dumps({**records[3], "text": records[3]["text"] + " (edited)"})
        new = json.dumps(texts(1, prefix="n")[0])
        # 30 records as written + 3 repeats of final lines + the edited r00003 first + 1 new
        body = [edited, *lines[:10], "", *lines[10:], "   ", lines[0], lines[1], lines[9], new]
        (tmp / "in.jsonl").write_text("\n".join(body) + "\n")
        dry = run_cli("run", str(job), "--dry-run", "--json")
        assert dry.returncode == 0, dry.stderr
        quote = json.loads(dry.stdout)
        assert (quote["records"], quote["duplicates"], quote["stale"]) == (1, 4, 1)
        paid = sim.calls()
        run = run_cli("run", str(job))
        assert run.returncode == 4, run.stderr  # a failure is still in the input: r00007
        assert sim.calls() - paid == 1  # the new record only
        s = _summary(run.stdout)
        assert (s["done"], s["final"], s["stale"]) == ("1", "30", "1")
        assert s["earlier_failed"] == "1"  # r00007, skipped unread
        assert "35 records, 30 already final (skipped), 4 repeated ids, 1 to send" in run.stderr
        seen = query(db, "SELECT records_seen FROM runs ORDER BY started_at DESC LIMIT 1")
        assert seen == [(35,)]  # 30 + 4 repeats + 1 new: blank lines are no records
