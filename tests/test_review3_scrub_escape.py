"""A key echoed inside a JSON string with one of its characters escaped (review3).

A gateway's key may hold `/` or `+` (a base64 token). JSON lets any character be written as
`\\uXXXX`, and common encoders do it unasked: PHP's `json_encode` and several Java libraries
write `/` as `\\/`, .NET's System.Text.Json writes `+` as `\\u002B`. `errors.scrub` matched the
key on the body's raw bytes, so a key echoed that way (a proxy's 401 "Received API Key = …")
was not the key there, but is the key once the body is parsed, and the parsed strings are what
reach the database, the journal and stderr. Before the fix: with the escape after the key's
first 12 characters, those were redacted and the rest of the key (17 of its 29 characters)
kept; with the escape inside them, nothing matched and the whole key was kept.

Real `scrub` and a real JSON parser over the body as an upstream would send it.
"""

from __future__ import annotations

import orjson
import pytest

from batchroute.errors import REDACTED, keep_secret, scrub

# (key, the key as an upstream's JSON encoder wrote it inside a string)
CASES = {
    "slash after the head (PHP)": (
        "gw-AbCdEfGhI/KlMnOpQrStUv0123",
        "gw-AbCdEfGhI\\/KlMnOpQrStUv0123",
    ),
    "slash in the head (PHP)": ("ab/CdEfGhIjKlMnOpQrStUv4567", "ab\\/CdEfGhIjKlMnOpQrStUv4567"),
    "plus in the head (.NET)": ("Zy+XwVuTsRqPoNmLkJiH8901", "Zy\\u002BXwVuTsRqPoNmLkJiH8901"),
    "slash as \\u002f in the head": ("Qq/WwEeRrTtYyUuIiOoPp23", "Qq\\u002fWwEeRrTtYyUuIiOoPp23"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_escaped_key_is_cleaned_from_the_parsed_strings(case: str) -> None:
    key, written = CASES[case]
    keep_secret(key)
    body = (
        b'{"error":{"code":401,"message":"Received API Key = '
        + written.encode()
        + b'","metadata":{"raw":"'
        + written.encode()
        + b' (proxy)"}}}'
    )
    doc = orjson.loads(scrub(body))  # what the client parses and stores
    err = doc["error"]
    for text in (err["message"], err["metadata"]["raw"]):
        assert REDACTED in text, text
        for i in range(len(key) - 8):  # no 8-character run of the key is left
            assert key[i : i + 8] not in text, text
    assert err["code"] == 401


def test_a_body_without_the_key_is_left_as_sent() -> None:
    """The cheap path stays: escapes alone (a `\\/` in a URL, a `\\u00e9`) rewrite nothing."""
    keep_secret("gw-AbCdEfGhI/KlMnOpQrStUv0123")
    body = b'{"choices":[{"message":{"content":"see https:\\/\\/x.org \\u00e9 ab\\/Cd"}}]}'
    assert scrub(body) is body
