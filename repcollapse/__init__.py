"""repcollapse: measure representation collapse across sequential post-training.

The pipeline, one sub-package a step: ``repcollapse.train`` (sequential post-training and
behavioural evaluation) -> ``repcollapse.extract`` (each checkpoint once over the probe corpus,
into the store) -> ``repcollapse.store_schema`` (the store contract, shared by both sides) ->
``repcollapse.analyze`` (metrics, statistics, figures and tables from the store alone).
``repcollapse.cli`` is the ``repcollapse`` command.

For notebooks (docs/notebook.md): ``open_store``, ``sel_checkpoint``, ``load_tables``,
``stage_table`` and ``run_metrics``, from ``repcollapse.api``. They load on first use, so that
``import repcollapse.store_schema`` stays as light as the store contract itself.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = [
    "__version__",
    "open_store",
    "sel_checkpoint",
    "load_tables",
    "stage_table",
    "run_metrics",
]

_API = ("open_store", "sel_checkpoint", "load_tables", "stage_table", "run_metrics")


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module("repcollapse.api"), name)
    raise AttributeError(f"module 'repcollapse' has no attribute {name!r}")
