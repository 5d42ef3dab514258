"""The learned classifier's fast path gives bit-identical outputs (issue 12, classify speed).

`learned.classify` sums its weights as exact integers in any order, memoises token hashes and
packs the router's and the task head's weights into one integer per feature. This file keeps
the plain implementation it replaced (features hashed afresh and sorted, each column summed in
float in feature-id order, the task head's own lookup) and asserts that every output (task
type, complexity, reason, score, every per-level quality and cost factor) is equal, float for
float, on a varied fixture: unicode, code, long text, empty, numbers, surrogates, system
prompts, and any text hypothesis makes up.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from functools import reduce
from itertools import pairwise
from operator import or_
from zlib import crc32

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchroute import classifier, learned, regex_gates, shape, task_head
from batchroute.types import COMPLEXITIES, TASK_TYPES, Classification

# --- the reference: the plain implementation, as it was before the fast path ---------------


_REF_TOKEN = re.compile(r"[^\W\d_]+|\d+|[^\w\s]")  # a token, as the learned features define it


def ref_features(text: str, system: str = "") -> list[int]:
    """Every token hashed afresh, pairs in a Python loop, sorted."""
    head, tail = learned.HEAD, learned.TAIL
    window = text if len(text) <= head + tail else text[:head] + "\n" + text[-tail:]
    toks = _REF_TOKEN.findall(window.lower())
    toks_s = ["s:" + t for t in _REF_TOKEN.findall(system[: learned.SYSTEM_HEAD].lower())]
    enc = {t: crc32(t.encode("utf-8", "surrogatepass")) for t in {*toks, *(toks_s * bool(system))}}
    uni = [enc[t] for t in toks]
    out = set(enc.values())
    out.update((a * learned._MIX ^ b) & learned._MASK for a, b in pairwise(uni))
    out.add(crc32(b"#len%d" % min(int(math.log2(len(text) + 1)), 16)))
    out.add(crc32(b"#lines%d" % (min(text.count("\n"), 20) // 4)))
    return sorted(out)


_OPTION = re.compile(r"(?m)^\s*\(?([A-Ea-e1-5])[).:]\s+(.*)$")
_NEGATION = re.compile(r"\b(not|except|least|never|false|incorrect|cannot|no)\b", re.I)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def ref_structure(text: str) -> list[int]:
    """`shape.structure` as it was (fd60bd7): every block split off, three findall on the last,
    each bucket an f-string encoded and hashed per prompt."""
    blocks = [b for b in text.strip().split("\n\n") if b.strip()]
    last = blocks[-1] if blocks else text
    opts = _OPTION.findall(last)
    out = [
        f"#nblk{min(len(blocks), 6)}",
        f"#lastlen{min(int(math.log2(len(last) + 1)), 14)}",
        f"#nopt{min(len(opts), 6)}",
        f"#nnum{min(len(_NUMBER.findall(last)), 8)}",
        f"#neg{min(len(_NEGATION.findall(last)), 3)}",
        f"#q{min(last.count('?'), 3)}",
        f"#assert{min(text.count('assert'), 5)}",
    ]
    if opts:
        lens = [len(o[1]) for o in opts]
        out.append(f"#optmax{min(int(math.log2(max(lens) + 1)), 8)}")
        out.append(f"#optspread{min(int(math.log2(max(lens) - min(lens) + 1)), 7)}")
    return sorted({crc32(f.encode()) for f in out})


def ref_lead_features(text: str) -> list[int]:
    """`task_head.lead_features` as it was (fd60bd7): hashed afresh per prompt."""
    words = task_head._LEAD_WORD.findall(text[:80].lower(), 0)[:2]
    if not words:
        return []
    out = [crc32(("#v1:" + words[0]).encode("utf-8", "surrogatepass"))]
    if len(words) > 1:
        out.append(crc32(("#v2:" + " ".join(words)).encode("utf-8", "surrogatepass")))
    return out


def ref_classify(text: str, system: str = "") -> Classification:
    """Float sums column by column in feature-id order; the task head's own lookup."""
    m = learned.load_model()
    ids = ref_features(text, system)
    sums = [0.0] * len(m.intercepts)
    for i in sorted({*ids, *ref_structure(text)}):  # the routing heads read the shape too
        row = m.rows.get(i)
        if row is not None:
            sums = [s + w for s, w in zip(sums, row, strict=True)]
    logits = [b + x for b, x in zip(m.intercepts, sums, strict=True)]
    k = m.n_levels
    quality = tuple(logits[-2 * k : -k])
    factor = tuple(math.exp(min(max(z, -3.0), 3.0)) for z in logits[-k:])
    z = m.score_scale * (quality[-1] - max(quality[:2]))
    score = 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
    assert not m.classes  # the shipped router file has no task columns: the head decides
    head = task_head.load()
    extra = task_head.heuristic_features(text, system=system) if head.stacked else []
    extra += ref_lead_features(text) if head.lead else []
    total = 0
    for i in [*ids, *extra]:
        total += head.packed.get(i, 0)
    lg = [
        b + s
        for b, s in zip(head.intercepts, task_head.unpack(total, len(head.classes)), strict=True)
    ]
    task = head.classes[lg.index(max(lg))]
    task = task if task in TASK_TYPES else "chat"
    cuts = m.complexity_cuts
    level = COMPLEXITIES[min(sum(len(text) >= c for c in cuts), len(COMPLEXITIES) - 1)]
    return Classification(task, level, f"learned:{task};score={score:.3f}", score, quality, factor)


