"""Heuristic classifier: rendered prompt → task type + complexity (design §1-2).

Pure and synchronous: regexes are compiled at import, nothing here does I/O or keeps state.
It never raises on odd input (empty, huge, binary-ish text); unmatched prompts fall back by length.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from . import regex_gates as gates
from .types import Classification

_HEAD: Final = 1200  # the instruction is nearly always near the start of a prompt...
_TAIL: Final = 400  # ...or at its very end ("Summarize the text above.")
_I: Final = 0  # patterns are lower-case and run on a lower-cased window: IGNORECASE is ~3x slower

_LANG = (
    r"(?:english|spanish|french|german|italian|portuguese|dutch|polish|russian|ukrainian|"
    r"chinese|mandarin|cantonese|japanese|korean|arabic|hebrew|hindi|turkish|greek|swedish|"
    r"norwegian|danish|finnish|czech|vietnamese|thai|indonesian|persian|farsi|latin|romanian)"
)
_CODE_LANG = (
    r"(?:python|java|javascript|typescript|c\+\+|c#|golang|rust|ruby|php|kotlin|swift|"
    r"matlab|bash|shell|sql|lua|scala|haskell|perl|html|css|react|node(?:\.js)?)"
)

# Something that looks like source code: a fence, or a line/token only programs contain.
_CODE = re.compile(
    r"```|#include\s*<|\bdef \w+\(|\bfunction\s*\w*\s*\(|\bpublic\s+(?:static\s+)?\w+|"
    r"\bconsole\.log\(|\bSystem\.out\.|\bimport\s+[\w.]+;|=>\s*[{(\w]|"
    r"^\s*(?:class|import|from|return|for|while|if|let|const|var|SELECT)\b.*[:;{(]\s*$|"
    r"^\s*[\w.\[\]]+\s*(?:=|\+=)\s*[^=].*;\s*$|</?(?:div|table|tr|td|span|script)\b",
    re.MULTILINE,
)
_REVIEW = re.compile(
    r"\b(?:review|debug|fix|bugs?|buggy|wrong|errors?|exception|crash\w*|fails?|failing|"
    r"not (?:work|print|compil|return)\w*|doesn'?t (?:work|compile|run)|refactor|"
    r"code smells?|improve (?:this|my|the) code|what does this (?:code|function|script)|"
    r"explain (?:this|the following) (?:code|function|snippet)|expected output|unexpected)",
    _I,
)
_TRANSLATE = re.compile(
    rf"\btranslat\w*\b.{{0,300}}?\b(?:in|into|to|from)\s+{_LANG}\b|"
    rf"\b{_LANG}\s+(?:translation|version)\b|\bhow (?:do (?:you|i)|to) say\b.{{0,120}}\b{_LANG}\b|"
    rf"\b(?:write|say|render|put|express)\b.{{0,60}}\bin {_LANG}(?:\s+and\s+{_LANG})?\b",
    _I | re.DOTALL,
)
_FOREIGN = re.compile(
    r"[\u0400-\u04ff\u0600-\u06ff\u3040-\u30ff\u4e00-\u9fff\uac00-\ud7af]{4}|"
    r"\b(?:el|los|las|una|est[aá]|para|pero|der|die|das|und|nicht|ist|les|des|une|est|"
    r"avec|pour|il|della|sono|não|você|uma)\b(?:\W+\w+){0,3}\W+"
    r"(?:el|la|los|las|que|de|der|die|das|und|les|des|et|le|di|il|che|não|de|e)\b",
    _I,
)
_TO_LANG = re.compile(rf"\b(?:in|into|to)\s+{_LANG}\b", _I)
_SUMMARY = re.compile(
    r"\b(?:summari[sz]\w*|tl;?dr|sum (?:it |this |that )?up|key (?:points|takeaways)|"
    r"main points|synopsis|condense|recap|gist|in (?:one|two|three|a few) (?:sentence|bullet)s?"
    r"(?= summar))",
    _I,
)
_CLASSIFY = re.compile(
    r"\b(?:classify|classif\w+|categori[sz]\w*|label (?:each|the|every|it|them)|"
    r"sentiment|tag each|spam or (?:not|ham)|which (?:of the following )?categor\w+|"
    r"assign (?:each|it|them|one)\b.{0,40}\bcategor|positive,? (?:negative|neutral)|"
    r"(?:put|sort|group) (?:each|these|them|the following)\b.{0,40}\binto\b)",
    _I | re.DOTALL,
)
_ROLEPLAY = re.compile(
    r"\b(?:pretend|act as|acting as|role ?play|(?:play|take on|assume|embrace) the role|"
    r"the persona|embody|(?:imagine|picture|consider|think of) yourself as|"
    r"you are (?:now )?(?:a|an|my) (?!\w+ing\b)\w+(?: \w+)?[.,!]|"
    r"speak like|stay in character|from now on,? you)",
    _I,
)
_CODE_GEN = re.compile(
    rf"\b(?:write|create|implement|develop|build|generate|code|give me|show me|make)\b"
    rf".{{0,60}}\b(?:functions?|script|program|class|method|module|api|endpoint|query|"
    rf"regex|regular expression|algorithm|code|website|web ?page|app|cli|unit tests?|"
    rf"snippet|component|decorator|parser|data structure)\b|"
    rf"\b(?:in|using|with)\s+{_CODE_LANG}\b|\b{_CODE_LANG}\s+(?:code|program|script|function)\b|"
    r"\bgiven (?:an?|two) (?:\w+ )?(?:array|string|linked list|binary tree|tree|graph|matrix|"
    r"list|integer)s?\b.{0,400}\breturn\b|\bimplement\b|\btime complexity\b",
    _I | re.DOTALL,
)
_MATH = re.compile(
    r"\b(?:prove|proof|derive|derivation|theorem|lemma|conjecture|calculate|compute|solve|"
    r"integral|integrate|derivative|antiderivative|differential|equations?|limit of|"
    r"probability|remainder|puzzle|riddle|logic\w*|deduce|syllogism|premises?|"
    r"how (?:many|much|old|far|long)\b.{0,200}\?)|"
    r"\b[a-z]\s*\(\s*[a-z0-9]\s*\)\s*=|\b\d+\s*[-+*/^×÷]\s*\d+|\b[a-z]\^\d|"
    r"\b[xyz]\s*[-+*/=]\s*[xyz0-9]\b",
    _I | re.DOTALL,
)
_MULTI_SENT = re.compile(r"[.!?]\s+\S.*[.?!]", re.DOTALL)
_CREATIVE = re.compile(
    r"\b(?:write|compose|draft|craft|create|come up with|generate|brainstorm|"
    r"help me (?:write|with)|need|propose|suggest|give me|make)\b.{0,50}"
    r"\b(?:poems?|haiku|limerick|sonnet|stor(?:y|ies)|fable|fairy ?tale|fiction\w*|novel|"
    r"essay|blog post|article|speech|toast|eulogy|lyrics|song|slogans?|taglines?|jingle|"
    r"headlines?|cover letter|e-?mail|letter|card|bio|product description|screenplay|"
    r"dialogue|monologue|tweet|caption|ad copy|advert\w*|rap|verse|opening (?:line|paragraph)|"
    r"paragraph|outline|personal statement|review|names?|thank-you note|plot|character)\b|"
    r"(?:^|[.!?:]\s+|please )(?:rewrite|rephrase|paraphrase|proofread|edit|polish|compose|draft|"
    r"craft|brainstorm|describe a (?:vivid|fictional|day))\b",
    _I | re.DOTALL,
)
_ANALYSIS = re.compile(
    r"\b(?:analy[sz]\w*|compare|comparison|contrast|evaluat\w*|assess\w*|critique|"
    r"pros and cons|advantages|disadvantages|benefits|drawbacks|trade-?offs?|implications?|"
    r"impacts?|significance|discuss|extract|identify|insights?|json|csv|table|"
    r"explain\b|differences? between|relationship between|correlation|causes|factors|"
    r"why (?:do|does|did|is|are|was|were)|how (?:do|does|did|has|have|would|might|could)|"
    r"what if|elaborate|describe)\b",
    _I,
)
_CHOICES = re.compile(r"(?:^|\s)\(?a[).]\s+\S.{0,200}?\s\(?b[).]\s+\S", re.DOTALL)
_FACT_Q = re.compile(
    r"^\W*(?:who|what|when|where|which|whose|name|is|are|was|were|does|do|did|can|how "
    r"(?:many|much|old|tall|long|far|big))\b(?!.*\b(?:are (?:some|the main)|ways|tips)\b)",
    _I | re.DOTALL,
)
_CHAT = re.compile(
    r"^\W*(?:hi|hello|hey|good (?:morning|evening|afternoon)|thanks|thank you|yo)\b|"
    r"\b(?:should i|what should i|any (?:tips|advice|ideas)|advice|recommend\w*|i feel|"
    r"i'?m (?:feeling|so|really|kind of|struggling|bored|nervous|stressed)|help me decide|"
    r"how (?:can|do|should) i (?:improve|become|deal|cope|stay|get better|stop|start)|"
    r"tell me a joke|let'?s (?:chat|talk)|how are you|what do you think)\b",
    _I,
)

_WORD = re.compile(r"[a-z]+")
_Predicate = Callable[[str, bool, set[str]], bool]  # (lower-cased window, code?, its words)


def _has(rx: re.Pattern[str]) -> _Predicate:
    return lambda window, _code, _v: rx.search(window) is not None


def _code_with(fires: _Predicate) -> _Predicate:
    return lambda window, code, vocab: code and fires(window, code, vocab)


def _math(window: str, code: bool, _v: set[str]) -> bool:
    m = _MATH.search(window)
    # "how many …?" is a word problem only after a set-up sentence; alone it is trivia.
    return m is not None and (not m.group(0).startswith("how") or bool(_MULTI_SENT.search(window)))


def _foreign_with_target(window: str, code: bool, vocab: set[str]) -> bool:
    # both must match: the rarer "into <language>" first, its words searched literal first
    return _TO_LANG_ANY(window, code, vocab) and _FOREIGN.search(window) is not None


def _short_question(window: str, _code: bool, _v: set[str]) -> bool:
    return window.count(" ") < 30 and _FACT_Q.search(window) is not None


def _words(spec: str) -> frozenset[str]:
    return frozenset(spec.split())


_MATH_WORDS: Final = _words(
    "prove proof derive derivation theorem lemma conjecture calculate compute solve integral "
    "integrate derivative antiderivative differential equation equations limit probability "
    "remainder puzzle riddle logic logical logically deduce syllogism premise premises how"
)
_ALWAYS: Final = frozenset[str]()  # empty trigger set: the predicate always runs
_LANGS: Final = _words(_LANG.strip("(?:)").replace("|", " "))
_CODE_LANGS: Final = _words(
    "python java javascript typescript c golang rust ruby php kotlin swift "
    "matlab bash shell sql lua scala haskell perl html css react node"
)
# The costliest rules' regexes, searched alternative by alternative behind word gates (same
# verdicts: see regex_gates; edit a regex here and its gates there together).
_CODE_GEN_ANY: Final = gates.code_gen(_CODE_GEN, _CODE_LANGS)
_TRANSLATE_ANY: Final = gates.translate(_TRANSLATE, _LANGS)
_CREATIVE_ANY: Final = gates.creative(_CREATIVE)
_ROLEPLAY_ANY: Final = gates.roleplay(_ROLEPLAY)
_CHOICES_ANY: Final = gates.choices(_CHOICES)
_CODE_ANY: Final = gates.code(_CODE)
_ANALYSIS_ANY: Final = gates.analysis(_ANALYSIS)
_CHAT_ANY: Final = gates.chat(_CHAT)
_TO_LANG_ANY: Final = gates.any_alternative(_TO_LANG, gates.always)  # in|into|to: by word
_SUMMARY_ANY: Final = gates.by_literal(_SUMMARY)
_REVIEW_ANY: Final = gates.by_literal(_REVIEW)

# Ordered: the first rule that fires decides the task type. Specific intents come first;
# broad ones (analysis, simple_qa, chat) only catch what the specific ones left. A rule's
# regex runs only when the prompt contains one of its trigger words (one set lookup), which
# keeps a record at a few tens of µs instead of running every regex over every prompt.
_Rule = tuple[str, str, frozenset[str], _Predicate]  # task, reason, trigger words, predicate
_RULES: Final[tuple[_Rule, ...]] = (
    ("code_review", "rule:code_review", _ALWAYS, _code_with(_REVIEW_ANY)),
    (
        "translation",
        "rule:translate_verb",
        _words(
            "translate translation translated translating translator say write render put "
            "express version"
        ),
        _TRANSLATE_ANY,
    ),
    ("translation", "rule:foreign_text", _LANGS, _foreign_with_target),
    (
        "summarization",
        "kw:summarize",
        _words(
            "summarize summarise summarized summarizing summary tl tldr sum key main synopsis "
            "condense recap gist"
        ),
        _SUMMARY_ANY,
    ),
    (
        "classification",
        "kw:classify",
        _words(
            "classify classification categorize categorise categorized categories category "
            "label sentiment tag spam assign positive put sort group"
        ),
        _has(_CLASSIFY),
    ),
    (
        "chat",
        "rule:roleplay",
        _words("pretend act acting role roleplay persona embody yourself you speak stay from"),
        _ROLEPLAY_ANY,
    ),
    (
        "code_generation",
        "rule:code_request",
        _CODE_LANGS | gates.CODE_VERBS | _words("given complexity"),
        _CODE_GEN_ANY,
    ),
    ("deep_reasoning", "rule:math", _MATH_WORDS | _words("x y z f g"), _math),
    ("code_review", "rule:code_present", _ALWAYS, lambda _w, code, _v: code),
    (
        "creative_writing",
        "kw:creative",
        gates.CREATIVE_VERBS | gates.CREATIVE_EDITS,
        _CREATIVE_ANY,
    ),
    ("simple_qa", "rule:multiple_choice", _words("a b"), _CHOICES_ANY),
    ("simple_qa", "rule:short_question", _ALWAYS, _short_question),
    (
        "analysis",
        "kw:analysis",
        _words(
            "analyze analyse analysis analyzing analysing compare comparison contrast evaluate "
            "evaluation assess assessment critique pros advantages disadvantages benefits "
            "drawbacks tradeoffs trade implications implication impact impacts significance "
            "discuss extract identify insights insight json csv table explain differences "
            "difference relationship correlation causes factors why how what elaborate describe"
        ),
        _ANALYSIS_ANY,
    ),
    (
        "chat",
        "kw:chat",
        _words(
            "hi hello hey good thanks thank yo should any advice recommend recommendation i "
            "help how tell let lets what"
        ),
        _CHAT_ANY,
    ),
)

_NO_WORDS: Final[set[str]] = set()  # _CODE_ANY's gates look at the text only
_N_SPECIFIC: Final = 5  # code_review … classification: specific enough to read from `system`
_BROAD: Final = frozenset(["", *(rule for _, rule, _, _ in _RULES[_N_SPECIFIC:])])
_HINTS: Final = ("```", "#include", "def ", "function", "public ", "console.", "System.out")
_CODE_HINTS: Final = (*_HINTS, "import ", "=>", ";\n", "{\n", "</", "SELECT ", "return ")


def _first_match(
    window: str, vocab: set[str], code: bool, rules: tuple[_Rule, ...]
) -> tuple[str, str]:
    for task, rule, triggers, fires in rules:
        if (not triggers or not vocab.isdisjoint(triggers)) and fires(window, code, vocab):
            return task, rule
    return "", ""


# Complexity cues, as word sets (one set intersection each, no extra regex pass).
_ENUM_MARKS: Final = ("\n- ", "\n* ", "\n• ", "1.", "2)", "3.", "3)", "(a)", "(b)", "(c)", " b)")
_CONSTRAINT: Final = _words(
    "must should without least most exactly ensure sure avoid fewer limit constraint "
    "constraints requirement requirements only"
)
_HARD: Final = _words(
    "prove proof theorem conjecture rigorous rigorously scratch detail detailed comprehensive "
    "complete thorough thoroughly optimize optimise optimal scalable scalability distributed "
    "concurrency concurrent asymptotic architecture evidence tradeoffs differential eigenvalues "
    "quantum security production implications"
)
_EASY: Final = _words("simple quick quickly brief briefly short concise just single")
_TASK_PRIOR: Final[dict[str, int]] = {
    "deep_reasoning": 1,
    "code_generation": 1,
    "code_review": 1,
    "analysis": 1,
    "simple_qa": -1,
    "classification": -1,
    "translation": -1,
}
_LEVELS: Final = ("low", "low", "medium", "medium", "high", "high", "very_high")


def _complexity(window: str, vocab: set[str], words: int, task: str) -> tuple[str, str]:
    """Score length, structure, constraints and difficulty cues; return (level, main cue)."""
    size = 0 if words <= 12 else 1 if words <= 40 else 2 if words <= 150 else 3
    size += words > 600
    parts = window.count("?") + sum(window.count(mark) for mark in _ENUM_MARKS)
    structure = (parts >= 3) + (parts >= 6) + (len(vocab & _CONSTRAINT) >= 2)
    hard = min(len(vocab & _HARD), 2)
    easy = not vocab.isdisjoint(_EASY)
    score = size + structure + hard - easy + _TASK_PRIOR.get(task, 0)
    level = _LEVELS[max(0, min(score, len(_LEVELS) - 1))]
    cues = (("hard", hard * 2), ("parts", structure * 2 - 1), ("long", size - 1), ("easy", easy))
    cue = max(cues, key=lambda c: c[1])[0] if max(c[1] for c in cues) > 0 else "short"
    return level, cue


def _verdict(
    text: str, system: str, known: set[str] | None = None
) -> tuple[str, str, str, set[str], int]:
    """(task, reason, lower-cased window, its words, word count): the rules' part of classify.
    `known`: the window's words if the caller has them already (see `rule_verdict`)."""
    window = text if len(text) <= _HEAD + _TAIL else text[:_HEAD] + "\n" + text[-_TAIL:]
    code = any(map(window.__contains__, _CODE_HINTS)) and _CODE_ANY(window, False, _NO_WORDS)
    window = window.lower()
    vocab = set(_WORD.findall(window)) if known is None else known
    task, reason = _first_match(window, vocab, code, _RULES)
    if system and reason in _BROAD:
        # A system prompt can name the task ("Translate the user's text into French") but
        # is too generic ("You are a helpful assistant.") to decide the broad types.
        sys_window = system[:_HEAD].lower()
        sys_vocab = set(_WORD.findall(sys_window))
        task_s, reason_s = _first_match(sys_window, sys_vocab, False, _RULES[:_N_SPECIFIC])
        if task_s:
            task, reason = task_s, f"system:{reason_s}"
    words = text.count(" ") + text.count("\n") + (1 if text else 0)
    if not task:
        task = "chat" if words <= 40 else "analysis"
        reason = f"default:{task}"
    return task, reason, window, vocab, words


def rule_verdict(text: str, *, system: str = "", words: set[str] | None = None) -> tuple[str, str]:
    """(task type, the rule that decided it) without the complexity score: what the learned
    task head stacks on (`task_head.heuristic_features`).

    `words`, if given, must be exactly the `[a-z]+` words of the lower-cased window (the first
    1,200 and last 400 characters of `text`, joined by a newline, when it is longer): the
    learned classifier has them from its own tokens and saves a pass over the text.
    """
    task, reason, _, _, _ = _verdict(text, system, words)
    return task, reason


def classify(text: str, *, system: str = "") -> Classification:
    """Classify one rendered prompt.

    Args:
        text: the rendered user message.
        system: the system prompt, if any; it can state the task ("You are a translator").

    Returns:
        A `Classification` whose `reason` names the rule that fired and the main complexity
        cue, e.g. ``"rule:code_review;cx:long"``.
    """
    task, reason, window, vocab, words = _verdict(text, system)
    level, cue = _complexity(window, vocab, words, task)
    return Classification(task_type=task, complexity=level, reason=f"{reason};cx:{cue}")
