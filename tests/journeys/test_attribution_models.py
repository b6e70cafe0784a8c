"""Each model's credits on a small journey, computed by hand."""

from __future__ import annotations

import math

import pytest

from journey_builder.attribution import MODELS, Touch, weights

DAY = 86400.0
# Paid Search (day 0), Direct (day 7), Email (day 10), Direct (day 14); conversion on day 14
JOURNEY = [Touch(0 * DAY, "Paid Search"), Touch(7 * DAY, "Direct"), Touch(10 * DAY, "Email"), Touch(14 * DAY, "Direct")]
CONVERSION = 14 * DAY


def test_first_and_last_touch() -> None:
    assert weights("first_touch", JOURNEY, CONVERSION) == [1.0, 0.0, 0.0, 0.0]
    assert weights("last_touch", JOURNEY, CONVERSION) == [0.0, 0.0, 0.0, 1.0]


def test_last_non_direct_skips_direct_visits() -> None:
    assert weights("last_non_direct", JOURNEY, CONVERSION) == [0.0, 0.0, 1.0, 0.0]
    all_direct = [Touch(0, "Direct"), Touch(DAY, "Direct")]
    assert weights("last_non_direct", all_direct, DAY) == [0.0, 1.0]


def test_linear() -> None:
    assert weights("linear", JOURNEY, CONVERSION) == [0.25] * 4


def test_time_decay_halves_every_half_life() -> None:
    w = weights("time_decay", JOURNEY, CONVERSION, half_life_days=7)
    raw = [0.25, 0.5, 2 ** (-4 / 7), 1.0]  # 14, 7, 4 and 0 days before the conversion
    assert w == pytest.approx([r / sum(raw) for r in raw])
    assert w[1] == pytest.approx(2 * w[0])


def test_position_based_40_20_40() -> None:
    assert weights("position_based", JOURNEY, CONVERSION) == pytest.approx([0.4, 0.1, 0.1, 0.4])
    assert weights("position_based", JOURNEY[:2], CONVERSION) == [0.5, 0.5]
    assert weights("position_based", JOURNEY[:1], CONVERSION) == [1.0]


@pytest.mark.parametrize("model", MODELS)
def test_credits_sum_to_one(model: str) -> None:
    for n in range(1, 6):
        w = weights(model, JOURNEY[:n] if n <= 4 else JOURNEY + [Touch(14 * DAY, "Referral")], CONVERSION)  # type: ignore[arg-type]
        assert math.isclose(sum(w), 1.0)


def test_unknown_model_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown attribution model"):
        weights("shapley", JOURNEY, CONVERSION)  # type: ignore[arg-type]
