"""Reader stage: stream a JSONL file into `Record`s with line numbers, in bounded memory.

A line that is not UTF-8 or not a JSON object still becomes a `Record` (with `fields=None`
and `error` set) so the runner can write an `invalid` row for it; reading never stops the run.
A UTF-8 byte order mark at the start of the file is dropped (one anywhere else is an error).
"""

from __future__ import annotations

import hashlib
import json
import sys
from array import array
from bisect import bisect_right
from collections.abc import Iterator
from decimal import Decimal
from functools import partial
from operator import methodcaller
from pathlib import Path

import orjson

from batchroute.errors import InputError
from batchroute.types import Record

_BOM = b"\xef\xbb\xbf"  # the UTF-8 byte order mark some editors put first in a file
CHUNK = 1 << 20  # bytes per read of the scans below: the lines of one read are one batch
_digest = methodcaller("digest")


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
    key = _id_key(obj, id_field, raw)
    if key is None:
        reason = f"id field {id_field!r} missing or not a scalar"
        return Record(line_no, record_key(raw), None, reason, fp)
    return Record(line_no, key, obj, None, fp)


def _id_key(obj: dict[str, object], id_field: str, raw: bytes) -> str | None:
    """The key an object's id field gives, or None when it gives none (the line is invalid)."""
    value = obj.get(id_field)
    if value is None or isinstance(value, dict | list) or value == "":
        return None
    if type(value) is float:
        return _float_key(value, raw, id_field)
    return str(value)


def _float_key(value: float, raw: bytes, id_field: str) -> str:
    """The key of a numeric id orjson read as a float: its text as before when that names the
    number written, else the number as written. orjson reads an integer past 64 bits (and a
    decimal past 17 digits) as the nearest float, so 12345678901234567890123 and …124 were both
    "1.2345678901234568e+22": one key, every record after the first dropped as a duplicate
    (audit6). Only such ids pay for the second parse (the stdlib's, exact)."""
    try:
        exact = json.loads(raw, parse_float=Decimal)[id_field]
    except (ValueError, KeyError, TypeError):  # (a number of > 4,300 digits: as before)
        return str(value)
    if isinstance(exact, int | Decimal) and Decimal(repr(value)) != exact:
        return str(exact)
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
    path: Path, *, id_field: str | None = None, start: int = 0, salt: bytes | None = None
) -> Iterator[Record]:
    """Yield one `Record` per non-blank line, lazily; with `salt`, each with its `line_fp`.

    A resume reads only the lines that are not final and unchanged (`scan_line_fps`,
    `LineReader`, `parse_line`: see `runner/resume.py`).

    Raises:
        InputError: only when the file itself cannot be opened.
    """
    for line_no, raw in _lines(path, start):
        yield _parse(raw, line_no, id_field, None if salt is None else line_fp(raw, salt))


class LineIndex:
    """Where each batch of lines of a file starts (byte offset, first line's position), kept
    by `scan_line_fps`: `LineReader` then reads the lines at given positions without reading
    the others. A few entries per 4 MiB of input; `lines` counts every line, blank ones too
    (positions are 0-based: a record's `line_no` is its position + 1)."""

    def __init__(self) -> None:
        self.offsets: list[int] = []
        self.firsts: list[int] = []
        self.lines = 0


def _raw(piece: bytes, pos: int) -> bytes:
    """A line as `_lines` has it: without its line ending, nor the first line's BOM."""
    raw = piece.rstrip(b"\r\n")
    return raw[len(_BOM) :] if pos == 0 and raw.startswith(_BOM) else raw


def line_raw(line: bytes, pos: int) -> bytes:
    """The line at `pos`, read with its line ending (`readline`), as `LineReader.at` gives it."""
    return _raw(line, pos)