# --- the fixture ------------------------------------------------------------------------------

CODE = '```python\ndef f(x):\n    return x + 1  # añadir\n```\nWhy does this fail? TypeError: 1+"a"'
FIXTURE = [
    "",
    " ",
    "\n\n\n",
    "hi",
    "42",
    "3.14159 * 2 = 6.28318; 10^9 + 7 is prime? 1,000,000 rows",
    "Write a Python function that reverses a linked list.",
    "Translate into German:\n\nThe meeting moved to Friday.",
    "¿Dónde está la estación de tren? 東京はどこですか。 Привет, как дела? مرحبا",
    "Ünïcödé ÇAPS and ligatures ﬁ ﬂ, Kelvin K, dotted İstanbul, ß → SS",
    "emoji 😀🚀 and zero-width\u200bjoiner \u00a0nbsp\ttab",
    "\ud800 lone surrogate and \x00 NUL \udfff",
    CODE,
    '#include <stdio.h>\nint main() { printf("%d", 1); return 0; }',
    "SELECT name, COUNT(*) FROM users GROUP BY name HAVING COUNT(*) > 1;",
    "Summarize this memo in three bullet points: the office closes early on Friday.",
    "Prove that the square of an odd integer is odd.",
    "Which of these is a mammal? A) shark B) dolphin C) trout D) octopus",
    "Classify the sentiment: The battery died after two days.",
    "Pretend you are a pirate and tell me a joke.",
    "lorem ipsum dolor sit amet " * 400,  # long: the head and tail window
    ("word " * 300) + "\n" * 30 + "Summarize the text above.",
    "x" * 50_000,
    "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\nl\nm\nn\no\np\nq\nr\ns\nt\nu\nv",
]
SYSTEMS = ["", "You are a translator.", "You are a helpful assistant.", "Résumé: 要約して \ud800"]


def _astuple(c: Classification) -> tuple[object, ...]:
    # repr keeps -0.0 apart from 0.0 and shows every bit of a float
    return tuple(repr(v) for v in dataclasses.astuple(c))


@pytest.fixture(autouse=True)
def _built() -> None:
    """The fast path without its warm-up (`learned._WARM_UP` predictions on the plain path)."""
    learned._exact_tables(learned.load_model())


def test_the_shipped_model_takes_the_exact_fast_path() -> None:
    # otherwise the equality below would only compare the reference path with itself
    m = learned.load_model()
    assert learned._exact_tables(m) is not None


@pytest.mark.parametrize("system", SYSTEMS)
@pytest.mark.parametrize("text", FIXTURE)
def test_fast_path_equals_the_reference_bit_for_bit(text: str, system: str) -> None:
    assert learned.features(text, system=system) == ref_features(text, system)
    assert _astuple(learned.classify(text, system=system)) == _astuple(ref_classify(text, system))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=2500), st.text(max_size=120))
def test_fast_path_equals_the_reference_on_any_text(text: str, system: str) -> None:
    assert _astuple(learned.classify(text, system=system)) == _astuple(ref_classify(text, system))


def test_the_token_memo_starts_afresh_when_full_and_outputs_do_not_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(learned, "_MEMO_MAX", 5)
    for text in FIXTURE[:12]:
        assert _astuple(learned.classify(text)) == _astuple(ref_classify(text))
    assert len(learned._TOKEN_IDS) < 200


