"""Durations as people write them: 90s, 10m, 1h, 1h30m, 2.5m, or plain seconds."""

from __future__ import annotations

import math
import re

from rabench.errors import RabenchError

_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smh])")


def parse_duration(text: str) -> float:
    """Seconds in `text`; raises RabenchError for anything that is not a positive duration."""
    s = text.strip().lower()
    try:
        seconds = float(s)
    except ValueError:
        parts = _PART.findall(s)
        if not parts or "".join(n + u for n, u in parts) != s:
            raise RabenchError(f"cannot read duration {text!r}; write e.g. 90s, 10m, 1h or 1h30m") from None
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise RabenchError(f"duration {text!r} must be a positive, finite number of seconds (e.g. 90s, 10m)")
    return seconds


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")
