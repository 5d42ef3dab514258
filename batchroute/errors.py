"""The single exception tree of batchroute. Leaf module: imports nothing from batchroute.

The runner decides what to do from an exception's *type* and attributes, never from its
message; only the CLI turns exceptions into exit codes and user-facing text::

    BatchrouteError
    ├── SpecError                 bad job file or values; names file and key path   (exit 2)
    ├── ConfigError               bad arguments, missing API key                     (exit 2)
    ├── InputError                a bad JSONL line; carries path + line number (becomes 'invalid')
    ├── UpstreamError             a call failed; carries model, status, error_type
    │   ├── RetryableError        408/429/5xx/timeout/connection reset; may carry retry_after
    │   │   └── RateLimited       429 (upstream or platform per-minute)
    │   ├── RejectedError         don't retry this model: try the next one in the chain
    │   │   ├── DailyCapReached   429 free-models-per-day: not retried until `reset_at`
    │   │   └── QualityFailed     a 200 whose answer failed a check (empty, length, bad JSON)
    │   └── FatalUpstreamError    stop the whole run
    │       ├── AuthError         401                                                (exit 2)
    │       ├── CreditsExhausted  402 out of credits or key limit                    (exit 3)
    │       ├── RequestRejected   every call rejected the same way: the job is wrong (exit 2)
    │       └── ProviderUnavailable  most recent calls failed for availability      (exit 6)
    ├── LockHeld                  another run holds this database                    (exit 5)
    └── StoreError                DuckDB failure or a file that is not a batchroute store

Reaching the daily cap is not an exception: the runner stops dispatching, leaves the rest
`pending` and reports status `budget_exhausted` (exit 3); a record whose fallback chain is
exhausted becomes a `failed` row.
"""

from __future__ import annotations

import re
from decimal import Decimal

import orjson


class BatchrouteError(Exception):
    """Base class of every error batchroute raises on purpose."""


class SpecError(BatchrouteError):
    """The job file is missing, is not YAML, or fails validation."""

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None) -> None:
        self.path = path
        self.key = key
        where = ": ".join(p for p in (path, key) if p)
        super().__init__(f"{where}: {message}" if where else message)


class ConfigError(BatchrouteError):
    """Bad command-line arguments or environment (for example a missing API key)."""


class InputError(BatchrouteError):
    """One input line cannot become a request; the record becomes an `invalid` row."""

    def __init__(self, reason: str, *, path: str = "", line_no: int = 0) -> None:
        self.reason = reason
        self.path = path
        self.line_no = line_no
        super().__init__(f"{path}:{line_no}: {reason}" if path else reason)


REDACTED = "[redacted key]"
_SECRETS: set[str] = set()
_SECRET_HEAD = 12  # a cut text may keep the start of a key: this much of it is a match
_HEADS: set[bytes] = set()  # the secrets' heads, encoded: what `scrub` looks for in a body
_ESCAPED_HEADS: dict[str, re.Pattern[bytes]] = {}  # a head as a JSON encoder may escape it
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
"""Characters no JSON encoder escapes unasked. Others are written `\\uXXXX` by some (.NET's
escapes `+`, Go's `<>&`), and `/` as `\\/` (PHP's `json_encode`, some Java libraries)."""


def _escaped_head(head: str) -> re.Pattern[bytes] | None:
    """A pattern of `head` as it may stand in a JSON string with any of its characters that
    an encoder may escape so written; None when it holds none (an OpenRouter key: `sk-or-v1-`
    and hex), and the plain substring test is all `scrub` needs."""
    if all(c in _PLAIN for c in head):
        return None
    parts = []
    for c in head:
        if c in _PLAIN:
            parts.append(re.escape(c.encode()))
            continue
        forms = [re.escape(c.encode()), rb"\\u(?i:%04x)" % ord(c)]
        if c in '/"\\':  # JSON's short escapes: backslash-slash, -quote, -backslash
            forms.append(re.escape(b"\\" + c.encode()))
        parts.append(b"(?:" + b"|".join(forms) + b")")
    return re.compile(b"".join(parts))


