"""Gated regex alternatives: the heuristic classifier's costliest rules, searched in parts.

A rule's regex `A|B|C` matches somewhere iff one of its top-level alternatives does, so it can be
searched alternative by alternative; and an alternative whose match implies some words (every
`\\bword\\b` a match contains is one of the window's `[a-z]+` words) need not be searched when the
window lacks them. Most prompts then search none of the alternatives: the same verdict, a
fraction of the scanning. Pure; the regexes themselves stay in `classifier`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Final

Gate = Callable[[str, set[str]], bool]  # (lower-cased window, its words) → may it match?
Predicate = Callable[[str, bool, set[str]], bool]  # (window, has code?, its words) → fires?


def _syntax(src: str) -> Iterator[tuple[int, str, int]]:
    """(index, character, group depth before it) of each unescaped character outside a set."""
    depth, i, in_set = 0, 0, False
    while i < len(src):
        ch = src[i]
        if ch == "\\":
            i += 1  # an escaped character is never syntax
        elif in_set:
            in_set = ch != "]"
        elif ch == "[":
            in_set = True
            i += src.startswith("^", i + 1)
            i += src.startswith("]", i + 1)  # a ] first in a set is a literal
        else:
            yield i, ch, depth
            depth += (ch == "(") - (ch == ")")
        i += 1


def top_level(src: str) -> list[str]:
    """The top-level alternatives of a pattern: "a|b(c|d)[|]" → ["a", "b(c|d)[|]"]; a pattern
    that is one group after a `\\b`, "\\b(?:a|b)", is "\\ba|\\bb" (the same matches)."""
    cuts = [i for i, ch, depth in _syntax(src) if ch == "|" and depth == 0]
    if not cuts and src.startswith("\\b(?:"):
        ends = [i for i, ch, depth in _syntax(src) if ch == ")" and depth == 1]
        if ends[0] == len(src) - 1:  # the group closes only at the very end
            return ["\\b" + a for a in top_level(src[5:-1])]
    return [src[i + 1 : j] for i, j in zip([-1, *cuts], [*cuts, len(src)], strict=True)]


def always(_w: str, _vocab: set[str]) -> bool:
    """A gate that always holds (an alternative cheap enough to search anyway)."""
    return True


def text_has(*subs: str) -> Gate:
    """A gate: the window contains one of these substrings (a match must contain it)."""
    if len(subs) == 1:  # most gates: one `in`, no any()/map() per call
        sub = subs[0]
        return lambda w, _v: sub in w
    return lambda w, _v: any(map(w.__contains__, subs))


def any_of(*gates: Gate) -> Gate:
    """A gate: one of these gates holds."""
    return lambda w, vocab: any(g(w, vocab) for g in gates)


def words_of(*sets: frozenset[str]) -> Gate:
    """A gate: the window's words meet every one of these sets."""
    if len(sets) == 1:  # one or two sets (most gates): no generator per call
        (one,) = sets
        return lambda _w, vocab: not vocab.isdisjoint(one)
    if len(sets) == 2:
        first, second = sets
        return lambda _w, vocab: not vocab.isdisjoint(first) and not vocab.isdisjoint(second)
    return lambda _w, vocab: all(not vocab.isdisjoint(s) for s in sets)


def any_alternative(rx: re.Pattern[str], *gates: Gate, by_word: bool = True) -> Predicate:
    """`rx.search(window) is not None`, one top-level alternative at a time, each searched only
    if its gate (a condition every match of that alternative implies) holds. One gate per
    alternative, in order: a regex edited to another number of alternatives fails at import.
    `by_word`: the predicate is given the window's `[a-z]+` words (see `_searcher`)."""
    alts = top_level(rx.pattern)
    if len(alts) != len(gates):
        raise ValueError(f"{rx.pattern[:40]!r}: {len(alts)} alternatives, {len(gates)} gates")
    parts = tuple(zip(gates, [_searcher(a, rx.flags, by_word) for a in alts], strict=True))

    def fires(w: str, _code: bool, vocab: set[str]) -> bool:
        for gate, search in parts:  # noqa: SIM110 (a loop: no generator per call, the hot path)
            if gate(w, vocab) and search(w, vocab):
                return True
        return False

    return fires


