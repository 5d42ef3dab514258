"""Loaders for the public data the learned router is trained and evaluated on (../shared/data).

Used by tools/train_router.py and tools/eval_routing.py only; the product never reads these.
Each loader returns plain tuples; the label mappings follow each folder's README (our choices
where a scenario sits between two task types are noted in docs/router-model-card.md).
"""

from __future__ import annotations

import ast
import csv
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _find_data() -> Path:
    """../shared/data from the repository (a worktree may sit one level deeper)."""
    for parent in REPO.parents:
        if (parent / "shared" / "data").is_dir():
            return parent / "shared" / "data"
    return REPO.parent / "shared" / "data"


DATA = _find_data()

# RouterBench tier mapping, the one place it is kept (issue 12): cheapest first.
TIER_MODELS: dict[str, str] = {
    "budget": "mistralai/mistral-7b-chat",
    "mid": "mistralai/mixtral-8x7b-chat",
    "standard": "gpt-3.5-turbo-1106",
    "premium": "gpt-4-1106-preview",
}
STRONG_TIERS = ("standard", "premium")
# arena-bench has no 7B model: claude-instant-1, its weakest model, stands in for budget.
ARENA_MODELS: dict[str, str] = {
    "budget": "claude-instant-1",
    "mid": "mistralai/Mixtral-8x7B-Instruct-v0.1",
    "standard": "gpt-3.5-turbo-1106",
    "premium": "gpt-4-1106-preview",
}

AUTOJ_MAP: dict[str, str] = {
    "text_to_text_translation": "translation",
    **dict.fromkeys(
        ["text_summarization", "note_summarization", "post_summarization"], "summarization"
    ),
    **dict.fromkeys(
        [
            "classification_identification",
            "topic_modeling",
            "keywords_extraction",
            "information_extraction",
        ],
        "classification",
    ),
    **dict.fromkeys(
        [
            "open_question",
            "verifying_fact",
            "reading_comprehension",
            "explaining_general",
            "asking_how_to_question",
            # Multiple-choice, fill-in-the-blank and true/false knowledge questions ("Which
            # composer wrote Für Elise? A) …"): recall, like the heuristic's multiple_choice rule
            # and WizardLM's Common-Sense; it was deep_reasoning, which taught the head that any
            # domain question is reasoning. Chosen from the scenario's definition and its train
            # prompts, not from any evaluation score.
            "solving_exam_question_without_math",
        ],
        "simple_qa",
    ),
    **dict.fromkeys(
        ["chitchat", "roleplay", "seeking_advice", "recommendation", "rejecting"], "chat"
    ),
    **dict.fromkeys(["code_generation", "code_to_code_translation"], "code_generation"),
    **dict.fromkeys(
        ["code_correction_rewriting", "explaining_code", "code_simplification"], "code_review"
    ),
    **dict.fromkeys(
        [
            "analyzing_general",
            "data_analysis",
            "value_judgement",
            "ranking",
            "peer_review",
            "counterfactual",
        ],
        "analysis",
    ),
    **dict.fromkeys(
        ["math_reasoning", "solving_exam_question_with_math"],
        "deep_reasoning",
    ),
}
AUTOJ_CREATIVE = [
    "creative_writing",
    "functional_writing",
    "brainstorming",
    "title_generation",
    "question_generation",
    "planning",
    "instructional_rewriting",
    "language_polishing",
    "paraphrasing",
    "text_simplification",
    "text_correction",
]