def test_a_column_whose_sums_could_round_is_refused() -> None:
    # float32 weights whose magnitudes sum beyond 2^53 of their finest bit: partial sums round;
    # below 2^79 of it, a prompt's own sums are checked; beyond, the reference path's order
    assert learned._column_ints((1.0, 2.0**-60, 0.0)) == (-60, [1 << 60, 1, 0], 53)
    assert learned._column_ints((1.0, 2.0**-90, 0.0)) is None
    assert learned._column_ints((0.1, 0.2)) is None  # not float32: 53 significant bits
    assert learned._column_ints((float("inf"), 1.0)) is None
    assert learned._column_ints((float("nan"), 1.0)) is None
    q, ints, limit = learned._column_ints((0.5, -0.25, 0.0, 3.0))  # type: ignore[misc]
    assert [math.ldexp(i, q) for i in ints] == [0.5, -0.25, 0.0, 3.0]
    assert limit is None  # any subset sums exactly


@pytest.mark.parametrize("finer", [4, 12])  # 4: prompts pass the check; 12: they fall back
def test_a_column_exact_only_for_small_subsets_is_checked_per_prompt(
    finer: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # one weight with a bit 4 below the column's finest: all 24,000 magnitudes together could
    # round, a prompt's ~100 cannot; the tables then carry the magnitudes and check each prompt
    m = learned.load_model()
    col0 = learned._column_ints(next(zip(*m.rows.values(), strict=True)))
    assert col0 is not None
    assert col0[2] is None  # the shipped column: exact for any subset
    fid = next(i for i in ref_features("hi") if i in m.rows)
    every = reduce(or_, col0[1])
    finest = col0[0] + (every & -every).bit_length() - 1  # the column's finest bit
    row = list(m.rows[fid])
    row[0] = math.ldexp(1.0, finest - finer)  # a float32 (one bit), finer
    rows = {**m.rows, fid: tuple(row)}
    odd = dataclasses.replace(m, rows=rows, weights=list(rows.values()))
    built = learned._build_exact(odd)
    assert built is not None
    assert built.guard != 0
    calls: list[str] = []  # the reference path's features(): a prompt that failed the check
    original = learned.features
    monkeypatch.setattr(learned, "features", lambda t, system="": calls.append(t) or original(t))
    for text in [*FIXTURE, "hi", "42", "ok"]:
        ref = learned._predict_ids(sorted({*ref_features(text), *learned.structure(text)}), odd)
        fast = learned._predict_exact(text, "", odd, built)
        assert (fast.score, fast.quality, fast.factor) == (ref.score, ref.quality, ref.factor)
    assert (len(calls) == 0) == (finer == 4)


def test_a_model_that_fails_the_check_takes_the_reference_path_with_the_same_outputs() -> None:
    m = learned.load_model()
    k = len(m.intercepts)
    # one feature (the length bucket every short prompt has) gets a float64 weight: not exact
    fid = crc32(b"#len1")
    rows = dict(m.rows)
    rows[fid] = (0.1,) * k
    weights = [*m.weights, rows[fid]]
    odd = dataclasses.replace(m, rows=rows, weights=weights)
    assert learned._exact_tables(odd) is None
    a = learned.predict("hi", model=odd)
    present = [
        rows[i] for i in sorted({*ref_features("hi"), *learned.structure("hi")}) if i in rows
    ]
    sums = [sum(c) for c in zip(*present, strict=True)]
    assert list(a.quality) == [b + x for b, x in zip(m.intercepts, sums, strict=True)][-8:-4]
    assert learned._exact_tables(m) is not None  # and back: the shipped model's tables again


# --- the heuristic rules: gated alternatives against their whole regexes ----------------------

GATED = [  # (predicate, the whole regex it replaces, searched on the lower-cased window?)
    (classifier._CODE_GEN_ANY, classifier._CODE_GEN, True),
    (classifier._TRANSLATE_ANY, classifier._TRANSLATE, True),
    (classifier._CREATIVE_ANY, classifier._CREATIVE, True),
    (classifier._ROLEPLAY_ANY, classifier._ROLEPLAY, True),
    (classifier._CHOICES_ANY, classifier._CHOICES, True),
    (classifier._CODE_ANY, classifier._CODE, False),
    (classifier._ANALYSIS_ANY, classifier._ANALYSIS, True),
    (classifier._CHAT_ANY, classifier._CHAT, True),
    (classifier._TO_LANG_ANY, classifier._TO_LANG, True),
    (classifier._SUMMARY_ANY, classifier._SUMMARY, True),
    (classifier._REVIEW_ANY, classifier._REVIEW, True),
]
# words and marks the gated regexes look for, so that generated texts often match them
_MORE_WORDS = (
    "in into to from using with translate translation version how do you i say write render "
    "put express function script program class app code data web page unit tests given an "
    "array return implement time complexity fiction fictional advert advertisement please "
    "pretend act as acting role play the persona embody imagine yourself are now a my "
    "speak like stay character on a) b) a. b. (a) (b) def public static console.log( "
    "System.out. import => { } ( ) ; = += : . , ! ? ``` #include < > </div> x c++ c# node.js "
    "SELECT if for return 1 2 42 é 東京 _ - ' analyze analysis compare evaluate evaluation "
    "trade-off tradeoffs pros and cons explain differences between why does hi hello good "
    "morning thanks thank should what any tips advice recommend recommendation i'm im feel "
    "feeling so let's lets chat tell joke are think deal cope"
)
_SUMMARY_REVIEW_FOREIGN = (
    "summarize summarise summarization summarizing summary tl;dr tl;d tldr tl sum up it this that "
    "key points takeaways main synopsis condense recap gist one two three few sentence sentences "
    "bullet bullets summar review reviewer debug fix fixes bug bugs buggy wrong error errors "
    "exception crash crashes crashed fails fail failing not work works print printing compile "
    "compiling return doesn't doesnt t run refactor code smell smells improve my the does "
    "explain following snippet function script expected output unexpected el la los las una está "
    "esta para pero der die das und nicht ist les des une est avec pour il della sono não você "
    "uma que de et le di che e english french german spanish japanese into 東京はどこ Привет"
)
_LEXICON = sorted(
    {*classifier._LANGS, *classifier._CODE_LANGS, *regex_gates.CODE_VERBS}
    | {*regex_gates.CREATIVE_VERBS, *regex_gates.CREATIVE_EDITS, *regex_gates._CREATIVE_NOUNS}
    | set(_MORE_WORDS.split())
    | set(_SUMMARY_REVIEW_FOREIGN.split())
    | {"in english", "into french", "to  german", "in\njapanese", "intojapanese", "into english"}
    | {"sum it up", "key points", "main points", "in two sentences summar", "not working"}
    | {"doesn't compile", "code smells", "what does this code", "expected output"}
)
_SEPS = [" ", "  ", "\n", "\t", "", ", ", ". ", ".\n", "; ", "\n  "]


@st.composite
def lexicon_text(draw: st.DrawFn) -> str:
    n = draw(st.integers(0, 40))
    words = draw(st.lists(st.sampled_from(_LEXICON), min_size=n, max_size=n))
    seps = draw(st.lists(st.sampled_from(_SEPS), min_size=n, max_size=n))
    return "".join(w + s for w, s in zip(words, seps, strict=True))


def _gated_agree(text: str) -> None:
    for pred, rx, lower in GATED:
        w = text.lower() if lower else text
        vocab = set(classifier._WORD.findall(w)) if lower else set()
        assert pred(w, False, vocab) == (rx.search(w) is not None), (rx.pattern[:30], w)


@settings(max_examples=1500, deadline=None)
@given(lexicon_text())
def test_each_gated_rule_fires_exactly_when_its_whole_regex_matches(text: str) -> None:
    _gated_agree(text)


@pytest.mark.parametrize(
    "text",
    [
        *FIXTURE,
        "Write a Python function that returns the n-th prime.",
        "implement quicksort",
        "Implemented2 things; implement_x too",
        "what is the time complexity of heapsort?",
        "Given an array of integers, return the indices of two numbers.",
        "Translate this into French: good morning",
        "How do you say thank you in Japanese?",
        "French version please",
        "please write it in Spanish and German",
        "Write a poem about rust.",
        "Draft a fictional advertisement for a spaceship",
        "Please rewrite this paragraph.",
        "Pretended to act as a pirate; you are a wise old owl. From now on you speak like Yoda",
        "Which one? a) red b) blue",
        "def main():\n    x = 1;\n",
        "public static void main(String[] args) { System.out.println(1); }",
        "import os;\nconsole.log('x') => {}",
    ],
)
def test_each_gated_rule_agrees_on_the_fixture(text: str) -> None:
    _gated_agree(text)


def test_top_level_alternatives() -> None:
    assert regex_gates.top_level(r"a|b(c|d)[|]") == ["a", "b(c|d)[|]"]
    assert regex_gates.top_level(r"\b(?:a|b)") == [r"\ba", r"\bb"]
    assert regex_gates.top_level(r"\b(?:a|b)c|(d)") == [r"\b(?:a|b)c", "(d)"]
    assert regex_gates.top_level(r"\b(?:a|b)(?:c|d)") == [r"\b(?:a|b)(?:c|d)"]
    assert regex_gates.top_level(r"[]|]a|b\|c|[^]|]") == ["[]|]a", r"b\|c", "[^]|]"]
    with pytest.raises(ValueError, match="alternatives"):
        regex_gates.any_alternative(classifier._CHOICES, regex_gates.always, regex_gates.always)


def _searched(rx: re.Pattern[str]) -> Callable[[str, bool, set[str]], bool]:
    return lambda w, _code, _vocab: rx.search(w) is not None


PLAIN = {  # the rules whose predicate combines a gated search with something else, as they were
    "rule:code_review": lambda w, code, _v: code and classifier._REVIEW.search(w) is not None,
    "rule:foreign_text": lambda w, _code, _v: (
        classifier._FOREIGN.search(w) is not None and classifier._TO_LANG.search(w) is not None
    ),
}


def ref_rule_verdict(text: str, system: str = "") -> tuple[str, str]:
    """The heuristic's rules as they were: every predicate its whole regex, the code check one
    search of `_CODE`."""
    whole = {id(pred): rx for pred, rx, _ in GATED}
    rules = tuple(
        (task, rule, trig, _searched(whole[id(fires)]) if id(fires) in whole else fires)
        for task, rule, trig, fires in classifier._RULES
    )
    rules = tuple((task, rule, trig, PLAIN.get(rule, fires)) for task, rule, trig, fires in rules)
    head, tail = classifier._HEAD, classifier._TAIL
    window = text if len(text) <= head + tail else text[:head] + "\n" + text[-tail:]
    code = any(h in window for h in classifier._CODE_HINTS)
    code = code and classifier._CODE.search(window) is not None
    low = window.lower()
    vocab = set(classifier._WORD.findall(low))
    task, reason = classifier._first_match(low, vocab, code, rules)
    if system and reason in classifier._BROAD:
        sys_low = system[:head].lower()
        sys_vocab = set(classifier._WORD.findall(sys_low))
        specific = rules[: classifier._N_SPECIFIC]
        task_s, reason_s = classifier._first_match(sys_low, sys_vocab, False, specific)
        if task_s:
            task, reason = task_s, f"system:{reason_s}"
    if not task:
        words = text.count(" ") + text.count("\n") + (1 if text else 0)
        task = "chat" if words <= 40 else "analysis"
        reason = f"default:{task}"
    return task, reason


@settings(max_examples=800, deadline=None)
@given(lexicon_text(), st.sampled_from(SYSTEMS))
def test_the_rules_verdict_equals_the_plain_rules(text: str, system: str) -> None:
    assert classifier.rule_verdict(text, system=system) == ref_rule_verdict(text, system)


@pytest.mark.parametrize("system", SYSTEMS)
@pytest.mark.parametrize("text", FIXTURE)
def test_the_rules_verdict_equals_the_plain_rules_on_the_fixture(text: str, system: str) -> None:
    assert classifier.rule_verdict(text, system=system) == ref_rule_verdict(text, system)


@pytest.mark.parametrize(
    ("alt", "texts"),
    [
        (r"\brole ?play", ["roleplay", "role play", "a role-play", "controle play", "rolepla"]),
        (r"\bact as", ["act as", "react as", "act_as", "act  as", "pact as x"]),
        (r"\bdef \w+\(", ["def f(", "undef f(", "def  f(", "#def f(x"]),
        (r"\bfrom now on,? you", ["from now on, you", "from now on you", "afrom now on you"]),
    ],
)
def test_a_literal_first_alternative_matches_as_the_original(alt: str, texts: list[str]) -> None:
    fast = re.compile(regex_gates._literal_first(alt))
    assert fast.pattern != alt  # rewritten: starts with its literal
    for t in texts:
        assert (fast.search(t) is None) == (re.search(alt, t) is None), t


# --- the prompt's shape: the fast `structure` against the plain one ---------------------------

SHAPES = [
    *FIXTURE,
    "Q?\n\nA) one\nB) two\n\n\n",
    "a\n\n\nb",  # an odd run of newlines: the last block starts with "\n"
    "a\n\n\n\nb\n\n \t \n\n\u3000\n\nc",  # empty and whitespace-only blocks between
    "\n\n  \n\n",  # blocks, all blank: the text itself is the last block
    " \u2028\x85\x1c ",  # unicode whitespace only
    "x\n\n\u2028\n\ny",
    "(A) yes\n(b): no\n 3. maybe\nE)\n\nf) not an option\nC)   \nD) last",
    "A)\nspans the newline\nB) ok",
    "Is it NOT false? It cannot be: NO, never, except at least 1.5 or 2.25.3 of them.",
    "ſo leaſt İncorrect Kelvin \u212a noT ſtill",  # IGNORECASE folds "ſ" to "s", "K" to "k"
    "٣٤.٥ and ५ and ²³ and 1.2.3 and 10.x and .5 and 7.",  # \d is Nd: "²" is not one
    "only ٣٤.٥ and ५ here, no ASCII digit",  # an ASCII digit check alone would miss them
    "nothing knot no_ no1 _no 1no no- not-no never'",
    "assert x\nassert y\n\nassert z\nassertassert",
    "A) " + "y" * 300 + "\nB) n",
]
_SHAPE_BITS = (
    "\n",
    "\n\n",
    "\n\n\n",
    " ",
    "\t",
    "\u3000",
    "\u2028",
    "\x85",
    "\x1c",
    "A) ",
    "b. ",
    "(c) ",
    "3: ",
    "E)",
    "?",
    "1",
    "2.5",
    "٣",
    "५",
    "²",
    "½",
    ".",
    "not",
    "NOT",
    "no",
    "nope",
    "Never",
    "except",
    "leaſt",
    "İ",
    "\u212a",
    "false",
    "incorrect",
    "cannot",
    "assert",
    "_",
    "é",
    "x",
)


@pytest.mark.parametrize("text", SHAPES)
def test_fast_structure_equals_the_plain_one(text: str) -> None:
    assert learned.structure(text) == ref_structure(text)


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(_SHAPE_BITS) | st.text(max_size=8), max_size=40))
def test_fast_structure_equals_the_plain_one_on_any_text(parts: list[str]) -> None:
    text = "".join(parts)
    assert learned.structure(text) == ref_structure(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_fast_structure_equals_the_plain_one_on_arbitrary_text(text: str) -> None:
    assert learned.structure(text) == ref_structure(text)


# --- the heuristic's words, handed over by the learned classifier ------------------------------


def test_the_learned_window_is_the_heuristics() -> None:
    # the learned classifier hands its window's words to the rules: the same window
    assert (learned.HEAD, learned.TAIL) == (classifier._HEAD, classifier._TAIL)


def _words_both_ways(text: str) -> None:
    _, toks, ascii_window = learned._feature_parts(text, "")
    head, tail = classifier._HEAD, classifier._TAIL
    window = text if len(text) <= head + tail else text[:head] + "\n" + text[-tail:]
    assert ascii_window == window.isascii()
    if ascii_window:
        assert learned._ascii_words(toks) == set(classifier._WORD.findall(window.lower()))


@pytest.mark.parametrize("text", [*FIXTURE, *SHAPES, "x_y __init__ a1b2 CamelCase it's e-mail"])
def test_the_words_from_the_tokens_are_the_heuristics(text: str) -> None:
    _words_both_ways(text)


@settings(max_examples=500, deadline=None)
@given(lexicon_text() | st.text(alphabet=st.characters(max_codepoint=127), max_size=300))
def test_the_words_from_the_tokens_are_the_heuristics_on_any_ascii_text(text: str) -> None:
    _words_both_ways(text)


@settings(max_examples=400, deadline=None)
@given(lexicon_text(), st.sampled_from(SYSTEMS))
def test_fast_path_equals_the_reference_on_rule_words(text: str, system: str) -> None:
    # texts that fire the heuristic's rules: the words handed over decide the same verdicts
    assert _astuple(learned.classify(text, system=system)) == _astuple(ref_classify(text, system))


_ASCII = "".join(map(chr, range(128)))  # every ASCII character: controls, \x1c-\x1f (spaces)


@pytest.mark.parametrize("text", [_ASCII, _ASCII[::-1], _ASCII * 3, "A1b2_C3 d\x1ce\x7ff", "Éa"])
def test_the_ascii_tokens_are_the_plain_ones(text: str) -> None:
    if text.isascii():  # else the plain pattern tokenises
        assert learned._TOKEN_ASCII.findall(text.lower()) == _REF_TOKEN.findall(text.lower())
    assert learned._TOKEN.findall(text.lower()) == _REF_TOKEN.findall(text.lower())
    assert learned.features(text, system=text) == ref_features(text, text)


_KINDS = "aZé_ 1²٣\n\t-.,'’ſ\u00a0\u2003ǅ\u0301東ⅷ"  # letters, digits of other scripts, marks


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=300) | st.text(alphabet=_KINDS, max_size=60))
def test_the_token_regexes_find_the_plain_tokens_on_any_text(text: str) -> None:
    low = text.lower()
    assert learned._TOKEN.findall(low) == _REF_TOKEN.findall(low)
    assert learned._TOKEN.findall(text) == _REF_TOKEN.findall(text)
    if low.isascii():
        assert learned._TOKEN_ASCII.findall(low) == _REF_TOKEN.findall(low)


