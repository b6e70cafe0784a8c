"""Attribution models: how one conversion's credit is split over the touchpoints before it.

Each model returns one weight per touchpoint (in time order) and the weights sum to 1, so the
credits of a conversion always add up to exactly one conversion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Model = Literal["first_touch", "last_touch", "last_non_direct", "linear", "time_decay", "position_based"]
MODELS: tuple[Model, ...] = ("first_touch", "last_touch", "last_non_direct", "linear", "time_decay", "position_based")


@dataclass(frozen=True, slots=True)
class Touch:
    at_s: float  # epoch seconds
    channel: str
    source: str = ""
    medium: str = ""
    campaign: str = ""


def weights(model: Model, touches: Sequence[Touch], conversion_at_s: float, half_life_days: float = 7.0) -> list[float]:
    """Credit per touch (same order as ``touches``, which must be in time order)."""
    n = len(touches)
    if n == 0:
        return []
    if model == "first_touch":
        return [1.0] + [0.0] * (n - 1)
    if model == "last_touch":
        return [0.0] * (n - 1) + [1.0]
    if model == "last_non_direct":
        for i in range(n - 1, -1, -1):
            if touches[i].channel not in ("Direct", ""):
                return [1.0 if j == i else 0.0 for j in range(n)]
        return [0.0] * (n - 1) + [1.0]  # all direct: the last one
    if model == "linear":
        return [1.0 / n] * n
    if model == "time_decay":
        half_life_s = half_life_days * 86400.0
        raw = [2.0 ** (-(max(0.0, conversion_at_s - t.at_s)) / half_life_s) for t in touches]
        total = sum(raw)
        return [w / total for w in raw]
    if model == "position_based":  # 40 % first, 40 % last, 20 % shared by the middle
        if n == 1:
            return [1.0]
        if n == 2:
            return [0.5, 0.5]
        middle = 0.2 / (n - 2)
        return [0.4] + [middle] * (n - 2) + [0.4]
    raise ValueError(f"unknown attribution model {model!r}; use one of {', '.join(MODELS)}")
