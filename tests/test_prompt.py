"""Prompt rendering and request fingerprints."""

from __future__ import annotations

import pytest

from batchroute.errors import InputError
from batchroute.prompt import fingerprint, render_messages, request_params
from batchroute.spec import PromptSpec, RequestSpec


def test_render_system_and_user() -> None:
    p = PromptSpec(system="Be {tone}.", user="Translate into {lang}:\n\n{text}")
    msgs = render_messages(p, {"tone": "brief", "lang": "German", "text": "{not a field}"})
    assert msgs == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Translate into German:\n\n{not a field}"},
    ]


def test_non_string_fields_are_json() -> None:
    msgs = render_messages(PromptSpec(user="{items}"), {"items": [1, "a"]})
    assert msgs[-1]["content"] == '[1,"a"]'


def test_missing_field_is_input_error() -> None:
    with pytest.raises(InputError, match="'lang'"):
        render_messages(PromptSpec(user="{lang}"), {})


def test_fingerprint_changes_with_prompt_or_params() -> None:
    msgs = [{"role": "user", "content": "hi"}]
    a = fingerprint(msgs, request_params(RequestSpec(max_tokens=10)))
    assert a == fingerprint(msgs, request_params(RequestSpec(max_tokens=10)))
    assert a != fingerprint(msgs, request_params(RequestSpec(max_tokens=11)))
    assert a != fingerprint(
        [{"role": "user", "content": "hi!"}], request_params(RequestSpec(max_tokens=10))
    )