def keep_secret(secret: str) -> None:
    """Register a credential (the API key): no UpstreamError message will carry it, and no
    answer `scrub` cleans. A server may echo it (a proxy's 401 "Received API Key = …", an
    upstream body quoting the request), and upstream text goes to the database, the journal,
    the logs and stderr."""
    if secret:
        _SECRETS.add(secret)
    # Bodies: only a key long enough to be told from text. A local gateway's token may be
    # "EMPTY" (vLLM's convention): scrubbing it would rewrite every answer that says "EMPTY".
    if len(secret) >= _SECRET_HEAD:
        _HEADS.add(secret[:_SECRET_HEAD].encode())
        escaped = _escaped_head(secret[:_SECRET_HEAD])
        if escaped is not None:
            _ESCAPED_HEADS[secret] = escaped


def without_secrets(text: str, *, short: bool = True) -> str:
    """`text` with every registered secret, and every start of one that a cut left (at least
    `_SECRET_HEAD` characters of it), replaced by `REDACTED`. `short=False` (an answer's text,
    as `scrub` cleans bodies) leaves keys under `_SECRET_HEAD` characters: a gateway's "EMPTY"
    is also a word a model says."""
    for secret in _SECRETS:
        if not short and len(secret) < _SECRET_HEAD:
            continue
        head = secret[:_SECRET_HEAD]
        i = text.find(head)
        while i >= 0:
            n = len(head)
            while n < len(secret) and i + n < len(text) and text[i + n] == secret[n]:
                n += 1
            text = text[:i] + REDACTED + text[i + n :]
            i = text.find(head, i + len(REDACTED))
    return text


_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # unrolled: linear
_JSON_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")


def _scrub_json(text: str) -> str:
    """A JSON document's text cleaned token by token: every string literal as
    `without_secrets` cleans text (the redaction needs no escaping); a number only when it
    is a whole secret (then the string `REDACTED`). A number that merely holds a digits-only
    key's digits is a figure (a cost, a token count), not an echoed credential: rewriting its
    digits made the body unparseable, and a paid answer was taken for a malformed one."""

    def numbers(gap: str) -> str:
        def one(m: re.Match[str]) -> str:
            n = m.group(0)
            return f'"{REDACTED}"' if n.lstrip("-") in _SECRETS else n

        return _JSON_NUMBER.sub(one, gap)

    out: list[str] = []
    at = 0
    for m in _JSON_STRING.finditer(text):
        out += (numbers(text[at : m.start()]), _clean_string(m.group(0)))
        at = m.end()
    out.append(numbers(text[at:]))
    return "".join(out)


def _clean_string(literal: str) -> str:
    """A JSON string literal cleaned of the key as its parsed value holds it: with an escape
    in it, the key may be there only once unescaped (`\\/` for `/`), and a match on the raw
    text redacted its start and kept the rest (or, escaped in its head, all of it)."""
    if "\\" not in literal:
        return without_secrets(literal, short=False)
    try:
        value = orjson.loads(literal)
    except orjson.JSONDecodeError:  # a lone surrogate: cleaned as text
        return without_secrets(literal, short=False)
    clean = without_secrets(value, short=False)
    return literal if clean == value else orjson.dumps(clean).decode()


def scrub(body: bytes) -> bytes:
    """An answer's bytes as the client read them, cleaned as `without_secrets` cleans text
    (bytes that are not UTF-8 kept as they were). The client applies it to every body before
    anything is read from it: then no text taken from an answer (an error message, a batch
    item's error, `error_type`, `provider`, the content) can carry a key, whichever table,
    journal line or log line it ends in. Costs one substring search per body when no key is
    in it (the usual case). A key under `_SECRET_HEAD` characters is left in bodies (it is
    no credential one could tell from text) and cleaned from error messages only. A JSON
    body is cleaned in its strings only (and a number that is a whole key): a digits-only key
    (a local gateway's token) must not rewrite the digits of its numbers (`_scrub_json`)."""
    for head in _HEADS:  # a loop, not `any(genexpr)`: no generator a body (issue 11)
        if head in body:
            break
    else:  # an OpenRouter key has no escapable character: one dict truth test more a body
        if not (_ESCAPED_HEADS and any(p.search(body) for p in _ESCAPED_HEADS.values())):
            return body
    text = body.decode("utf-8", "surrogateescape")
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return without_secrets(text, short=False).encode("utf-8", "surrogateescape")
    return _scrub_json(text).encode("utf-8", "surrogateescape")