_LEADING_WORDS = re.compile(r"\\b([a-z][a-z ]*)(.*)", re.DOTALL)


def _literal_first(alt: str) -> str:
    """`\\bact as…` as `act as(?<=\\bact as)…`: the same matches, found by a scan for the
    literal instead of a try at every position (see `_searcher`)."""
    lead = _LEADING_WORDS.fullmatch(alt)
    if lead is None:
        return alt
    words, rest = lead[1], lead[2]
    if rest[:1] in ("?", "*", "+", "{"):  # the quantifier is the last character's
        words, rest = words[:-1], words[-1] + rest
    return rf"{words}(?<=\b{words}){rest}" if words else alt


def _leading_literal(alt: str) -> str:
    """The literal every match of `\\bword…` contains ("" if it does not start so): the words
    `_literal_first` moves to the front."""
    lead = _LEADING_WORDS.fullmatch(alt)
    if lead is None:
        return ""
    words, rest = lead[1], lead[2]
    return words[:-1] if rest[:1] in ("?", "*", "+", "{") else words


def by_literal(rx: re.Pattern[str]) -> Predicate:
    """`rx.search(window) is not None` for a `\\b(?:a|b…)` regex of literal-led alternatives:
    each searched literal first, and only if the window contains its literal (a C-level
    substring test, where the whole regex tries `\\b` at every position)."""
    alts = top_level(rx.pattern)
    return any_alternative(rx, *(_has_literal(_leading_literal(a)) for a in alts))


def _has_literal(lit: str) -> Gate:
    return text_has(lit) if lit else always


_PLAIN = re.compile(r"[a-z]+(?: [a-z]+)*")


def _word_group(alt: str) -> tuple[list[str], list[str], str] | None:
    """(plain words, other alternatives, the tail) of a `\\b(?:…)\\b…` or `\\b(?:…)\\s…`
    alternative, if it is one and has plain words; else None."""
    if not alt.startswith("\\b(?:"):
        return None
    close = next(i for i, ch, depth in _syntax(alt) if ch == ")" and depth == 1)
    tail = alt[close + 1 :]
    if not tail.startswith(("\\b", "\\s")):
        return None
    inner = top_level(alt[5:close])
    plain = [a for a in inner if _PLAIN.fullmatch(a)]
    return (plain, [a for a in inner if not _PLAIN.fullmatch(a)], tail) if plain else None


def _searcher(alt: str, flags: int, by_word: bool) -> Gate:
    """Search one alternative. In a `\\b(?:write|make|give me|…)\\b…` alternative (then `\\b` or
    `\\s`), the plain words are searched one by one, only those the window has: each as
    `write(?<=\\bwrite)\\b…`, the same matches, but a pattern that starts with a literal is found
    by a fast scan for it, where a `\\b` first is tried at every position. The group's other
    alternatives are searched together, as they were."""
    group = _word_group(alt) if by_word else None
    if group is None:
        whole = re.compile(_literal_first(alt), flags)
        return lambda w, _v: whole.search(w) is not None
    plain, others, tail = group
    by_first: dict[str, list[re.Pattern[str]]] = {}
    for word in plain:  # its first word is a whole [a-z]+ word of the window (\\b, then \\b or \\s)
        pattern = re.compile(rf"{word}(?<=\b{word}){tail}", flags)
        by_first.setdefault(word.split()[0], []).append(pattern)
    firsts = frozenset(by_first)
    rest = re.compile(rf"\b(?:{'|'.join(others)}){tail}", flags) if others else None
    return lambda w, vocab: (
        any(p.search(w) is not None for first in vocab & firsts for p in by_first[first])
        or (rest is not None and rest.search(w) is not None)
    )


def _words(spec: str) -> frozenset[str]:
    return frozenset(spec.split())


def all_of(*gates: Gate) -> Gate:
    """A gate: every one of these gates holds."""
    return lambda w, vocab: all(g(w, vocab) for g in gates)


