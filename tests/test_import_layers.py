"""The import contracts of style.md §2 (and checklist items 3, 4 and 8), checked over the source.

Every module under batchroute/ is parsed with `ast`, never imported. Each import is resolved to
the modules it loads: relative imports, imports inside functions and under `if TYPE_CHECKING:`
all count, and so does every package `__init__` an import runs (`from batchroute.store.db
import X` runs `batchroute/store/__init__.py` first). Over that graph:

- layers: a module imports only lower layers (see `LAYERS`); modules of one layer never import
  one another, except the few edges in `ALLOWED`; a package (runner, store, simulator) is one
  module for this rule, free inside itself;
- the simulator imports only `SIMULATOR_MAY_IMPORT`; the library never imports the simulator,
  except `cli`, inside a function (`--simulate`, `batchroute simulate`);
- only the store package imports duckdb or holds SQL in a string literal;
- no import cycle at all (strongly connected components of the graph);
- no module over `MAX_LINES` lines, and every top-level module has a layer.

Known violations that other issue-10 work removes are in `PENDING_ISSUE_10`, each explained; a
test fails when one of them no longer occurs, so the list only shrinks.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "batchroute"

STAGES = (
    "reader",
    "classifier",
    "router",
    "budget",
    "limiter",
    "client",
    "store",
    "catalog",
    "prompt",
    "lock",
    "progress",
    "journal",
    "thresholds",  # issue 12: the cost dial (argmax quality − λ·cost), pure
    "learned",  # issue 12: the learned router, reads its shipped model file
    "split",  # issue 12: the cost dial's score sample and the experiment arms (pure)
    "task_head",  # issue 12: the learned task-type head, reads its shipped model file
)
# Rank of each top-level module or package ("" is batchroute/__init__): imports go to lower ranks.
LAYERS: dict[str, int] = {
    "errors": 0,
    "_version": 0,
    "types": 1,  # may import errors
    "regex_gates": 1,  # the heuristic rules' gated regex alternatives (issue 12 speed), pure
    "shape": 1,  # the prompt's shape as feature ids for the learned routing heads (pure)
    "exact_sums": 1,  # exact integer sums of float32 weight columns (learned fast path), pure
    "router_model": 1,  # the learned router's model file: format and parser (pure)
    "spec": 2,  # may import types and errors
    "lookup": 2,  # MemoryLookup: a KeyLookup in memory (tests, a dry run without a database)
    **dict.fromkeys(STAGES, 3),
    # The run plan composes the pure stages (prompt, classifier, router, budget arithmetic)
    # into what a run decides before its first call; pure itself, used by runner and quote.
    "plan": 4,
    # The writer process (`python -m batchroute.writer`): applies journal segments to the store,
    # off the run's process. Composes two stages (journal, store), so it sits above them.
    "writer": 4,
    "runner": 5,  # the only package that wires the stages together with I/O
    "worst": 5,  # the dry run's worst-case terms and words (pure; split out of quote)
    "quote": 6,
    "describe": 6,  # validate's text: the resolved plan in words
    "report": 6,
    # The HTML report draws what `report` computes (savings line, rates): the one edge inside
    # the composer layer, in ALLOWED.
    "report_html": 6,
    # What `classify` could not classify: the stderr lines and the verdict (exit 2 or 4).
    "unclassified": 6,
    # The one money formatter (issue 13): progress, quote, report and commands print through it.
    "usd": 0,
    # What the CLI does behind its arguments (checks, printed texts, crash log); only cli uses it.
    "commands": 7,
    "cli": 8,
    "__main__": 9,
    "": 9,
}
LAYER_NAMES = {0: "leaf", 1: "leaf", 2: "leaf", 3: "stage", 4: "plan", 5: "runner"}
LAYER_NAMES |= {6: "composer", 7: "commands", 8: "cli", 9: "package entry"}

# Stage -> stage edges that stay, each for the reason given. catalog and lock import only leaves;
# journal imports lock (below) and types. None of them imports the store, client or runner.
ALLOWED: dict[tuple[str, str], str] = {
    ("budget", "catalog"): "ModelInfo, the catalogue's per-model price record that budget prices "
    "with; catalog is pure data (parses the shipped JSON, imports nothing from batchroute). "
    "Moving ModelInfo into types is a 50-line move (its prices and cost methods), not one line.",
    ("router", "catalog"): "the tiers are resolved against the catalogue (which models exist, "
    "their context and price order): the same pure data as above.",
    ("learned", "task_head"): "the learned router's task type is the task head's (its own "
    "model file, stacked on the heuristic): learned computes the shared word features once and "
    "hands them over, which keeps a prompt at one feature pass.",
    ("task_head", "classifier"): "the task head stacks on the heuristic's verdict "
    "(`classifier.rule_verdict`, pure): the rule that fired is one of its features.",
    ("journal", "lock"): "real_db_path, one line both must share: the lock and the journal "
    "belong to the database's real path, so two names for one file get one of each.",
    ("report_html", "report"): "the HTML report prints the text report's own savings line, "
    "rates and percentages: one wording for every format (issue 13).",
}
SIMULATOR = "simulator"
SIMULATOR_MAY_IMPORT = frozenset({"errors", "types", "_version", "catalog"})  # catalog: /models
SIMULATOR_IMPORTERS = frozenset({"cli"})  # and only inside a function
SQL_HOME = "store"
MAX_LINES = 400

# Known violations that in-flight issue-10 work removes. Delete an entry when it lands (a test
# below fails once an entry no longer occurs).
PENDING_ISSUE_10: dict[tuple[str, ...], str] = {}

_SQL = re.compile(
    r"\bSELECT\b[\s\S]+\bFROM\b|\bINSERT\s+INTO\b|\bUPDATE\s+\w+\s+SET\b|\bDELETE\s+FROM\b"
    r"|\b(?:CREATE|ALTER|DROP)\s+(?:TABLE|INDEX|VIEW|SEQUENCE)\b"
)


@dataclass(frozen=True)
class Module:
    name: str  # dotted, e.g. batchroute.runner.run
    path: Path  # relative to the package's parent folder, e.g. batchroute/runner/run.py
    tree: ast.Module
    source: str


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    where: str  # path:line: the import statement
    lazy: bool  # inside a function
    implicit: bool  # a package __init__ that the import runs


@dataclass(frozen=True)
class Violation:
    key: tuple[str, ...]
    message: str


def load(root: Path) -> dict[str, Module]:
    """Every module of the package at `root`, parsed."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        source = path.read_text(encoding="utf-8")
        shown = path.relative_to(root.parent)
        modules[name] = Module(name, shown, ast.parse(source, str(shown)), source)
    return modules