@settings(max_examples=500, deadline=None)
@given(
    st.text(alphabet=st.characters(max_codepoint=127), max_size=2000) | lexicon_text(),
    st.text(alphabet=st.characters(max_codepoint=127), max_size=500) | st.sampled_from(SYSTEMS),
)
def test_fast_features_equal_the_plain_ones_on_ascii_text(text: str, system: str) -> None:
    assert learned.features(text, system=system) == ref_features(text, system)
    assert _astuple(learned.classify(text, system=system)) == _astuple(ref_classify(text, system))


@settings(max_examples=500, deadline=None)
@given(st.lists(st.integers(-(1 << 31), (1 << 31) - 1), min_size=10, max_size=10))
def test_the_heads_byte_decoder_equals_logits_of(sums: list[int]) -> None:
    head = task_head.load()
    assert len(head.classes) == len(sums)
    decode = task_head.ByteLogits.of(head, learned._MAX_IDS)
    assert decode is not None
    total = sum(s << (task_head.FIELD * j) for j, s in enumerate(sums))
    assert decode(total) == head.logits_of(total)


def test_a_head_whose_sums_could_leave_their_fields_is_decoded_by_logits_of() -> None:
    head = dataclasses.replace(task_head.load(), char=1 << 16)  # 2^17 n-grams of 2^15 each
    assert task_head.ByteLogits.of(head, learned._MAX_IDS) is None
    assert task_head.ByteLogits.of(task_head.load(), 1 << 16) is None  # 2^16 · 2^15 = 2^31
    assert task_head.ByteLogits.of(task_head.load(), (1 << 16) - 1) is not None


