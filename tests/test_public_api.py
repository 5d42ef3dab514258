"""The public API is explicit: `batchroute.__all__` lists it and every name in it imports."""

from __future__ import annotations

import importlib
import subprocess
import sys

import batchroute
from batchroute import errors

EXPECTED = {
    "JobSpec",
    "load_spec",
    "run_job",
    "run_job_async",
    "RunOptions",
    "RunReport",
    "Catalog",
    "BatchrouteError",
    "ResultStore",
    "__version__",
}


def test_all_lists_the_public_api() -> None:
    assert set(batchroute.__all__) >= EXPECTED
    assert len(batchroute.__all__) == len(set(batchroute.__all__))


def test_every_error_class_is_exported() -> None:
    classes = {
        name
        for name, obj in vars(errors).items()
        if isinstance(obj, type) and issubclass(obj, errors.BatchrouteError)
    }
    assert classes <= set(batchroute.__all__)


def test_every_name_in_all_imports() -> None:
    module = importlib.import_module("batchroute")
    for name in batchroute.__all__:
        assert getattr(module, name) is not None, name


def test_star_import_in_a_fresh_interpreter() -> None:
    """No import cycle: `from batchroute import *` works before anything else is loaded."""
    code = (
        "from batchroute import *\n"
        "import batchroute\n"
        "missing = [n for n in batchroute.__all__ if n not in globals()]\n"
        "assert not missing, missing\n"
        "print(__version__)\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == batchroute.__version__


def test_version_matches_the_package_metadata() -> None:
    from importlib.metadata import version

    assert batchroute.__version__ == version("batchroute")