def rel(name: str, package: str) -> str:
    return name[len(package) + 1 :] if name != package else ""


def group(name: str, package: str) -> str:
    return rel(name, package).split(".")[0]


def _imports(
    node: ast.AST, lazy: bool = False
) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement under `node`, with whether it runs inside a function."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, lazy
        else:
            inner = lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            yield from _imports(child, inner)


def _nearest(name: str, modules: dict[str, Module]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _targets(
    mod: Module, node: ast.Import | ast.ImportFrom, modules: dict[str, Module]
) -> set[str]:
    """The modules of this package that `node` names (before the package __init__s it runs)."""
    if isinstance(node, ast.Import):
        found = (_nearest(a.name, modules) for a in node.names)
        return {t for t in found if t}
    base = node.module or ""
    if node.level:
        parts = mod.name.split(".")
        parts = parts if mod.path.name == "__init__.py" else parts[:-1]
        anchor = ".".join(parts[: len(parts) - node.level + 1])
        base = f"{anchor}.{base}" if base else anchor
    found = (
        f"{base}.{a.name}" if f"{base}.{a.name}" in modules else _nearest(base, modules)
        for a in node.names
    )
    return {t for t in found if t}


def edges(modules: dict[str, Module]) -> list[Edge]:
    """The import graph: explicit edges, and implicit ones to each package __init__ they run."""
    out = []
    for mod in modules.values():
        for node, lazy in _imports(mod.tree):
            text = " ".join((ast.get_source_segment(mod.source, node) or "").split())
            where = f"{mod.path}:{node.lineno}: {text}"
            for dst in sorted(_targets(mod, node, modules)):
                out.append(Edge(mod.name, dst, where, lazy, implicit=False))
                pkg = dst.rpartition(".")[0]
                while pkg and not (mod.name == pkg or mod.name.startswith(pkg + ".")):
                    out.append(Edge(mod.name, pkg, where, lazy, implicit=True))
                    pkg = pkg.rpartition(".")[0]
    return [e for e in dict.fromkeys(out) if e.src != e.dst]


def _layer_violation(e: Edge, package: str) -> Violation | None:
    src, dst = group(e.src, package), group(e.dst, package)
    if src == dst or SIMULATOR in (src, dst) or src not in LAYERS or dst not in LAYERS:
        return None
    if (src, dst) in ALLOWED or LAYERS[dst] < LAYERS[src]:
        return None
    how = "upward" if LAYERS[dst] > LAYERS[src] else "within one layer (not in ALLOWED)"
    note = " (the package __init__ this import runs)" if e.implicit else ""
    return Violation(
        ("layers", src, dst),
        f"{e.src} ({LAYER_NAMES[LAYERS[src]]}) imports {e.dst}{note} "
        f"({LAYER_NAMES[LAYERS[dst]]}), {how}: {e.where}",
    )


def _simulator_violation(e: Edge, package: str) -> Violation | None:
    src, dst = group(e.src, package), group(e.dst, package)
    if src == SIMULATOR and dst != SIMULATOR and dst not in SIMULATOR_MAY_IMPORT:
        return Violation(
            ("simulator-imports", dst),
            f"the simulator imports {e.dst}; it may import only "
            f"{sorted(SIMULATOR_MAY_IMPORT)}: {e.where}",
        )
    if dst == SIMULATOR and src != SIMULATOR and not (src in SIMULATOR_IMPORTERS and e.lazy):
        return Violation(
            ("imports-simulator", src),
            f"{e.src} imports the simulator; only {sorted(SIMULATOR_IMPORTERS)} may, inside a "
            f"function: {e.where}",
        )
    return None


def _cycle_path(scc: set[str], graph: dict[str, list[Edge]]) -> list[Edge]:
    """One cycle through the first member of `scc` (breadth-first, so a shortest one)."""
    start = min(scc)
    paths: dict[str, list[Edge]] = {start: []}
    queue = [start]
    for node in queue:
        for e in graph.get(node, []):
            if e.dst == start:
                return [*paths[node], e]
            if e.dst in scc and e.dst not in paths:
                paths[e.dst] = [*paths[node], e]
                queue.append(e.dst)
    raise AssertionError(scc)  # pragma: no cover: a strongly connected set has a cycle


def _sccs(nodes: list[str], graph: dict[str, list[Edge]]) -> list[set[str]]:
    """Tarjan's strongly connected components, iteratively (no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[set[str]] = []
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(graph.get(root, [])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        while work:
            node, it = work[-1]
            e = next(it, None)
            if e is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = {stack.pop()}
                    while node not in comp:
                        comp.add(stack.pop())
                    out.append(comp)
            elif e.dst not in index:
                index[e.dst] = low[e.dst] = len(index)
                stack.append(e.dst)
                work.append((e.dst, iter(graph.get(e.dst, []))))
            elif e.dst in stack:
                low[node] = min(low[node], index[e.dst])
    return out


def cycles(modules: dict[str, Module], graph_edges: list[Edge]) -> list[Violation]:
    graph: dict[str, list[Edge]] = {}
    for e in graph_edges:
        graph.setdefault(e.src, []).append(e)
    found = []
    for scc in _sccs(sorted(modules), graph):
        if len(scc) > 1:
            steps = "\n    ".join(f"{e.src} -> {e.dst}: {e.where}" for e in _cycle_path(scc, graph))
            found.append(Violation(("cycle", *sorted(scc)), f"import cycle:\n    {steps}"))
    return found


def _docstrings(tree: ast.Module) -> set[int]:
    scopes = ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
    nodes = [n for n in ast.walk(tree) if isinstance(n, scopes)]
    return {
        id(n.body[0].value)
        for n in nodes
        if n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)
    }


def sql_literals(mod: Module) -> list[tuple[int, str]]:
    """(line, text) of each string literal that reads as SQL (docstrings left out)."""
    docs = _docstrings(mod.tree)
    return [
        (n.lineno, n.value)
        for n in ast.walk(mod.tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
        if _SQL.search(n.value)
    ]


def _module_violations(mod: Module, package: str) -> Iterator[Violation]:
    name, top = rel(mod.name, package), group(mod.name, package)
    if top not in LAYERS and top != SIMULATOR:
        yield Violation(("unlayered", top), f"{mod.path}: {mod.name} has no layer in LAYERS")
    lines = len(mod.source.splitlines())
    if lines > MAX_LINES:
        yield Violation(("size", name), f"{mod.path}: {lines} lines, over {MAX_LINES}")
    if top == SQL_HOME:
        return
    for node, _ in _imports(mod.tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            names = [node.module or ""] if node.level == 0 else []
        if any(n.split(".")[0] == "duckdb" for n in names):
            where = f"{mod.path}:{node.lineno}"
            yield Violation(
                ("duckdb", top), f"{where}: {mod.name} imports duckdb outside the store"
            )
    for line, text in sql_literals(mod):
        snippet = " ".join(text.split())[:60]
        yield Violation(("sql", top), f"{mod.path}:{line}: SQL outside the store: {snippet!r}")


def check(root: Path) -> list[Violation]:
    """Every violation of the contracts in the package at `root`."""
    package = root.name
    modules = load(root)
    graph_edges = edges(modules)
    found = [v for m in modules.values() for v in _module_violations(m, package)]
    for e in graph_edges:
        found += filter(None, [_layer_violation(e, package), _simulator_violation(e, package)])
    return found + cycles(modules, graph_edges)


def _report(violations: list[Violation]) -> str:
    return "\n".join(f"[{' '.join(k or '<root>' for k in v.key)}] {v.message}" for v in violations)


# --- the package itself -----------------------------------------------------------------------


def test_batchroute_keeps_its_import_contracts() -> None:
    """Fails naming the module and the import line (or file and line) of every violation."""
    found = [v for v in check(ROOT) if v.key not in PENDING_ISSUE_10]
    assert not found, "import contracts broken:\n" + _report(found)


def test_pending_violations_still_occur() -> None:
    """`PENDING_ISSUE_10` only shrinks: an entry whose violation is gone must be deleted."""
    keys = {v.key for v in check(ROOT)}
    gone = [k for k in PENDING_ISSUE_10 if k not in keys]
    assert not gone, f"fixed: delete these entries from PENDING_ISSUE_10: {gone}"
    assert all(PENDING_ISSUE_10.values())
    assert all(ALLOWED.values())


def test_the_sql_scan_sees_the_stores_sql() -> None:
    """The SQL rule is not blind: it finds the store's own statements."""
    store = [m for m in load(ROOT).values() if group(m.name, "batchroute") == SQL_HOME]
    assert sum(len(sql_literals(m)) for m in store) >= 5


@pytest.mark.parametrize(
    "module", ["batchroute.simulator", "batchroute", "batchroute.errors", "batchroute.spec"]
)
def test_importing_loads_neither_duckdb_tqdm_nor_the_runner(module: str) -> None:
    """In a fresh interpreter: the simulator (and the package itself) stays light."""
    code = (
        f"import sys, {module}\n"
        "heavy = ('duckdb', 'tqdm', 'batchroute.runner', 'batchroute.store', 'batchroute.client',"
        " 'batchroute.progress', 'batchroute.journal')\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]", f"import {module} loads {p.stdout.strip()}"


# --- each rule catches a violation: a tiny synthetic package in tmp_path ----------------------

_CLEAN = {
    "__init__.py": "from batchroute._version import __version__\n"
    "from typing import TYPE_CHECKING\n"
    "if TYPE_CHECKING:\n    from batchroute.runner import run_job\n",
    "_version.py": "__version__ = '0'\n",
    "errors.py": "class BatchrouteError(Exception): ...\n",
    "types.py": "from .errors import BatchrouteError\n",
    "spec.py": "from batchroute.types import BatchrouteError\n",
    "catalog.py": "X = 1\n",
    "router.py": "from batchroute.catalog import X\nfrom batchroute.spec import BatchrouteError\n",
    "reader.py": "from .types import BatchrouteError\n",
    "store/__init__.py": "from batchroute.store.db import Q\n",
    "store/db.py": "import duckdb\nQ = 'SELECT id FROM results'\n",
    "runner/__init__.py": "from batchroute.runner.run import run_job\n",
    "runner/run.py": "from batchroute.router import X\nfrom batchroute.store import Q\n"
    "from batchroute._version import __version__\ndef run_job(): ...\n",
    "cli.py": "from batchroute.runner import run_job\n"
    "def simulate():\n    from batchroute.simulator import serve\n",
    "simulator/__init__.py": "from batchroute.simulator.app import serve\n",
    "simulator/app.py": "from batchroute.catalog import X\n"
    "from batchroute.simulator import shared\ndef serve(): ...\n",
    "simulator/shared.py": "from batchroute.errors import BatchrouteError\n",
}
_BROKEN = {
    "cycle through __init__": (
        {
            "runner/run.py": "from batchroute import __version__\n",
            "__init__.py": "from batchroute.runner import run_job\n",
        },
        ("cycle", "batchroute", "batchroute.runner", "batchroute.runner.run"),
        "from batchroute import __version__",
    ),
    "cycle under TYPE_CHECKING": (
        {"simulator/shared.py": "if TYPE_CHECKING:\n    from batchroute.simulator.app import s\n"},
        ("cycle", "batchroute.simulator.app", "batchroute.simulator.shared"),
        "from batchroute.simulator.app import s",
    ),
    "cycle through a package __init__ an import runs": (
        # closed only by the implicit edge: store.db -> runner.work runs runner/__init__
        {"store/db.py": "from batchroute.runner.work import W\n", "runner/work.py": "W = 1\n"},
        (
            "cycle",
            "batchroute.runner",
            "batchroute.runner.run",
            "batchroute.store",
            "batchroute.store.db",
        ),
        "from batchroute.runner.work import W",
    ),
    "stage imports stage": (
        {"reader.py": "from batchroute.router import X\n"},
        ("layers", "reader", "router"),
        "from batchroute.router import X",
    ),
    "stage imports the runner inside a function": (
        {"reader.py": "def f():\n    from .runner import run_job\n"},
        ("layers", "reader", "runner"),
        "from .runner import run_job",
    ),
    "leaf imports up, relatively": (
        {"types.py": "from . import spec\n"},
        ("layers", "types", "spec"),
        "from . import spec",
    ),
    "spec imports a stage": (
        {"spec.py": "import batchroute.catalog\n"},
        ("layers", "spec", "catalog"),
        "import batchroute.catalog",
    ),
    "duckdb outside the store": (
        {"reader.py": "import duckdb\n"},
        ("duckdb", "reader"),
        "batchroute/reader.py:1",
    ),
    "SQL outside the store": (
        {"runner/run.py": "Q = f'INSERT INTO results VALUES ({1})'\n"},
        ("sql", "runner"),
        "INSERT INTO results",
    ),
    "the runner imports the simulator": (
        {"runner/run.py": "def f():\n    from ..simulator.app import serve\n"},
        ("imports-simulator", "runner"),
        "from ..simulator.app import serve",
    ),
    "cli imports the simulator at module level": (
        {"cli.py": "from batchroute.simulator import serve\n"},
        ("imports-simulator", "cli"),
        "from batchroute.simulator import serve",
    ),
    "the simulator imports the store": (
        {"simulator/app.py": "from batchroute.store.db import Q\n"},
        ("simulator-imports", "store"),
        "from batchroute.store.db import Q",
    ),
    "a module over the size budget": (
        {"reader.py": "x = 1\n" * (MAX_LINES + 1)},
        ("size", "reader"),
        f"{MAX_LINES + 1} lines",
    ),
    "a module with no layer": ({"utils.py": "x = 1\n"}, ("unlayered", "utils"), "utils.py"),
}


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "batchroute"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


def test_a_clean_synthetic_package_passes(tmp_path: Path) -> None:
    """No false alarms: leaves, allowed edges, the store's SQL, cli's lazy simulator import."""
    assert check(_package(tmp_path, _CLEAN)) == []


@pytest.mark.parametrize("case", sorted(_BROKEN))
def test_each_rule_catches_its_violation(tmp_path: Path, case: str) -> None:
    change, key, shown = _BROKEN[case]
    found = check(_package(tmp_path, {**_CLEAN, **change}))
    hits = [v for v in found if v.key == key]
    assert hits, f"{case}: {key} not reported; got:\n{_report(found)}"
    assert any(shown in v.message for v in hits), _report(hits)
