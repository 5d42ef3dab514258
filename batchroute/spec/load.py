"""Reading a job file: YAML (duplicate keys rejected) → a validated `JobSpec`, or one `SpecError`.

The errors name the file and the key path or line. Paths in a job file resolve against its
folder. It reads that one file and nothing else: no network, database or environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from batchroute.errors import SpecError
from batchroute.spec.job import JobSpec


def _key_path(loc: tuple[int | str, ...]) -> str:
    return (
        ".".join(str(p) for p in loc if p not in ("function-before", "function-after")) or "(top)"
    )


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping gives the same key twice: PyYAML would silently keep the last one."""

    def __init__(self, key: object, first_line: int, mark: yaml.Mark) -> None:
        self.key = key
        self.first_line = first_line
        self.line = mark.line + 1
        super().__init__(problem=f"duplicate key {key!r}", problem_mark=mark)


class _UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that rejects a key given twice in one mapping (`budget:` twice would
    otherwise mean the last one wins, silently). Merge keys (`<<: *anchor`) may still be
    overridden: that is what they are for."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # unhashable: the base class says so, with its line
                    continue
                if first is not None:
                    raise DuplicateKeyError(key, first, key_node.start_mark)
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _read_yaml(p: Path) -> Any:
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise SpecError("cannot read the job file: no such file", path=str(p)) from None
    except IsADirectoryError:
        raise SpecError("cannot read the job file: it is a folder", path=str(p)) from None
    except OSError as exc:
        raise SpecError(f"cannot read the job file: {exc.strerror or exc}", path=str(p)) from None
    try:
        text = raw.decode("utf-8-sig")  # a BOM from a Windows editor is fine
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SpecError(
            f"not UTF-8 (byte 0x{raw[exc.start]:02x} at column {col}); save the job file as UTF-8",
            path=str(p),
            key=f"line {line}",
        ) from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no Python objects
    except DuplicateKeyError as exc:
        raise SpecError(
            f"duplicate key {exc.key!r} (first given on line {exc.first_line}): a key may "
            "appear only once in a mapping",
            path=str(p),
            key=f"line {exc.line}",
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else None
        raise SpecError(f"not valid YAML: {_yaml_words(exc)}", path=str(p), key=where) from None
    except RecursionError:
        raise SpecError("nested too deeply to be a job file", path=str(p)) from None


def load_spec(path: str | Path) -> JobSpec:
    """Read and validate a job file; relative paths resolve against the job file's folder.

    Raises:
        SpecError: naming the file and the key path (or line) of the first problems.
    """
    p = Path(path)
    data = _read_yaml(p)
    if not isinstance(data, dict):
        raise SpecError("a job file must be a YAML mapping", path=str(p))
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{_key_path(e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()[:8]
        ]
        raise SpecError("; ".join(problems), path=str(p)) from None
    except RecursionError:
        raise SpecError("nested too deeply to be a job file", path=str(p)) from None
    base = p.resolve().parent
    return spec.model_copy(
        update={
            "input": (base / spec.input).resolve(),
            "output": spec.output.model_copy(
                update={"database": (base / spec.output.database).resolve()}
            ),
            "path": p.resolve(),
        }
    )


def _yaml_words(exc: yaml.YAMLError) -> str:
    """The parser's words and places, without its snippet of the file: a job file's line may
    hold an API key pasted there (an unclosed quote, a `.env` line), and the message goes to
    stderr and cron's mail (audit6)."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return str(exc)  # (a reader error names a character and a position, no text)
    parts = []
    for words, mark in ((exc.context, exc.context_mark), (exc.problem, exc.problem_mark)):
        if words:
            at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            parts.append(f"{words}{at}")
    return "; ".join(parts) or type(exc).__name__