def scan_line_fps(path: Path, salt: bytes | None, index: LineIndex) -> Iterator[array[int]]:
    """`line_fp` of every line of the file (blank ones too), in order, a batch at a time, and
    the batches' places in `index`. The lines are split and hashed by C code (`bytes.split`,
    hashlib), so this is the one pass over the input whose cost is per line (issue 11).
    Without a salt the lines are not hashed (zeros): the index alone.

    Raises:
        InputError: when the file cannot be opened.
    """
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise InputError(f"cannot open input: {exc.strerror}", path=str(path)) from exc
    hashed = None if salt is None else partial(hashlib.blake2b, digest_size=8, salt=salt)
    offset = pos = 0
    rest: list[bytes] = []  # the start of a line that goes on in the next read(s)
    with fh:
        while True:
            chunk = fh.read(CHUNK)
            if chunk and b"\n" not in chunk:
                rest.append(chunk)  # a line longer than a read: joined once, not per read
                continue
            data = b"".join([*rest, chunk])
            parts = data.split(b"\n")
            rest = [parts.pop()] if chunk else []
            if not chunk and not data:
                break
            index.offsets.append(offset)
            index.firsts.append(pos)
            if pos == 0:
                parts[0] = _raw(parts[0], 0)
            if b"\r" in data:
                parts = [p.rstrip(b"\r") for p in parts]
            if hashed is None:  # nothing to match: only the index is wanted
                fps = array("q", bytes(8 * len(parts)))
            else:  # as `line_fp`: each digest a little-endian int64
                fps = array("q", b"".join(map(_digest, map(hashed, parts))))
            if sys.byteorder != "little":  # pragma: no cover - no such machine here
                fps.byteswap()
            yield fps
            offset += len(data) - (len(rest[0]) if rest else 0)
            pos += len(parts)
            if not chunk:
                break
    index.lines = pos


class LineReader:
    """The lines at given positions of a file `scan_line_fps` indexed, in increasing order:
    each read is one of the scan's batches, and a batch without a wanted line is not read.
    Close it after use."""

    def __init__(self, path: Path, index: LineIndex) -> None:
        self._path = path
        self._index = index
        try:
            self._fh = path.open("rb")
        except OSError as exc:
            raise InputError(f"cannot open input: {exc.strerror}", path=str(path)) from exc
        self._batch = -1
        self._first = 0
        self._parts: list[bytes] = []

    def at(self, pos: int) -> bytes:
        """The line at `pos` as `read_records` reads it (no line ending, no BOM).

        Raises:
            InputError: the file no longer has that line (it changed since the scan)."""
        ix = self._index
        b = self._batch
        if not (self._first <= pos < self._first + len(self._parts)):  # not in this block
            b = bisect_right(ix.firsts, pos) - 1
            start = ix.offsets[b]
            self._fh.seek(start)
            data = self._fh.read(ix.offsets[b + 1] - start if b + 1 < len(ix.offsets) else -1)
            self._parts = data.split(b"\n")
            if data.endswith(b"\n"):
                self._parts.pop()  # not a line: what follows the batch's last line ending
            self._batch = b
            self._first = ix.firsts[b]
        i = pos - ix.firsts[b]
        if b < 0 or i >= len(self._parts) or pos >= ix.lines:
            raise InputError(
                f"the input changed while the run read it (line {pos + 1} is gone): run again",
                path=str(self._path),
            )
        return _raw(self._parts[i], pos)

    def close(self) -> None:
        self._fh.close()


def key_of(raw: bytes, id_field: str | None) -> str | None:
    """The key `read_records` gives the record of this line; None for a blank line."""
    if not raw.strip():
        return None
    if id_field is None:
        return record_key(raw)
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return record_key(raw)  # as `_parse`: an invalid line's key is its hash
    key = _id_key(obj, id_field, raw) if isinstance(obj, dict) else None
    return record_key(raw) if key is None else key


def parse_line(raw: bytes, pos: int, id_field: str | None, salt: bytes) -> Record:
    """The record of the (non-blank) line at `pos`, as `read_records(salt=...)` yields it."""
    return _parse(raw, pos + 1, id_field, line_fp(raw, salt))