# The gates of classifier's costliest regexes, one per top-level alternative, in order. A word
# gate lists the `\\b`-bounded words an alternative's match contains (a "c++" or "node.js" is
# the word "c" or "node"); a text gate, a substring it contains ("fiction\\w*": "fiction").
CODE_VERBS: Final = _words("write create implement develop build generate code give show make")
CREATIVE_VERBS: Final = _words(
    "write compose draft craft create come generate brainstorm help need propose suggest give make"
)
CREATIVE_EDITS: Final = _words(
    "rewrite rephrase paraphrase proofread edit polish compose draft craft brainstorm describe"
)
_CREATIVE_NOUNS: Final = _words(
    "poem poems haiku limerick sonnet story stories fable fairy fairytale novel essay blog article "
    "speech toast eulogy lyrics song slogan slogans tagline taglines jingle headline headlines "
    "cover e email letter card bio product screenplay dialogue monologue tweet caption ad rap "
    "verse opening paragraph outline personal review name names thank plot character"
)


def code_gen(rx: re.Pattern[str], code_langs: frozenset[str]) -> Predicate:
    """classifier._CODE_GEN: a request for code."""
    return any_alternative(
        rx,
        words_of(
            CODE_VERBS,
            _words(
                "function functions script program class method module api endpoint query regex "
                "regular algorithm code website web webpage app cli unit snippet component "
                "decorator parser data"
            ),
        ),
        words_of(_words("in using with"), code_langs),
        words_of(code_langs, _words("code program script function")),
        words_of(_words("given"), _words("return")),
        words_of(_words("implement")),
        words_of(_words("time"), _words("complexity")),
    )


def translate(rx: re.Pattern[str], langs: frozenset[str]) -> Predicate:
    """classifier._TRANSLATE: a request to translate into a named language."""
    return any_alternative(
        rx,
        words_of(langs, _words("in into to from")),
        words_of(langs, _words("translation version")),
        words_of(langs, _words("how"), _words("say")),
        words_of(langs, _words("in"), _words("write say render put express")),
    )


def creative(rx: re.Pattern[str]) -> Predicate:
    """classifier._CREATIVE: a request for a poem, story, letter, or a rewrite."""
    nouns = any_of(words_of(_CREATIVE_NOUNS), text_has("fiction", "advert"))
    return any_alternative(rx, all_of(words_of(CREATIVE_VERBS), nouns), words_of(CREATIVE_EDITS))


def roleplay(rx: re.Pattern[str]) -> Predicate:
    """classifier._ROLEPLAY: "pretend", "act as", "you are a …" (one group of alternatives)."""
    subs = "pretend|act as|acting as|role|the role|the persona|embody|yourself as|you are "
    subs += "|speak like|stay in character|from now on"
    return any_alternative(rx, *(text_has(s) for s in subs.split("|")))


def choices(rx: re.Pattern[str]) -> Predicate:
    """classifier._CHOICES: options "a)" … "b)" (or "a." … "b.")."""
    return any_alternative(rx, all_of(text_has("a)", "a."), text_has("b)", "b.")))


def analysis(rx: re.Pattern[str]) -> Predicate:
    """classifier._ANALYSIS: analyse, compare, explain, … (one `\\b(?:…)\\b` alternative)."""
    return any_alternative(rx, always)


def chat(rx: re.Pattern[str]) -> Predicate:
    """classifier._CHAT: a greeting at the start, or advice, feelings, small talk."""
    return any_alternative(rx, always, always)


def code(rx: re.Pattern[str]) -> Predicate:
    """classifier._CODE, on the window as written (not lower-cased): source code in the prompt.
    Alternatives that start with a literal are searched fast anyway; `\\b…` ones are not."""
    return any_alternative(
        rx,
        *(always, always),  # ```, #include
        *map(text_has, ("def ", "function", "public", "console.log(", "System.out.", "import")),
        *(always, always),  # =>, a line starting with a keyword
        all_of(text_has("="), text_has(";")),  # an assignment ending in ;
        always,  # an HTML tag
        by_word=False,  # searched on the window as written, without its words
    )
