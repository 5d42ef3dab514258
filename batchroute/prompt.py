"""Prompt stage: render a record into chat messages, and fingerprint the rendered request.

Pure and synchronous. A template field the record lacks raises `InputError`, which the runner
turns into an `invalid` row.
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Mapping
from typing import Any

import orjson

from batchroute.errors import InputError
from batchroute.spec import PromptSpec, RequestSpec


class _Fields(dict[str, Any]):
    """The record's fields as text, converted only when a template asks for them."""

    def __getitem__(self, key: str) -> str:
        try:
            return _text(super().__getitem__(key))
        except KeyError:
            raise InputError(f"missing field {key!r} used by the prompt template") from None


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


_NAMES: dict[str, tuple[str, ...]] = {}


def _names(template: str) -> tuple[str, ...]:
    """The record fields a template reads (plain names: `PromptSpec` allows no other), once
    per template."""
    found = _NAMES.get(template)
    if found is None:
        names = []
        for _, field, _, _ in string.Formatter().parse(template):
            if field is not None:
                names.append(field)
        found = _NAMES[template] = tuple(names)
    return found


def _render(template: str, fields: Mapping[str, Any]) -> str:
    # When every field the template reads is text (the usual record), `_Fields` would hand
    # each over as it is: format from the record itself, without copying it or a Python call
    # a field (issue 11). A field that is missing or not text takes the general path, which
    # converts it or raises the InputError naming it.
    for name in _names(template):
        if type(fields.get(name)) is not str:
            return template.format_map(_Fields(fields))
    return template.format_map(fields)


def render_messages(prompt: PromptSpec, fields: Mapping[str, Any]) -> list[dict[str, str]]:
    """The chat messages for one record."""
    messages = []
    if prompt.system:
        messages.append({"role": "system", "content": _render(prompt.system, fields)})
    messages.append({"role": "user", "content": _render(prompt.user, fields)})
    return messages


def request_params(request: RequestSpec) -> dict[str, Any]:
    """Generation parameters sent with every call (max_tokens always: it bounds cost)."""
    params: dict[str, Any] = {"max_tokens": request.max_tokens}
    for name in ("temperature", "top_p", "seed", "stop", "response_format"):
        value = getattr(request, name)
        if value is not None:
            params[name] = value
    params.update(request.extra_body)
    return params


def fingerprint(messages: list[dict[str, str]], params: Mapping[str, Any]) -> str:
    """Stable 16-hex-digit digest of what a record asks for (model excluded: fallback varies it)."""
    blob = orjson.dumps([messages, params], option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(blob, digest_size=8).hexdigest()


LINE_FP_VERSION = 1  # bump when rendering or `fingerprint` changes: every line is re-rendered


def line_salt(prompt: PromptSpec, params: Mapping[str, Any], id_field: str | None) -> bytes:
    """What decides a record's request and key besides its input line, as a 16-byte salt for
    `reader.line_fp`: the prompt (every field of it), the parameters and the id field. Equal line
    fingerprints (same line bytes, same salt) render the same messages, so the same
    `fingerprint`: resume skips such a line without parsing or rendering it (issue 11)."""
    blob = orjson.dumps(
        [LINE_FP_VERSION, prompt.model_dump(mode="json"), params, id_field],
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.blake2b(blob, digest_size=16).digest()
