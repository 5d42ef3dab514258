"""Prompt stage: render a record into chat messages, and fingerprint the rendered request.

Pure and synchronous. A template field the record lacks raises `InputError`, which the runner
turns into an `invalid` row.
"""

from __future__ import annotations

import hashlib
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


def render_messages(prompt: PromptSpec, fields: Mapping[str, Any]) -> list[dict[str, str]]:
    """The chat messages for one record."""
    values = _Fields(fields)
    messages = []
    if prompt.system:
        messages.append({"role": "system", "content": prompt.system.format_map(values)})
    messages.append({"role": "user", "content": prompt.user.format_map(values)})
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
