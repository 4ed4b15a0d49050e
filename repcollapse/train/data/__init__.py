"""Deterministic generators for the probe corpus, training pools, preference pairs and future
tasks, plus loaders for users' own data in the same format (docs/INTERFACES.md).

The names below load on first use: the CLI builds its ``data build`` flags from
``repcollapse.train.data.config`` alone, and ``repcollapse store ...`` must not pay for (or depend on) the
generators and real-data readers.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "build_data": "repcollapse.train.data.build",
    "POOL_DOMAINS": "repcollapse.train.data.config",
    "DataConfig": "repcollapse.train.data.config",
    "FUTURE_TASKS": "repcollapse.train.data.future_tasks",
    "load_records": "repcollapse.train.data.loaders",
    "RecordMapping": "repcollapse.train.data.mapping",
    "map_records": "repcollapse.train.data.mapping",
    "parse_mapping": "repcollapse.train.data.mapping",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'repcollapse.train.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