class UpstreamError(BatchrouteError):
    """A call to the model API failed.

    Attributes:
        model: the model id the call asked for.
        status: HTTP status (0 for timeouts and connection errors; 200 for errors in a body).
        error_type: a short machine-readable kind, e.g. ``rate_limited``, ``timeout``,
            ``context_length_exceeded``, ``empty_content``; stored in ``attempts.error_type``.
        cost: what the provider billed for the failed call (usually 0), if it said.
        generation_id: the ``gen-…`` id, if the response carried one.
        in_body: the error came inside an HTTP 200 (a body or a stream chunk), after the
            generation had started: it may have been billed although it says no cost.
    """

    def __init__(
        self,
        message: str,
        *,
        model: str = "",
        status: int = 0,
        error_type: str = "error",
        retry_after: float | None = None,
        cost: Decimal | None = None,
        generation_id: str | None = None,
        in_body: bool = False,
    ) -> None:
        self.in_body = in_body  # reported inside an HTTP 200: a generation may have run
        self.model = model
        self.status = status
        self.error_type = error_type
        self.retry_after = retry_after
        self.cost = cost
        self.generation_id = generation_id
        super().__init__(without_secrets(message) if _SECRETS else message)


class RetryableError(UpstreamError):
    """Transient: retry the same model after a backoff (honouring ``retry_after`` seconds)."""


class RateLimited(RetryableError):
    """HTTP 429 that will clear soon (upstream or per-minute limits)."""


class RejectedError(UpstreamError):
    """This model will not serve this request: move on to the next model in the chain."""


class DailyCapReached(RejectedError):
    """429 ``free-models-per-day``: the model is unusable until ``reset_at`` (epoch seconds)."""

    def __init__(self, message: str, *, reset_at: float | None = None, **kw: object) -> None:
        self.reset_at = reset_at
        super().__init__(message, **kw)  # type: ignore[arg-type]


class NoBatchEndpoint(RejectedError):
    """400 "does not have a :batch endpoint": the Batch API will not take this model (for this
    account); its tier's records go through synchronous calls instead."""


class QualityFailed(RejectedError):
    """The call succeeded and was paid, but the answer failed a quality check."""


class FatalUpstreamError(UpstreamError):
    """Nothing more can be sent in this run (bad key, no credits)."""


class AuthError(FatalUpstreamError):
    """401: the API key is missing, invalid, disabled or expired."""


class CreditsExhausted(FatalUpstreamError):
    """402: the account or key has no credits left for this request."""


class RequestRejected(FatalUpstreamError):
    """Every call of the run is rejected the same way (e.g. a bad `provider` key): the request
    is wrong, not the records; sending more only pays for more rejections."""


class ProviderUnavailable(FatalUpstreamError):
    """Most recent calls failed for availability (unreachable, 5xx, 429): stop, keep the rest
    pending, and let tomorrow's run carry on."""


class LockHeld(BatchrouteError):
    """Another batchroute run holds the lock on this database."""

    def __init__(self, message: str, *, pid: int | None = None) -> None:
        self.pid = pid
        super().__init__(message)


class StoreError(BatchrouteError):
    """DuckDB failed, or the file is not a batchroute database."""


class FileHeld(StoreError):
    """Another process (an SQL client, `batchroute report`) held the DuckDB file past the
    busy timeout."""

    def __init__(self, message: str, *, pid: int | None = None) -> None:
        self.pid = pid
        super().__init__(message)
