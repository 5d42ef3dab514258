"""Reader: line numbers, keys, and bad lines that become invalid records instead of errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from batchroute.errors import InputError
from batchroute.reader import read_records


def test_keys_line_numbers_and_bad_lines(tmp_path: Path) -> None:
    p = tmp_path / "in.jsonl"
    p.write_bytes(
        b'{"id": 7, "text": "a"}\n'
        b"\n"
        b"[1, 2]\n"
        b"{broken\n"
        b'\xff\xfe{"id": 1}\n'
        b'{"text": "no id"}\r\n'
        b'{"id": "x", "text": "b"}'  # no final newline
    )
    recs = list(read_records(p, id_field="id"))
    assert [r.line_no for r in recs] == [1, 3, 4, 5, 6, 7]
    assert recs[0].key == "7"
    assert recs[0].fields == {"id": 7, "text": "a"}
    assert recs[1].fields is None
    assert "not a JSON object" in (recs[1].error or "")
    assert recs[2].fields is None
    assert "not valid JSON" in (recs[2].error or "")
    assert recs[3].fields is None
    assert "not UTF-8" in (recs[3].error or "")
    assert recs[4].fields is None
    assert "id field" in (recs[4].error or "")
    assert recs[5].key == "x"


def test_default_key_is_sha256_of_the_line(tmp_path: Path) -> None:
    p = tmp_path / "in.jsonl"
    p.write_bytes(b'{"text": "a"}\r\n{"text": "a"}\n')
    a, b = read_records(p)
    assert a.key == b.key == hashlib.sha256(b'{"text": "a"}').hexdigest()


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot open"):
        list(read_records(tmp_path / "nope.jsonl"))


def test_streams_lazily(tmp_path: Path) -> None:
    p = tmp_path / "in.jsonl"
    p.write_text("".join(f'{{"n": {i}}}\n' for i in range(10_000)))
    it = read_records(p)
    first = next(it)
    assert first.fields == {"n": 0}
    assert sum(1 for _ in it) == 9_999


def test_a_utf8_bom_on_the_first_line_is_accepted(tmp_path: Path) -> None:
    """Editors on Windows save `\\ufeff` first: the first record is valid, and its key is that
    of the line without the BOM (saving the file again without it changes no key)."""
    p = tmp_path / "in.jsonl"
    p.write_bytes(b'\xef\xbb\xbf{"id": 7, "text": "a"}\r\n{"text": "b"}\n')
    first, second = read_records(p, id_field="id")
    assert first.error is None
    assert first.fields == {"id": 7, "text": "a"}
    assert first.key == "7"
    assert second.error is not None  # no id: still reported as before
    a, b = read_records(p)
    assert a.fields == {"id": 7, "text": "a"}
    assert a.key == hashlib.sha256(b'{"id": 7, "text": "a"}').hexdigest()
    assert b.key == hashlib.sha256(b'{"text": "b"}').hexdigest()


def test_a_bom_anywhere_but_the_first_line_stays_invalid(tmp_path: Path) -> None:
    p = tmp_path / "in.jsonl"
    p.write_bytes(b'{"n": 1}\n\xef\xbb\xbf{"n": 2}\n')
    first, second = read_records(p)
    assert first.fields == {"n": 1}
    assert second.fields is None
    assert "not valid JSON" in (second.error or "")


def test_a_bom_alone_on_the_first_line_is_a_blank_line(tmp_path: Path) -> None:
    p = tmp_path / "in.jsonl"
    p.write_bytes(b'\xef\xbb\xbf\n{"n": 1}\n')
    (only,) = read_records(p)
    assert (only.line_no, only.fields) == (2, {"n": 1})