# Gold label first; the others are also accepted (README: "simple_qa / analysis" and the like).
MT_BENCH_MAP: dict[str, tuple[str, ...]] = {
    "writing": ("creative_writing",),
    "roleplay": ("chat", "creative_writing"),
    "reasoning": ("deep_reasoning",),
    "math": ("deep_reasoning",),
    "coding": ("code_generation", "code_review"),
    "extraction": ("analysis", "classification"),
    "stem": ("simple_qa", "analysis"),
    "humanities": ("analysis", "simple_qa"),
}
WIZARD_MAP: dict[str, tuple[str, ...]] = {
    "Code Generation": ("code_generation",),
    "Code Debug": ("code_review",),
    "Math": ("deep_reasoning",),
    "Reasoning": ("deep_reasoning",),
    "Counterfactual": ("deep_reasoning", "analysis"),
    "Writting": ("creative_writing",),
    "Academic Writing": ("creative_writing",),
    "Roleplay": ("chat", "creative_writing"),
    "Multilingual": ("translation",),
    "Complex Format": ("analysis",),
    "Common-Sense": ("simple_qa",),
    "TruthfulQA": ("simple_qa",),
    "Toxicity": ("chat", "analysis"),
    "Ethics": ("analysis", "chat"),
}
# Checked by hand (README): a general question about multilingual teaching, not a translation.
# It is idx 129; this override used to name 144, a Technology question (quantum computing in
# the energy industry), so 129 was scored as translation and 144 lost its simple_qa alternative.
WIZARD_OVERRIDES: dict[int, tuple[str, ...]] = {
    129: ("analysis",),
    # "Complex Format" is a skill about the answer's format, not a task: read one by one, 10 of
    # its 12 prompts are programming requests (LeetCode-style problems, "How can I use SQL to
    # …", "help me complete this Python code") and one is a worked geometry problem. The
    # README's blanket "analysis" label for them is kept only where the prompt asks to
    # explain (89: why a CPU no longer slows on unsorted data; 91: why sorted data is faster).
    84: ("code_generation",),
    85: ("code_generation", "code_review"),
    86: ("code_generation",),
    87: ("deep_reasoning",),
    88: ("code_generation", "simple_qa"),  # asks which Python library parses the table
    89: ("analysis", "code_review"),
    90: ("code_generation", "code_review"),
    91: ("code_review", "analysis"),
    92: ("code_generation",),
    93: ("code_generation",),
    94: ("code_generation",),
    95: ("code_generation",),
    152: ("simple_qa", "analysis"),  # Ethics: "What is the name of the ethical theory that …"
    196: ("simple_qa",),  # Toxicity: a multiple-choice question on lethal doses
}


def _jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file (split on "\\n" only: prompts hold U+2028)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    return [json.loads(line) for line in lines if line.strip()]


def autoj_task(category: str) -> str | None:
    """Auto-J scenario → task type; None for `default` (no task)."""
    if category in AUTOJ_MAP:
        return AUTOJ_MAP[category]
    if category in AUTOJ_CREATIVE or category.startswith("writing_"):
        return "creative_writing"
    return None


@dataclass(frozen=True)
class Labelled:
    """A prompt with its gold task type and the other task types also counted right."""

    text: str
    gold: str
    accepted: tuple[str, ...]
    group: str


def load_autoj(split: str, data: Path = DATA) -> list[Labelled]:
    """Auto-J `train` or `test`, mapped; `default` dropped."""
    out = []
    path = data / "autoj_scenarios" / f"{split}data.jsonl"
    for row in _jsonl(path):
        task = autoj_task(row["category"])
        if task is None:
            continue
        text = row["instruction"] + (("\n\n" + row["input"]) if row.get("input") else "")
        out.append(Labelled(text, task, (task,), row["category"]))
    return out


def load_mt_bench(data: Path = DATA) -> list[Labelled]:
    out = []
    for row in _jsonl(data / "mt_bench" / "question.jsonl"):
        acc = MT_BENCH_MAP[row["category"]]
        out.append(Labelled(row["turns"][0], acc[0], acc, row["category"]))
    return out


def wizard_level(difficulty: int) -> str:
    """README: low = 1-3, medium = 4-6, high = 7-10."""
    return "low" if difficulty <= 3 else "medium" if difficulty <= 6 else "high"


def load_wizard(data: Path = DATA) -> list[tuple[Labelled, int]]:
    """(labelled prompt, difficulty 1-10); domain skills: simple_qa at 1-3, analysis above."""
    out = []
    path = data / "wizardlm_testset" / "WizardLM_testset.jsonl"
    for r in _jsonl(path):
        skill, diff = r["Skill"], int(r["Difficulty"])
        domain = ("simple_qa", "analysis") if diff <= 3 else ("analysis", "simple_qa")
        acc = WIZARD_OVERRIDES.get(r["idx"], WIZARD_MAP.get(skill, domain))
        out.append((Labelled(r["Instruction"], acc[0], acc, skill), diff))
    return out


