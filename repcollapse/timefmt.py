"""Durations for console lines and written accounts (`repcollapse demo`, `repcollapse study`)."""

from __future__ import annotations


def fmt_duration(seconds: float) -> str:
    """``42s``, ``9m57s``, ``1h02m``."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"
