"""Exploration-noise schedules: a constant or ``linear(init,final,duration)`` in agent steps."""

from __future__ import annotations

import re
from collections.abc import Callable

_LINEAR = re.compile(r"linear\(\s*([^,]+),\s*([^,]+),\s*([^)]+)\)")


def parse_schedule(text: str) -> Callable[[int], float]:
    text = str(text).strip()
    try:
        value = float(text)
        return lambda step: value
    except ValueError:
        pass
    match = _LINEAR.fullmatch(text)
    if not match:
        raise ValueError("expected a number or linear(init,final,agent_steps)")
    init, final, duration = (float(x) for x in match.groups())
    if duration <= 0:
        raise ValueError("duration must be > 0")

    def linear(step: int) -> float:
        mix = min(max(step / duration, 0.0), 1.0)
        return (1.0 - mix) * init + mix * final

    return linear
