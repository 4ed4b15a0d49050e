"""Deterministic generators for the probe corpus, training pools, preference pairs and future
tasks, plus loaders for users' own data in the same format (docs/INTERFACES.md)."""

from __future__ import annotations

from train.data.build import build_data
from train.data.config import POOL_DOMAINS, DataConfig
from train.data.future_tasks import FUTURE_TASKS
from train.data.loaders import load_records

__all__ = ["FUTURE_TASKS", "POOL_DOMAINS", "DataConfig", "build_data", "load_records"]
