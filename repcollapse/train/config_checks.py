"""Validation helpers of the config dataclasses: every error names the field and the value."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the field and the value."""


def fail(field_name: str, value: Any, expected: str) -> None:
    raise ConfigError(f"config field '{field_name}': expected {expected}, found {value!r}")


def check(cond: bool, field_name: str, value: Any, expected: str) -> None:
    if not cond:
        fail(field_name, value, expected)


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)
