"""The row dataclasses are the one list of columns: after the migrations, each table has
exactly the dataclass's fields, so adding a column is a field plus a migration."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
from subprocs import query

import batchroute.store
from batchroute.store import ResultStore
from batchroute.types import AttemptRow, ResultRow


@pytest.mark.parametrize(("table", "row_type"), [("results", ResultRow), ("attempts", AttemptRow)])
def test_a_migrated_table_has_exactly_the_fields_of_its_row_dataclass(
    tmp_path: Path, table: str, row_type: type
) -> None:
    db = tmp_path / "r.duckdb"
    ResultStore(db).migrate()
    cols = query(
        db,
        "SELECT column_name FROM information_schema.columns WHERE table_name = ?",
        [table],
    )
    assert {c for (c,) in cols} == {f.name for f in dataclasses.fields(row_type)}


def test_the_store_package_does_not_import_the_journal() -> None:
    """Journal replay is the runner side's: the store is handed rows, never reads the files."""
    package = Path(batchroute.store.__file__).parent
    for module in package.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert not any("journal" in n for n in names), (module.name, names)
