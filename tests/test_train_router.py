"""tools/train_router.py's cost factor heads on a synthetic fixture (needs the [train] extra)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
pytest.importorskip("sklearn")
stats = pytest.importorskip("scipy.stats")
sparse = pytest.importorskip("scipy.sparse")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import train_router  # noqa: E402


def _two_kinds(n: int = 400) -> tuple[object, object, object]:
    """Prompts of two kinds (one indicator feature each): a steady kind whose cost factor is
    always 1, and a spread kind whose log factor is normal with σ = 1 (long and short answers),
    so its mean factor is e^½ ≈ 1.65 while its geometric mean is 1."""
    z = stats.norm.ppf((np.arange(n) + 0.5) / n)
    kind = np.repeat([0, 1], n)
    x = sparse.csr_matrix(np.eye(2)[kind])
    log_factor = np.concatenate([np.zeros(n), z])[:, None].repeat(4, axis=1)
    mean_factor = float(np.exp(z).mean())
    return x, log_factor, mean_factor


def test_the_cost_heads_predict_the_mean_factor_the_dial_bounds() -> None:
    # The dial bounds expected cost: the heads must predict the mean factor, not the geometric
    # mean a ridge of log factors gives (which spent 44.1 % for a 0.45 dial in CV).
    x, log_factor, mean_factor = _two_kinds()
    heads = train_router.fit_cost(x, log_factor, 1.0, 1.0)
    steady, spread = np.exp(heads.predict(x[[0, -1]]))
    assert mean_factor == pytest.approx(1.65, abs=0.02)
    assert spread == pytest.approx([mean_factor] * 4, rel=0.05)
    assert steady == pytest.approx([1.0] * 4, abs=0.03)


def test_without_the_variance_head_the_spread_kind_is_underpredicted() -> None:
    # what the heads did before: the geometric mean, a third below the mean
    x, log_factor, mean_factor = _two_kinds()
    heads = train_router.fit_cost(x, log_factor, 1.0, None)
    spread = np.exp(heads.predict(x[[-1]]))[0]
    assert max(spread) < 0.7 * mean_factor
