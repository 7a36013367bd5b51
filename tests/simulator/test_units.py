"""The simulator's units (pips, hundredths) agree with ``schemas.units``, the one exact parser."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.wire import format_price, format_size
from simulator.book import MICROS_PER_PIP, price_str, size_str, to_hundredths, to_pips


@given(st.integers(min_value=0, max_value=10_000))
def test_price_strings_parse_back_to_their_pips(pips: int) -> None:
    assert to_pips(price_str(pips)) == pips


@given(st.integers(min_value=-(10**9), max_value=10**9))
def test_size_strings_parse_back_to_their_hundredths(hundredths: int) -> None:
    assert to_hundredths(size_str(hundredths)) == hundredths


@given(st.integers(min_value=0, max_value=10**8))
def test_encoders_are_schemas_formatters(n: int) -> None:
    assert price_str(n) == format_price(n * MICROS_PER_PIP)
    assert size_str(n) == format_size(n) and size_str(-n) == format_size(-n)


def test_cents_and_exact_strings() -> None:
    assert to_pips(45) == 4_500 and to_pips("0.0450") == 450 and to_pips("0.54") == 5_400
    assert to_hundredths(3) == 300 and to_hundredths("-2.5") == -250


@pytest.mark.parametrize("price", ["0.00455", 0.45])
def test_what_the_grid_cannot_hold_exactly_is_refused(price: object) -> None:
    with pytest.raises(ValueError):
        to_pips(price)  # type: ignore[arg-type]  # a float on purpose
