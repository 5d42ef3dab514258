"""Reader stage: stream a JSONL file into `Record`s with line numbers, in bounded memory.

A line that is not UTF-8 or not a JSON object still becomes a `Record` (with `fields=None`
and `error` set) so the runner can write an `invalid` row for it; reading never stops the run.
A UTF-8 byte order mark at the start of the file is dropped (one anywhere else is an error).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson

from batchroute.errors import InputError
from batchroute.types import Record

_BOM = b"\xef\xbb\xbf"  # the UTF-8 byte order mark some editors put first in a file


def record_key(raw: bytes) -> str:
    """Default key: sha256 of the line without its line ending."""
    return hashlib.sha256(raw).hexdigest()


def line_fp(raw: bytes, salt: bytes) -> int:
    """The fingerprint of one input line under `salt` (`prompt.line_salt`: the job's prompt,
    parameters and id field), as a signed 64-bit integer (the `results.line_fp` column).
    Equal fingerprints: the same bytes under the same prompt, so the same request and key."""
    digest = hashlib.blake2b(raw, digest_size=8, salt=salt).digest()
    return int.from_bytes(digest, "little", signed=True)


def _parse(raw: bytes, line_no: int, id_field: str | None, fp: int | None = None) -> Record:
    # orjson validates UTF-8 itself; the line is hashed only when no id field gives the key.
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as bad:
            return Record(line_no, record_key(raw), None, f"not UTF-8 (byte {bad.start})", fp)
        return Record(line_no, record_key(raw), None, f"not valid JSON: {exc}", fp)
    if not isinstance(obj, dict):
        reason = f"not a JSON object (got {type(obj).__name__})"
        return Record(line_no, record_key(raw), None, reason, fp)
    if id_field is None:
        return Record(line_no, record_key(raw), obj, None, fp)
    key = _id_key(obj, id_field)
    if key is None:
        reason = f"id field {id_field!r} missing or not a scalar"
        return Record(line_no, record_key(raw), None, reason, fp)
    return Record(line_no, key, obj, None, fp)


def _id_key(obj: dict[str, object], id_field: str) -> str | None:
    """The key an object's id field gives, or None when it gives none (the line is invalid)."""
    value = obj.get(id_field)
    if value is None or isinstance(value, dict | list) or value == "":
        return None
    return str(value)


def _lines(path: Path, start: int) -> Iterator[tuple[int, bytes]]:
    """(line number, line without its ending) for each non-blank line after `start`."""
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise InputError(f"cannot open input: {exc.strerror}", path=str(path)) from exc
    with fh:
        for line_no, line in enumerate(fh, start=1):
            if line_no <= start:
                continue
            raw = line.rstrip(b"\r\n")
            if line_no == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]  # as if saved without it: same fields, same key
            if not raw.strip():
                continue
            yield line_no, raw


def read_records(
    path: Path,
    *,
    id_field: str | None = None,
    start: int = 0,
    salt: bytes | None = None,
    expect: Callable[[], tuple[int, str] | None] | None = None,
) -> Iterator[Record]:
    """Yield one `Record` per non-blank line, lazily; with `salt`, each with its `line_fp`.

    `expect()`, asked before each line is parsed, may name the (line_fp, key) of a final
    record the store holds at that position (`ResumeLookup.expect`): a line with that very
    fingerprint is not parsed, and its record has no fields (resume skips it unrendered).

    Raises:
        InputError: only when the file itself cannot be opened.
    """
    if salt is None:
        for line_no, raw in _lines(path, start):
            yield _parse(raw, line_no, id_field)
        return
    for line_no, raw in _lines(path, start):
        fp = line_fp(raw, salt)
        known = expect() if expect is not None else None
        if known is not None and known[0] == fp:
            yield Record(line_no, known[1], None, None, fp)
        else:
            yield _parse(raw, line_no, id_field, fp)


def read_keys(path: Path, *, id_field: str | None = None) -> Iterator[str]:
    """The key of each record `read_records` yields, in the same order (one per record),
    without building the records: without an id field the key is the line's hash, so the
    line is not even parsed."""
    for _, raw in _lines(path, 0):
        if id_field is None:
            yield record_key(raw)
            continue
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            yield record_key(raw)  # as `_parse`: an invalid line's key is its hash
            continue
        key = _id_key(obj, id_field) if isinstance(obj, dict) else None
        yield record_key(raw) if key is None else key