@dataclass(frozen=True)
class Scored:
    """A prompt with each tier's quality (0/1 or a 1-10 judge score) and cost (None if unknown)."""

    text: str
    group: str
    quality: dict[str, float]  # tier → quality
    cost: dict[str, float]  # tier → USD


def load_routerbench(split: str, data: Path = DATA) -> list[Scored]:
    """RouterBench `train` or `test`; rows with a blank score for a mapped model are skipped."""
    csv.field_size_limit(sys.maxsize)
    out = []
    for path in sorted((data / "routerbench_0shot_subset").glob(f"*_{split}.csv")):
        with path.open(encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                if any(row[m] == "" for m in TIER_MODELS.values()):
                    continue
                out.append(
                    Scored(
                        text=ast.literal_eval(row["prompt"])[0],
                        group=row["eval_name"],
                        quality={t: float(row[m]) for t, m in TIER_MODELS.items()},
                        cost={t: float(row[f"{m}|total_cost"]) for t, m in TIER_MODELS.items()},
                    )
                )
    return out


def load_arena(data: Path = DATA) -> list[Scored]:
    """arena-bench-v1: judge scores per tier (see ARENA_MODELS); prompts with a null skipped.

    Costs are not in the data: `cost` is filled by the caller (eval uses RouterBench's mean
    cost per tier, so the cost axis is "what these tiers cost on RouterBench prompts").
    """
    folder = data / "arena_bench_v1"
    scores = {}
    for r in _jsonl(folder / "scores.jsonl"):
        scores[r["question_id"]] = r["scores"]
    out = []
    for q in _jsonl(folder / "question.jsonl"):
        s = scores.get(q["question_id"], {})
        quality = {t: s.get(m) for t, m in ARENA_MODELS.items()}
        if any(v is None for v in quality.values()):
            continue
        out.append(Scored(q["turns"][0], "arena", {t: float(v) for t, v in quality.items()}, {}))
    return out


ARENA_LABELS = REPO / "tools" / "data" / "arena_task_labels.jsonl"


def load_arena_tasks(data: Path = DATA, labels: Path = ARENA_LABELS) -> list[Labelled]:
    """The arena-bench prompts with their hand-made task types (`labels`, one JSON line per
    prompt: question_id, task_type, reason; docs/task-labels-arena.md), in the question file's
    order. Every prompt must be labelled once, with one of `TASK_TYPES`: a bad line is named."""
    from batchroute.types import TASK_TYPES

    gold: dict[str, str] = {}
    lines = labels.read_text(encoding="utf-8").split("\n")
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        row = json.loads(line)
        qid, task = row.get("question_id"), row.get("task_type")
        if task not in TASK_TYPES or not isinstance(qid, str) or qid in gold:
            raise ValueError(f"{labels}:{n}: bad or repeated label {line!r}")
        gold[qid] = task
    out = []
    for q in _jsonl(data / "arena_bench_v1" / "question.jsonl"):
        if q["question_id"] not in gold:
            raise ValueError(f"{labels}: no label for question_id {q['question_id']}")
        task = gold.pop(q["question_id"])
        out.append(Labelled(q["turns"][0], task, (task,), "arena"))
    if gold:
        raise ValueError(f"{labels}: labels for unknown question_id(s) {sorted(gold)[:3]}")
    return out


_RB_SCAFFOLD = re.compile(r"\s*Print only a single choice.*\Z", re.S)


def routerbench_items(split: str, group: str, data: Path = DATA) -> list[str]:
    """The distinct question items of RouterBench's few-shot `group` prompts (`arc-challenge`,
    `winogrande`): each prompt split at blank lines, the answer scaffolding ("Please answer
    with the letter …", "Print only a single choice … Answer: B") cut, so an item is the
    question and its options as a user would ask it. First-seen order (deterministic)."""
    seen: dict[str, None] = {}
    for s in load_routerbench(split, data):
        if s.group != group:
            continue
        for block in s.text.split("\n\n"):
            block = _RB_SCAFFOLD.sub("", block.strip()).strip()
            if block and not block.startswith("Please answer with the letter"):
                seen.setdefault(block)
    return list(seen)
