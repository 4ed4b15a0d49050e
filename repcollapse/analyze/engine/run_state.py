"""What one ``run_metrics`` run's steps share (``RunState``) and what it reports
(``RunSummary``): the runner builds them, the moment stage (``engine.moment_stage``) and the
function and LoRA stages read and fill them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repcollapse.analyze.engine.cache import MetricCache
from repcollapse.analyze.engine.progress import Progress
from repcollapse.analyze.engine.tokens import TokenPlan
from repcollapse.analyze.options import Options
from repcollapse.store_schema.reader import BlockReader


@dataclass
class RunSummary:
    out_dir: Path
    tables: dict[str, Path] = field(default_factory=dict)
    passes: int = 0
    blocks_read: int = 0
    computed: list[tuple[str, str, int]] = field(default_factory=list)
    """(checkpoint, metric, layer) keys computed in this run (not served by the cache)."""
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class RunState:
    """What one run's steps share."""

    ds: Any
    plan: TokenPlan
    ckpts: list[str]
    layers: list[int]
    options: Options
    cache: MetricCache
    recompute: bool
    xp_name: str
    reader: BlockReader
    raw_index: dict[str, int]
    """Checkpoint name -> position in the store's checkpoint dim (complete or not)."""
    summary: RunSummary
    say: Callable[[str], None]
    twins: dict[str, str]
    """Checkpoint -> the checkpoint its data were copied from (repcollapse.analyze.engine.twins): not computed."""
    progress: Progress = field(default_factory=lambda: Progress(None))
    batch_lines: bool = True
    """One log line per batch of passes (when no bar shows the progress)."""

    def missing(self, c: str, m: Any, layer: int) -> bool:
        if c in self.twins:
            return False
        key = (m.row_name, m.version, self.options.key(m.params), layer)
        return self.recompute or key not in self.cache.done(c)
