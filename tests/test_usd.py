"""One money format everywhere (issue 13): fixed decimals chosen by magnitude, never an exponent.

Before, the CLI printed amounts six ways, among them `$0E-12 of $1.0` and `$1E+2/day`.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest
from factories import texts, write_job, write_jsonl
from subprocs import run_cli

from batchroute.usd import amount, exact, usd

EXPONENT = re.compile(r"\d[eE][+-]?\d")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("0", "$0.00"), ("0E-12", "$0.00"), ("2.0", "$2.00"), ("1E+2", "$100.00"),
        ("1234.5", "$1,234.50"), ("0.282344", "$0.2823"), ("0.0183207", "$0.0183"),
        ("0.000456", "$0.000456"), ("0.000001148945", "$0.00000115"),
        ("1E-12", "$0.00000000000100"), ("-0.25", "-$0.2500"), ("0.005", "$0.005000"),
        ("0.00006427", "$0.0000643"), ("-0.00006427", "-$0.0000643"),
    ],
)  # fmt: skip
def test_usd_has_fixed_decimals_by_magnitude(value: str, text: str) -> None:
    assert usd(Decimal(value)) == text


def test_huge_and_tiny_amounts_never_use_an_exponent() -> None:
    huge = usd(Decimal("1E+400"))
    assert huge == "$10" + ",000" * 133 + ".00"
    assert not EXPONENT.search(huge)
    assert exact(Decimal("1E+40")) == "1" + "0" * 40 + ".00"
    assert exact(Decimal("0E-12")) == "0.00"
    assert amount(Decimal("5E-13")) == "0.000000000000500"  # never shown as 0
    assert amount(Decimal("1E-30")) == "0." + "0" * 29 + "100"


def test_below_a_hundredth_of_a_cent_three_significant_digits() -> None:
    """Below $0.0001 the decimals follow the magnitude to three significant digits, as the
    bands above it do: `$0.0000643` fits a 40-column progress row, `$0.000064270000` did not."""
    assert usd(Decimal("0.000064270000")) == "$0.0000643"
    assert usd(Decimal("0.0000077500")) == "$0.00000775"
    for exp in range(5, 20):
        text = amount(Decimal(f"1.23456E-{exp}"))
        assert text.endswith("123"), text
        assert len(text.split(".")[1]) == exp + 2, text


@pytest.mark.parametrize(
    ("value", "text"),
    [("0.999999", "$1.00"), ("0.00999999", "$0.0100"), ("0.0000999999", "$0.000100"),
     ("0.00000999999", "$0.0000100"), ("-0.999999", "-$1.00"), ("999.999", "$1,000.00")],
)  # fmt: skip
def test_rounding_up_across_a_band_prints_the_band_it_lands_in(value: str, text: str) -> None:
    """0.999999 rounds to 1: it prints as a dollar amount ($1.00), not as '$1.0000'."""
    assert usd(Decimal(value)) == text


def test_cli_texts_print_money_without_exponents(tmp_path: Path) -> None:
    """validate and the dry run, with a cap written as 1E+2 and nothing spent yet."""
    write_jsonl(tmp_path / "in.jsonl", texts(3))
    job = write_job(tmp_path, budget={"daily_usd": "1E+2"})
    validate = run_cli("validate", str(job))
    assert validate.returncode == 0, validate.stderr
    assert "budget $100.00/day" in validate.stdout
    dry = run_cli("run", str(job), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "today: $0.00 spent of $100.00, $100.00 left" in dry.stdout
    for out in (validate.stdout, dry.stdout):
        assert not EXPONENT.search(out), out
