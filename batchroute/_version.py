"""The package version: a leaf that imports nothing, so any module may read it without a cycle.

`pyproject.toml` reads it too (`[tool.setuptools.dynamic]`): this line is the only place it is set.
"""

from __future__ import annotations

__version__ = "0.1.0"