@pytest.mark.parametrize("text", [*FIXTURE, *SHAPES, "Write", "  write  a poem", "é è", "1 2 3"])
def test_the_lead_words_ids_are_the_plain_ones(text: str) -> None:
    assert task_head.lead_features(text) == ref_lead_features(text)
    assert task_head.lead_features(text) == ref_lead_features(text)  # and from the memo


def test_the_lead_words_memo_starts_afresh_when_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(task_head, "_LEAD_MAX", 3)
    monkeypatch.setattr(task_head, "_LEAD_IDS", {})
    for text in FIXTURE:
        assert task_head.lead_features(text) == ref_lead_features(text)
    assert len(task_head._LEAD_IDS) <= 4


_NEG_PIECES = "not no never nothing cannot can except least false n e incorrect now _no no_ no1 1no"
_NEG_TEXT = st.lists(
    st.sampled_from([*_NEG_PIECES.split(), "NOT", "Never", "ſnot", " ", "\n", ".", "-"]),
    max_size=40,
).map("".join)


@settings(max_examples=1000, deadline=None)
@given(_NEG_TEXT | st.text(alphabet=st.characters(max_codepoint=127), max_size=200))
def test_the_negation_count_is_the_plain_one(text: str) -> None:
    assert shape._negations(text) == len(_NEGATION.findall(text))
